"""grade-demo: the whole workflow on a phantom cohort, cached in the user cache folder.

Phantom cohort -> (training, grading: once the stages exist) -> agreement study; prints where each
output is. Reruns reuse what is already there.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from grading.cli.agreement import run_agreement
from grading.cli.common import run_command
from grading.dicom import scan_study
from grading.labels import read_label_table
from grading.models_location import user_cache_dir
from grading.phantom.cohort import CohortConfig, generate_cohort
from grading.phantom.montage import make_montage
from grading.reports.atomic import write_json_atomic


def ensure_cohort(folder: Path, config: CohortConfig) -> Path:
    """The cohort's label table, generating the cohort unless an identical one is already there."""
    stamp = folder / "demo-cohort.json"
    wanted = {"patients": config.patients, "seed": config.seed}
    labels = folder / "labels.csv"
    if labels.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return labels
    labels = generate_cohort(folder, config)
    make_montage(folder, folder / "montage.png")
    write_json_atomic(stamp, wanted)
    return labels


def _main(argv: list[str] | None) -> int:
    p = argparse.ArgumentParser(prog="grade-demo", description=__doc__)
    p.add_argument("--dir", type=Path, default=user_cache_dir() / "demo", help="working folder (default: user cache)")
    p.add_argument("--patients", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    start = time.perf_counter()
    cohort_dir = args.dir / "cohort"
    labels = ensure_cohort(cohort_dir, CohortConfig(patients=args.patients, seed=args.seed))
    held_out = sorted((cohort_dir / "dicom").iterdir())[-1]
    scan = scan_study(held_out)
    written = run_agreement([read_label_table(labels)], [("A1", "A2"), ("truth", "A1"), ("truth", "A2")],
                            args.dir / "agreement")
    print(f"\ngrade-demo finished in {time.perf_counter() - start:.0f} s")
    print(f"  phantom cohort:   {cohort_dir}  ({args.patients} patients, labels {labels.name})")
    print(f"  phantom montage:  {cohort_dir / 'montage.png'}")
    print(f"  held-out study:   {held_out}  ({len(scan.selected.slices)} slices in the selected series)")
    print(f"  agreement report: {written['report.html']}")
    print(f"  agreement.json:   {written['agreement.json']}")
    print("  model training and grading are not part of this build yet: grade-study runs --dry-run only")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("grade-demo", lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
