"""grade-study: grade lumbar spinal stenosis on the axial T2 series of each study folder."""
from __future__ import annotations

import argparse
import json
import sys

from grading.cli.common import (
    EXIT_NO_SERIES,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    run_command,
)
from grading.dicom import scan_study
from grading.models_location import find_model_bundle

NO_BUNDLE = (
    "no model bundle: pass --models DIR, set GRADING_MODELS, or run `grade-demo` once "
    "to train the demo bundle into the user cache"
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="grade-study", description=__doc__)
    p.add_argument("studies", nargs="+", metavar="STUDY_DIR", help="folder(s) holding one study's DICOM files")
    p.add_argument("--models", help="model bundle folder (default: $GRADING_MODELS, then the grade-demo bundle)")
    p.add_argument("-o", "--output", help="output folder (default ./grading-out/<study>)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--series", metavar="UID", help="grade this SeriesInstanceUID instead of the automatic choice")
    p.add_argument("--sagittal", metavar="UID", help="name levels on this sagittal SeriesInstanceUID instead of the "
                                                     "automatic choice (the sagittal T2 of the graded series' frame)")
    p.add_argument("--dry-run", action="store_true", help="list series and the one that would be graded; load no model")
    p.add_argument("--json", action="store_true", help="print JSON to stdout (report.json when grading)")
    p.add_argument("--deidentify", action="store_true",
                   help="keep patient identifiers out of every output (PS3.15 basic profile, UIDs retained)")
    p.add_argument("--slice-by-slice", action="store_true",
                   help="take each slice's best canal box on its own score and its rootlet/cord call on its own "
                        "(default: with the slices around it, grading/canal_track.py, and one conus)")
    p.add_argument("--box-threshold", type=float, metavar="SCORE",
                   help="score a canal box needs on its own, 0-1 (default 0.5; grade-train suggests one when its "
                        "detector is unsure of its own right boxes)")
    speed = p.add_argument_group("speed (docs/PERFORMANCE.md)")
    speed.add_argument("--threads", type=int, help="torch threads (default: one per physical core)")
    speed.add_argument("--bf16", action="store_true",
                       help="bfloat16 autocast: ~1.5x faster models on CPUs with AVX512-BF16/AMX or on GPUs; "
                            "results move slightly")
    speed.add_argument("--compile", action="store_true",
                       help="torch.compile the models: pays only over many studies (~30 s to compile)")
    return p


def _dry_run(args: argparse.Namespace) -> int:
    exit_code = EXIT_OK
    for study in args.studies:
        try:
            scan = scan_study(study, series_uid=args.series, sagittal_uid=args.sagittal,
                              progress=not args.json and sys.stderr.isatty())
        except NotADirectoryError as exc:
            raise CommandError(str(exc), EXIT_USAGE) from None
        if scan.selected is None:
            exit_code = EXIT_NO_SERIES
        if args.json:
            print(json.dumps(scan.to_json()))
        else:
            _print_scan(scan)
    return exit_code


def _print_scan(scan) -> None:
    print(f"{scan.root}:")
    for s in scan.series:
        mark = {"graded": "*", "localizer": "L"}.get(scan.role(s), " ")
        print(f" {mark} {s.uid}  {s.orientation:8s} {s.weighting:7s} {len(s.slices):3d} slices  {s.description!r}")
    for f in scan.skipped:
        print(f"   skipped {f.path}: {f.reason}")
    if scan.selected is None:
        print("   no gradable axial T2 series")
    print("   (* graded, L sagittal localizer naming its levels)")


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.box_threshold is not None and not 0.0 <= args.box_threshold <= 1.0:
        raise CommandError(f"--box-threshold {args.box_threshold:g}: a detector score lies between 0 and 1", EXIT_USAGE)
    if args.dry_run:
        return _dry_run(args)
    bundle = find_model_bundle(args.models)
    if bundle is None:
        raise CommandError(NO_BUNDLE, EXIT_USAGE)
    from grading.cli.study_run import (
        grade_studies,  # imported late: dry runs never load torch models
    )

    return grade_studies(args, bundle)


def main(argv: list[str] | None = None) -> int:
    return run_command("grade-study", lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
