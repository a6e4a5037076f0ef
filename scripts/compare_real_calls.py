"""Several bundles' grade calls on the same real slices, as one picture.

    uv run python scripts/compare_real_calls.py RUN [RUN ...] --names N1,N2,... \\
        --sets TUM01_water,TUM02_water -o docs/real/grade_calls.png

Each RUN is a `check_real.py` output folder (it keeps each set's slice table, SET_slices.csv).
One row per run, one column per slice in instance order, coloured by the grade called there (no
canal, or a cord slice, is grey): where bundles trained alike disagree on a healthy volunteer, the
disagreement is the training's, not the scan's. For looking only, like every real image here.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from stages.vocabulary import GRADES  # noqa: E402

COLOURS = ("#d9d9d9", "#1a9850", "#fee08b", "#fc8d59", "#d73027")  # not graded, A, B, C, D


def grade_matrix(tables: list[pd.DataFrame]) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """(runs x slices) codes, -1 not graded and 0-3 for A-D, over the slices of the first table
    (by study and instance number); a slice another run has no row for counts as not graded."""
    keys = [(str(s), int(i)) for s, i in tables[0][["study", "instance_number"]].itertuples(index=False)]
    keys = sorted(set(keys), key=lambda k: (k[0], k[1]))
    codes = np.full((len(tables), len(keys)), -1, int)
    for r, table in enumerate(tables):
        rows = table[["study", "instance_number", "grade"]].itertuples(index=False)
        calls = {(str(s), int(i)): g for s, i, g in rows}
        for c, key in enumerate(keys):
            grade = calls.get(key, "")
            codes[r, c] = GRADES.index(grade) if grade in GRADES else -1
    return codes, keys


def draw(runs: list[Path], names: list[str], sets: list[str], output: Path) -> None:
    fig, axes = plt.subplots(len(sets), 1, figsize=(12, 0.3 * len(runs) * len(sets) + 1.2 * len(sets)), squeeze=False)
    for ax, name in zip(axes[:, 0], sets):
        tables = [pd.read_csv(run / f"{name}_slices.csv", keep_default_na=False) for run in runs]
        codes, keys = grade_matrix(tables)
        ax.imshow(codes + 1, cmap=ListedColormap(COLOURS), vmin=0, vmax=4, aspect="auto", interpolation="nearest")
        counts = [int(np.isin(row, (2, 3)).sum()) for row in codes]
        ax.set_yticks(range(len(runs)), [f"{n}  ({k} C/D)" for n, k in zip(names, counts)], fontsize=8)
        ticks = [c for c, (_, number) in enumerate(keys) if number % 5 == 0 or c == 0]
        ax.set_xticks(ticks, [f"#{keys[c][1]}" for c in ticks], fontsize=7)
        ax.set_title(f"{name}: grade called per slice (grey: no canal or cord)", fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLOURS[1:]]
    fig.legend(handles, GRADES, loc="upper right", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(output, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="check_real.py output folders")
    p.add_argument("--names", help="comma-separated row names (default: the folders' names)")
    p.add_argument("--sets", default="TUM01_water,TUM02_water", help="comma-separated real sets")
    p.add_argument("-o", "--output", type=Path, default=Path("grade_calls.png"))
    args = p.parse_args(argv)
    names = args.names.split(",") if args.names else [run.name for run in args.runs]
    if len(names) != len(args.runs):
        p.error(f"--names gives {len(names)} names for {len(args.runs)} runs")
    draw(args.runs, names, args.sets.split(","), args.output)
    print(f"-> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
