"""grade-study's outputs for one study: CSV tables, report.json, overlays and an HTML report."""
from __future__ import annotations

import html
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from grading.deidentify import study_pseudonym
from grading.pipeline import StudyGrading
from grading.reports.dicom_objects import write_dicom_objects
from grading.reports.localizer import write_localizer
from grading.reports.overlays import write_overlay
from stages.vocabulary import BOX_CONTINUITY, BOX_DROPPED

SLICE_COLUMNS = ("instance_number", "sop_uid", "position_mm", "level_name", "box_x0", "box_y0", "box_x1", "box_y1",
                 "detector_score", "box_choice", "level", "level_probability", "grade", "grade_probability", "p_A",
                 "p_B", "p_C", "p_D", "dsca_mm2", "ap_diameter_mm", "ml_diameter_mm", "grade_area_check")


def overlay_name(index: int, row: dict) -> str:
    number = row["instance_number"] if isinstance(row["instance_number"], int) else index + 1
    return f"overlays/slice_{index + 1:03d}_instance_{number}.png"


def build_report(result: StudyGrading, bundle: Path, bundle_provenance: dict, deidentify: bool = False) -> dict:
    """report.json's content. ``deidentify``: the study is named by a pseudonym and the paths of
    skipped files (folder names often carry patient names) are withheld."""
    series = result.series
    return {
        "study": study_pseudonym(result.headers[0].study_uid) if deidentify else result.study_dir.name,
        "deidentified": deidentify,
        # Where the images were read, for grade-label --review (withheld: folder names carry names).
        "source": None if deidentify else {"study_dir": str(result.study_dir.resolve())},
        "series": {"series_uid": series.uid, "description": series.description, "orientation": series.orientation,
                   "weighting": series.weighting, "n_slices": len(result.headers),
                   "pixel_spacing_mm": list(series.pixel_spacing)},
        "canal_boxes": result.box_rule,
        "level_assignment": result.level_method,
        "level_source": result.assignment.source if result.assignment else "axial",
        "levels_sure": bool(result.assignment and result.assignment.sure),
        "level_flags": list(result.assignment.flags) if result.assignment else [],
        "lumbar_vertebrae": _lumbar_vertebrae(result.assignment),
        "levels": result.levels,
        "slices": result.slices,
        "skipped": [{"path": "(withheld)" if deidentify else str(f.path), "reason": f.reason} for f in result.skipped],
        "models": {"bundle": str(bundle), "provenance": {k: bundle_provenance.get(k) for k in
                                                        ("rater", "profile", "seed", "fold")}},
        "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
        "note": "Research software: not for clinical decisions without a radiologist's review.",
    }


def _lumbar_vertebrae(assignment) -> dict:
    """How many lumbar vertebrae the sagittal series showed (None: five assumed, the junction
    not clear in view) and the probability of each count; empty without a sagittal reading."""
    if assignment is None or not assignment.lumbar_probabilities:
        return {"count": None, "probabilities": {}}
    return {"count": assignment.lumbar_count,
            "probabilities": {str(n): round(p, 4) for n, p in sorted(assignment.lumbar_probabilities.items())}}


def _caption(row: dict) -> list[str]:
    level = row["level"]
    text = [f"instance {row['instance_number']}  {row['level_name']}  position {row['position_mm']:.1f} mm"]
    if row["box_choice"] == BOX_CONTINUITY:
        text.append("canal box kept for continuity with the slices around it")
    if level == "rootlet":
        text.append(f"rootlet level ({row['level_probability']:.2f})  Schizas {row['grade']} ({row['grade_probability']:.2f})")
    else:
        prob = row["level_probability"]
        text.append(f"{level}" + (f" ({prob:.2f})" if prob is not None else ""))
    if row["dsca_mm2"] is not None:
        text.append(f"DSCA {row['dsca_mm2']:.0f} mm²  AP {row['ap_diameter_mm']} mm  ML {row['ml_diameter_mm']} mm")
    if row.get("grade_area_check"):
        text.append(f"check: {row['grade_area_check']}")
    return text


def write_study_outputs(result: StudyGrading, report: dict, folder: Path, workers: int = 2) -> dict[str, Path]:
    """Write everything into ``folder`` (a fresh temporary folder that the caller renames)."""
    written = {}
    pd.DataFrame(result.slices, columns=list(SLICE_COLUMNS)).to_csv(folder / "slices.csv", index=False)
    pd.DataFrame(result.levels).to_csv(folder / "levels.csv", index=False)
    (folder / "overlays").mkdir(exist_ok=True)
    overlays = []
    # PNG encoding releases the GIL: overlays are drawn in threads while the SR and SEG are built.
    with ThreadPoolExecutor(workers) as pool:
        pending = []
        for i, (row, image, mask) in enumerate(zip(result.slices, result.images, result.sac_masks)):
            if row["level"] == "no canal":
                continue
            box = None if row["box_x0"] is None else (row["box_x0"], row["box_y0"], row["box_x1"], row["box_y1"])
            name = overlay_name(i, row)
            pending.append(pool.submit(write_overlay, folder / name, image, box, mask, _caption(row), row["grade"]))
            overlays.append((name, row))
        localizer = None
        if result.localization is not None and result.localizer_image is not None:
            localizer = pool.submit(write_localizer, folder / "localizer.png", result.localizer_image,
                                    result.localization, result.headers, [row["grade"] for row in result.slices])
        dicom, failures = write_dicom_objects(result, folder, deidentify=report.get("deidentified", False))
        written.update(dicom)
        for job in pending + ([localizer] if localizer else []):
            job.result()  # re-raises a failed overlay
        if localizer:
            written["localizer"] = localizer.result()
    report["output_failures"] = failures
    (folder / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    (folder / "report.html").write_text(render_html(report, overlays, "localizer.png" if "localizer" in written else None),
                                        encoding="utf-8")
    for name in ("slices.csv", "levels.csv", "report.json", "report.html"):
        written[name] = folder / name
    written["overlays"] = folder / "overlays"
    return written


def _table(rows: list[list], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('' if c is None else str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


#: How the report's summary line names each box_choice that departs from the slice-by-slice rule.
BOX_CHOICE_WORDS = {BOX_CONTINUITY: "kept for continuity on instance",
                    BOX_DROPPED: "a confident box dropped, the slices around it disagreeing, on instance"}


def _box_choices(report: dict) -> str:
    """Which instances kept a box for continuity and which lost a confident one (html-escaped)."""
    parts = []
    for choice, words in BOX_CHOICE_WORDS.items():
        numbers = [str(row["instance_number"]) for row in report["slices"] if row.get("box_choice") == choice]
        if numbers:
            parts.append(f"{words}{'s' if len(numbers) > 1 else ''} {', '.join(numbers)}")
    return html.escape("".join(f"; {part}" for part in parts))


def render_html(report: dict, overlays: list[tuple[str, dict]], localizer: str | None = None) -> str:
    series = report["series"]
    levels = [[lv["level"], lv["n_slices"], lv["n_rootlet"], lv["n_cord"], lv["n_no_canal"], lv["worst_grade"],
               lv["worst_grade_probability"], lv["worst_grade_instance"], lv["min_dsca_mm2"], lv["min_dsca_instance"]]
              for lv in report["levels"]]
    figures = "".join(
        f"<figure><img src='{html.escape(name)}' loading='lazy' alt='{html.escape(' | '.join(_caption(row)))}'>"
        "</figure>" for name, row in overlays)
    skipped = "".join(f"<li>{html.escape(s['path'])}: {html.escape(s['reason'])}</li>" for s in report["skipped"])
    flags = "".join(f"<p class='flag'>&#9888; {html.escape(f)}</p>" for f in report.get("level_flags", []))
    picture = (f"<figure><img src='{html.escape(localizer)}' alt='sagittal localizer with the graded slices'>"
               "<figcaption>Each graded axial slice across the mid-sagittal slice, in its grade's colour (A green, "
               "B yellow, C orange, D red; blue where not graded); level names as the locator found them."
               "</figcaption></figure>") if localizer else ""
    failed = "".join(f"<li>{html.escape(f['output'])} not written: {html.escape(f['reason'])}</li>"
                     for f in report.get("output_failures", []))
    failed = f"<h2>Outputs not written</h2><ul>{failed}</ul>" if failed else ""
    boxes = f"<p>Canal boxes: {html.escape(report.get('canal_boxes', 'slice by slice'))}{_box_choices(report)}.</p>"
    checks = [f"instance {row['instance_number']}: {row['grade_area_check']}" for row in report["slices"]
              if row.get("grade_area_check")]
    if checks:
        boxes += ("<p class='flag'>&#9888; Grade and sac area disagree (look at these slices): "
                  f"{html.escape('; '.join(checks))}.</p>")
    style = ("body{font-family:sans-serif;margin:1.5em;background:#111;color:#ddd}table{border-collapse:collapse}"
             "td,th{border:1px solid #555;padding:3px 8px}th{background:#223}figure{display:inline-block;margin:6px}"
             "figcaption{font-size:12px;max-width:650px}a{color:#9cf}.flag{color:#fc6;font-weight:bold}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Stenosis grading: {html.escape(report['study'])}"
            f"</title><style>{style}</style></head><body><h1>Lumbar stenosis grading: {html.escape(report['study'])}</h1>"
            f"<p>Series {html.escape(series['description'])} ({series['n_slices']} slices, {series['weighting']} "
            f"{series['orientation']}). Levels: {html.escape(report['level_assignment'])}.</p>{boxes}{flags}{picture}"
            f"<h2>Per level</h2>{_table(levels, ['level', 'slices', 'rootlet', 'cord', 'no canal', 'worst grade', 'probability', 'on instance', 'smallest DSCA (mm²)', 'on instance'])}"
            f"<h2>Slices</h2><p>Canal box in the grade's colour (A green, B yellow, C orange, D red; blue where not graded), dural sac outline in red.</p>"
            f"{figures}<h2>Skipped files</h2><ul>{skipped or '<li>none</li>'}</ul>{failed}"
            f"<p><em>{html.escape(report['note'])}</em></p></body></html>")
