"""The agreement study as Markdown and HTML: a Table-4 style summary first, then the details."""
from __future__ import annotations

import html
from pathlib import Path

TASK_NAMES = {"level": "Rootlet-cord classification", "grade": "Stenosis grading"}


def _pct(value) -> str:
    return "–" if value is None else f"{value * 100:.1f}"


def _p(value) -> str:
    if value is None:
        return "–"
    return "<0.01" if value < 0.01 else f"{value:.4f}"


def _num(value, digits=3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _table4(records: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Columns: each pair under each task; rows: F-score, accuracy, P (paired t-test)."""
    columns = [r for task in TASK_NAMES for r in records if r["task"] == task]  # grouped by task, as Table 4
    header = [""] + [f"{TASK_NAMES[r['task']]}: {r['rater_a']}-{r['rater_b']}" for r in columns]
    rows = [
        ["F-score (%)"] + [_pct(r["f1_macro"]) for r in columns],
        ["Accuracy (%)"] + [_pct(r["accuracy"]) for r in columns],
        ["P (paired t-test)"] + [_p(r["ttest_p"]) for r in columns],
        ["Cohen's kappa (95% CI)"] + [
            f"{_num(r['kappa'])} ({_num(r['kappa_ci95'][0])}–{_num(r['kappa_ci95'][1])})" for r in columns],
        ["n"] + [str(r["n"]) for r in columns],
        ["F-score, patient bootstrap 95% CI"] + [_interval(r, "f1_macro") for r in columns],
        ["Accuracy, patient bootstrap 95% CI"] + [_interval(r, "accuracy") for r in columns],
        ["Kappa, patient bootstrap 95% CI"] + [_interval(r, "kappa", percent=False) for r in columns],
        ["Accuracy counting misses as disagreements (%)"] + [_pct(r.get("accuracy_counting_misses")) for r in columns],
        ["Not scored (side: reason n)"] + [_excluded(r) for r in columns],
    ]
    return header, rows


def _interval(record: dict, metric: str, percent: bool = True) -> str:
    ci = (record.get("bootstrap_ci95") or {}).get(metric)
    if not ci:
        return "–"
    return f"{_pct(ci[0])}–{_pct(ci[1])}" if percent else f"{_num(ci[0])}–{_num(ci[1])}"


def _excluded(record: dict) -> str:
    parts = [f"{side}: " + ", ".join(f"{reason} {n}" for reason, n in reasons.items())
             for side, reasons in (record.get("excluded") or {}).items() if reasons]
    if record.get("misses"):
        parts.append(f"{record['misses']} missed by {record['rater_b']}'s detector")
    return "; ".join(parts) or "none"


def _detail_rows(record: dict) -> list[list[str]]:
    rows = [["class", "precision", "recall", "F1", f"support ({record['rater_a']})"]]
    for label, c in record["per_class"].items():
        rows.append([label, _num(c["precision"]), _num(c["recall"]), _num(c["f1"]), str(c["support"])])
    return rows


def _tests_line(record: dict) -> str:
    parts = [f"kappa {_num(record['kappa'])}"]
    if record["task"] == "grade":
        parts += [f"linear-weighted kappa {_num(record['kappa_linear'])}",
                  f"quadratic-weighted kappa {_num(record['kappa_quadratic'])}",
                  f"Stuart-Maxwell P {_p(record.get('stuart_maxwell_p'))}",
                  f"Bowker P {_p(record.get('bowker_p'))}"]
    else:
        parts += [f"McNemar P {_p(record.get('mcnemar_p'))}"]
    parts.append(f"paired t-test t = {_num(record['ttest_t'], 2)}, P {_p(record['ttest_p'])}")
    parts.append(f"not scored: {_excluded(record)}")
    return "; ".join(parts)


def _area_rows(records: list[dict]) -> list[list[str]]:
    rows = [["pair", "n", "MAE (mm²)", "Pearson r", "bias (mm²)", "95% limits of agreement (mm²)", "ICC(2,1)"]]
    for r in records:
        if r["task"] == "dsca":
            rows.append([f"{r['rater_a']}-{r['rater_b']}", str(r["n"]), _num(r["mae_mm2"], 1), _num(r["pearson_r"]),
                         f"{r['bias_mm2']:+.1f}", f"{r['loa_low_mm2']:.1f} to {r['loa_high_mm2']:.1f}",
                         _num(r["icc"])])
    return rows


def _fold_rows(comparisons: list[dict]) -> list[list[str]]:
    rows = [["task", "metric", "reference", "compared", "folds", "mean difference", "t", "P",
             "corrected t", "corrected P"]]
    for c in comparisons:
        rows.append([c["task"], c["metric"], c["reference"], c["compared"], str(c["n_folds"]),
                     _num(c["mean_difference"]), _num(c["ttest_t"], 2), _p(c["ttest_p"]),
                     _num(c.get("corrected_t"), 2), _p(c.get("corrected_p"))])
    return rows


def _md_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def build_sections(records: list[dict], comparisons: list[dict], images: dict[str, list[str]]):
    """(heading, paragraph, table rows, image paths) in reading order."""
    header, rows = _table4(records)
    sections = [("Summary (layout of Won et al. 2025, Table 4)",
                 "F-score is the unweighted mean of the per-class F1 (the paper's F-score). P is a paired "
                 "t-test on the label codes of the two raters. The first five rows are the paper's figures, on the "
                 "cases both sides scored (its intersection); the rows below them do not treat slices as "
                 "independent (intervals from resampling whole patients) and count the cases a classifier's "
                 "detector missed as disagreements. A level copied from the raters' labels is never scored.",
                 [header] + rows, [])]
    for r in records:
        if r["task"] in TASK_NAMES:
            key = f"{r['task']}_{r['rater_a']}_{r['rater_b']}"
            sections.append((f"{TASK_NAMES[r['task']]}: {r['rater_a']} vs {r['rater_b']}", _tests_line(r),
                             _detail_rows(r), images.get(key, [])))
    area = _area_rows(records)
    if len(area) > 1:
        dsca_images = [p for key, paths in images.items() if key.startswith("dsca_") for p in paths]
        sections.append(("Dural sac cross-sectional area", "Bias and limits of agreement are for rater_b − rater_a.",
                         area, dsca_images))
    if comparisons:
        sections.append(("Per-fold comparison", "Paired t-test across folds of each pair's agreement against the "
                         "first pair's (observer-observer against observer-classifier); the corrected test "
                         "(Nadeau and Bengio 2003) allows for folds sharing most of their training data.",
                         _fold_rows(comparisons), []))
    return sections


def render_markdown(sections) -> str:
    parts = ["# Agreement study", ""]
    for heading, text, rows, pictures in sections:
        parts += [f"## {heading}", "", text, "", _md_table(rows), ""]
        parts += [f"![{Path(p).stem}]({p})" for p in pictures] + [""]
    return "\n".join(parts)


def render_html(sections) -> str:
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:0.5em 0 1em}td,th{border:1px solid #bbb;padding:4px 8px;"
             "text-align:right}th{background:#eef}td:first-child,th:first-child{text-align:left}"
             "img{max-width:48%;margin:4px}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Agreement study</title>"
             f"<style>{style}</style></head><body><h1>Agreement study</h1>"]
    for heading, text, rows, pictures in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2><p>{html.escape(text)}</p>{_html_table(rows)}")
        parts += [f"<img src='{html.escape(p)}' alt='{html.escape(Path(p).stem)}'>" for p in pictures]
    parts.append("</body></html>")
    return "\n".join(parts)
