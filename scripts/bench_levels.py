"""How often grade-study names an axial slice's level right, from the study's sagittal series.

    uv run python scripts/bench_levels.py --models BUNDLE --patients 20 --seed 77

Generates held-out phantom studies (seed unseen in training; about one patient in ten has four
or six lumbar vertebrae), grades both axial series of each (contiguous, and angled to the discs)
with the bundle's locator, and compares each slice's level name with the phantom's truth (the
disc or body the slice crosses in front of the canal). Counts slices inside the lumbar spine
(L1 to the lumbosacral disc), all of them and those whose named point lies at least 1 mm from a
disc-body boundary (closer, the slice's own slab holds both), and says how often the number of
lumbar vertebrae was counted right; transitional studies must be named right or flagged.

``--locator-only`` names the slices without grading them: the locator runs once per study and
each axial series is named by the function grade-study names it with (``assign_levels``), so the
names are the same and a locator is compared with another in a fraction of the time.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import tempfile
from pathlib import Path

import pandas as pd

from grading import pipeline
from grading.cli.study import main as grade_study
from grading.dicom import scan_study
from grading.levels import assign_levels
from grading.phantom.cohort import CohortConfig, generate_cohort
from stages.bundle import load_bundle

#: A 3-4 mm slice centred this close to an endplate holds disc and body in front of the canal: it is
#: counted, and also reported apart.
BOUNDARY_MM = 1.0


def wrong_name_kind(name: str, truth: str) -> str:
    """How a slice's level name is wrong: '' (right), 'boundary' (the disc named for a body beside
    it, or a body for a disc it bounds: where the slice's slab holds both), 'unnamed' (no level name,
    e.g. outside the sagittal view) or 'shift' (any other name: a level off, which a surgeon would
    act on)."""
    if name == truth:
        return ""
    if not re.match(r"[TLS]\d", name):
        return "unnamed"
    disc, body = (name, truth) if "/" in name else (truth, name)
    return "boundary" if "/" in disc and "/" not in body and body in disc.split("/") else "shift"


def graded_names(study: Path, models: Path, out: Path) -> list[dict]:
    """Each axial series of a study graded by grade-study: one row per slice with its level name
    and how the study's levels were named."""
    rows = []
    for series in (s for s in scan_study(study, verify_pixels=False).series if s.orientation == "axial"):
        folder = out / study.name / series.uid[-8:]
        with contextlib.redirect_stdout(io.StringIO()):  # one study's report at a time is noise here
            status = grade_study([str(study), "--models", str(models), "--series", series.uid, "-o", str(folder),
                                  "--json"])
        if status != 0:
            continue
        report = json.loads((folder / "report.json").read_text())
        kind = "angled" if "angled" in str(series.slices[0].path) else "contiguous"
        for row in pd.read_csv(folder / "slices.csv", keep_default_na=False).itertuples():
            rows.append({"sop_uid": row.sop_uid, "series": kind, "name": row.level_name,
                         "source": report["level_source"], "flagged": bool(report["level_flags"]),
                         "counted": report["lumbar_vertebrae"]["count"],
                         "p_counted": max(report["lumbar_vertebrae"]["probabilities"].values(), default=None)})
    return rows


def located_names(study: Path, models: dict, configs) -> list[dict]:
    """The same rows without grading: the locator once per study, each axial series named by
    ``assign_levels`` as grade-study names it."""
    axials = [s for s in scan_study(study, verify_pixels=False).series if s.orientation == "axial"]
    loaded = pipeline.load_study(study, axials[0].uid, localizer_slices=configs.locator.slices,
                        preprocessing=configs.preprocessing) if axials else None
    localization = None
    if loaded is not None and loaded.localizer is not None and loaded.localizer.headers:
        localization = pipeline.localize(models["locator"], configs, loaded.localizer.headers, loaded.localizer_images)
    rows = []
    for series in axials:
        assignment = assign_levels(series.slices, series.positions_mm(), localization)
        kind = "angled" if "angled" in str(series.slices[0].path) else "contiguous"
        for header, name in zip(series.slices, assignment.names):
            rows.append({"sop_uid": header.sop_uid, "series": kind, "name": name, "source": assignment.source,
                         "flagged": bool(assignment.flags), "counted": assignment.lumbar_count,
                         "p_counted": max(assignment.lumbar_probabilities.values(), default=None)})
    return rows


def level_rows(root: Path, models: Path, locator_only: bool = False) -> pd.DataFrame:
    """One row per axial slice of the cohort under ``root``: its name, the truth and the study's count."""
    labels = pd.read_csv(root / "cohort" / "labels.csv", keep_default_na=False)
    truth = labels[labels.rater == "truth"].set_index("sop_uid")
    summaries = {p["patient_id"]: p for p in json.loads((root / "cohort" / "cohort.json").read_text())["patients"]}
    if locator_only:
        loaded_models, configs, _ = load_bundle(models, stages=["locator"])
    rows = []
    for study in sorted((root / "cohort" / "dicom").iterdir()):
        named = located_names(study, loaded_models, configs) if locator_only else \
            graded_names(study, models, root / "graded")
        for row in named:
            uid = row["sop_uid"]
            rows.append({"patient": study.name, **row, "truth": truth.loc[uid, "spinal_level"],
                         "boundary_mm": float(truth.loc[uid, "level_boundary_mm"] or "nan"),
                         "lumbar": summaries[study.name]["lumbar_vertebrae"]})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", required=True, type=Path)
    p.add_argument("--patients", type=int, default=20)
    p.add_argument("--seed", type=int, default=77)
    p.add_argument("--keep", type=Path, help="keep the cohort and outputs here")
    p.add_argument("--locator-only", action="store_true", help="name the slices without grading them (same names)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        if not (root / "cohort" / "labels.csv").is_file():
            generate_cohort(root / "cohort", CohortConfig(args.patients, args.seed))
        table = level_rows(root, args.models, args.locator_only)
    lumbar = table[table.truth.str.match(r"^L\d") | table.truth.str.endswith("/S1")]
    lumbar = lumbar.assign(right=lumbar.name == lumbar.truth)
    print(f"{len(table)} axial slices of {table.patient.nunique()} studies; {len(lumbar)} inside the lumbar spine; "
          f"named from the sagittal series: {(table.source == 'sagittal').mean():.1%} of slices")
    for kind, group in lumbar.groupby("series"):
        clear = group[group.boundary_mm >= BOUNDARY_MM]
        print(f"  {kind:10s}: {group.right.mean():.1%} right ({group.right.sum()} of {len(group)}); "
              f"{clear.right.mean():.1%} ({clear.right.sum()} of {len(clear)}) of those at least {BOUNDARY_MM:g} mm "
              "from a disc-body boundary")
    typical = lumbar[lumbar.lumbar == 5]
    clear = typical[typical.boundary_mm >= BOUNDARY_MM]
    print(f"  five lumbar vertebrae: {typical.right.mean():.1%} right ({len(typical)} slices); "
          f"{clear.right.mean():.1%} ({len(clear)}) of those at least {BOUNDARY_MM:g} mm from a disc-body boundary")
    per_study = lumbar.groupby("patient").agg(lumbar=("lumbar", "first"), counted=("counted", "first"),
                                              p=("p_counted", "first"), right=("right", "mean"))
    miscounted = per_study[per_study.counted.notna() & (per_study.counted != per_study.lumbar)]
    print(f"  lumbar vertebrae counted right in {(per_study.counted == per_study.lumbar).sum()} of {len(per_study)} "
          f"studies, five assumed (junction not clear) in {per_study.counted.isna().sum()}, miscounted in "
          f"{len(miscounted)}" + "".join(f"; {p}: {r.lumbar} counted {r.counted:g}" for p, r in miscounted.iterrows()))
    for patient, row in per_study[per_study.lumbar != 5].iterrows():
        counted = "not counted (five assumed, flagged)" if pd.isna(row.counted) else f"counted {row.counted:g} " \
            f"(P {row.p:.2f}{', flagged' if row.counted != 5 else ''})"
        print(f"  {patient} ({int(row.lumbar)} lumbar): {counted}, {row.right:.0%} of its slices right")
    wrong = lumbar[~lumbar.right]
    kinds = pd.Series([wrong_name_kind(n, t) for n, t in zip(wrong.name, wrong.truth)], index=wrong.index)
    for label, group in (("five lumbar vertebrae", wrong[wrong.lumbar == 5]),
                         ("four or six", wrong[wrong.lumbar != 5])):
        counts = kinds[group.index].value_counts()
        print(f"  wrong names, {label}: {counts.get('boundary', 0)} at a disc-body boundary (the disc for a body "
              f"beside it or the reverse), {counts.get('shift', 0)} a level off, {counts.get('unnamed', 0)} unnamed")
    if len(wrong):
        print("wrong names (name, truth: count, median mm from a disc-body boundary):")
        print(wrong.groupby(["name", "truth"]).boundary_mm.agg(["size", "median"]).sort_values("size", ascending=False)
              .head(12).round(2).to_string())


if __name__ == "__main__":
    main()
