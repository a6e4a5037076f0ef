"""Long fuzz run of the study reader: thousands of mutated slices, each read as grade-study reads it.

    uv run python scripts/fuzz_reader.py --cases 5000 --seed 1

Mutations (tests/dicom_mutations.py): truncation, bit flips, absurd element lengths, wrong VRs,
huge Rows/Columns/frames, deflate bombs, transfer syntaxes the data set is not in, short pixel
data. Every case must end as 'graded' or a one-line skip reason; the run reports outcomes per
mutation, every escaped exception with its seed, the slowest case and the peak RSS.
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from dicom_mutations import MUTATIONS, encode, read_mutated, valid_slice  # noqa: E402


def outcome_kind(reason: str) -> str:
    return reason.split(" (")[0].split(":")[0][:60]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=5000)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    valid = encode(valid_slice())
    names = sorted(MUTATIONS)
    outcomes: dict[str, Counter] = defaultdict(Counter)
    failures, slowest = [], (0.0, "")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "slice.dcm"
        for case in range(args.cases):
            kind = names[case % len(names)]
            seed = args.seed * 1_000_003 + case
            path.write_bytes(MUTATIONS[kind](valid, np.random.default_rng(seed)))
            case_start = time.perf_counter()
            try:
                outcomes[kind][outcome_kind(read_mutated(path))] += 1
            except Exception:
                failures.append((kind, seed, traceback.format_exc(limit=3)))
            seconds = time.perf_counter() - case_start
            slowest = max(slowest, (seconds, f"{kind} seed {seed}"))
    print(f"{args.cases} cases in {time.perf_counter() - start:.0f} s; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; "
          f"slowest case {slowest[0]:.2f} s ({slowest[1]})")
    for kind in names:
        print(f"{kind}: " + "; ".join(f"{n} x {what}" for what, n in outcomes[kind].most_common()))
    print(f"{len(failures)} escaped exceptions")
    for kind, seed, trace in failures[:10]:
        print(f"--- {kind} seed {seed}\n{trace}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
