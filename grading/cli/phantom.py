"""grade-phantom: write a synthetic axial T2 lumbar cohort as DICOM, with truth and two raters."""
from __future__ import annotations

import argparse
import sys
import time

from grading.cli.common import run_command
from grading.phantom.cohort import CohortConfig, generate_cohort
from grading.phantom.montage import make_montage


def _main(argv: list[str] | None) -> int:
    p = argparse.ArgumentParser(prog="grade-phantom", description=__doc__)
    p.add_argument("-o", "--output", required=True, help="folder to write the cohort into")
    p.add_argument("--patients", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=CohortConfig.workers, help="processes (default: up to 2)")
    args = p.parse_args(argv)
    if args.patients < 1:
        p.error("--patients must be at least 1")
    start = time.perf_counter()
    labels = generate_cohort(args.output, CohortConfig(args.patients, args.seed, max(1, args.workers)))
    print(f"{args.patients} patients in {time.perf_counter() - start:.1f} s")
    print(f"DICOM:  {labels.parent / 'dicom'}")
    print(f"labels: {labels}  (raters truth, A1, A2)")
    print(f"masks:  {labels.parent / 'masks'}")
    print(f"montage: {make_montage(labels.parent, labels.parent / 'montage.png')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("grade-phantom", lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
