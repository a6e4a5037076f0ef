"""grade-agreement: inter-observer versus observer-classifier agreement from label tables."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from eval.pairs import AgreementInputError, area_pairs, merge_tables, paired
from eval.study import agreement_study, fold_comparisons
from grading.cli.common import EXIT_USAGE, CommandError, run_command
from grading.labels import LabelTableError, read_label_table
from grading.reports.agreement_figures import (
    area_scatter,
    bland_altman,
    confusion_heatmap,
)
from grading.reports.agreement_report import (
    build_sections,
    render_html,
    render_markdown,
)
from stages.atomic import write_json_atomic, write_text_atomic


def _pair(text: str) -> tuple[str, str]:
    a, sep, b = text.partition(":")
    if not sep or not a or not b:
        raise argparse.ArgumentTypeError(f"{text!r}: expected RATER_A:RATER_B, e.g. A1:A2")
    return a, b


def run_agreement(tables: list[pd.DataFrame], pairs: list[tuple[str, str]], out: Path) -> dict[str, Path]:
    """Compute the study and write every output; returns what was written, by name."""
    table = merge_tables(tables)
    records = agreement_study(table, pairs)
    comparisons = fold_comparisons(records)
    written: dict[str, Path] = {}
    images: dict[str, list[str]] = {}
    for record in records:
        key = f"{record['task']}_{record['rater_a']}_{record['rater_b']}"
        if record["task"] in ("level", "grade"):
            labels = record["labels"]
            frame = pd.DataFrame(record["confusion"], index=[f"{record['rater_a']}:{x}" for x in labels],
                                 columns=[f"{record['rater_b']}:{x}" for x in labels])
            written[f"{key}.csv"] = write_text_atomic(out / f"confusion_{key}.csv", frame.to_csv())
            png = confusion_heatmap(record, out / f"confusion_{key}.png")
            images[key] = [png.name]
        else:
            areas = area_pairs(paired(table, record["rater_a"], record["rater_b"]))
            a, b = np.asarray(areas.dsca_mm2_a), np.asarray(areas.dsca_mm2_b)
            images[key] = [bland_altman(a, b, record, out / f"bland_altman_{key}.png").name,
                           area_scatter(a, b, record, out / f"scatter_{key}.png").name]
        written.update({name: out / name for name in images[key]})
    written["agreement.json"] = write_json_atomic(out / "agreement.json", records)
    if comparisons:
        written["fold_comparison.json"] = write_json_atomic(out / "fold_comparison.json", comparisons)
    sections = build_sections(records, comparisons, images)
    written["report.md"] = write_text_atomic(out / "report.md", render_markdown(sections))
    written["report.html"] = write_text_atomic(out / "report.html", render_html(sections))
    return written


def _main(argv: list[str] | None) -> int:
    p = argparse.ArgumentParser(prog="grade-agreement", description=__doc__)
    p.add_argument("tables", nargs="+", metavar="TABLE.csv", help="label tables (raters may come from different files)")
    p.add_argument("--pair", action="append", type=_pair, required=True, metavar="A:B",
                   help="raters to compare; repeat (the first pair is the reference in per-fold tests)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    args = p.parse_args(argv)
    try:
        tables = [read_label_table(path) for path in args.tables]
        written = run_agreement(tables, args.pair, Path(args.output))
    except (LabelTableError, AgreementInputError) as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    print(f"agreement.json: {written['agreement.json']}")
    print(f"report:         {written['report.html']}")
    print(f"figures:        {len([k for k in written if k.endswith('.png')])} PNG files in {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("grade-agreement", lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
