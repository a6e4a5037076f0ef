"""grade-train: train the stages on one rater's labels with k-fold cross-validation."""
from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from grading.cli.common import EXIT_USAGE, CommandError, run_command
from grading.dicom import StudyScan, scan_study
from grading.labels import (
    TRAINING_COLUMNS,
    LabelTableError,
    read_label_table,
    write_label_table,
)
from grading.pipeline import MIN_BOX_SCORE
from grading.splits import DEFAULT_NAME, ensure_splits
from grading.training_data import load_column_data, load_training_data
from stages.configs import STAGES
from stages.cross_validation import (
    CVRequest,
    merge_fold_predictions,
    run_cross_validation,
)
from stages.distributed import workers
from stages.folds import SplitsError
from stages.losses import LOSSES
from stages.profiles import PROFILES
from stages.segmenters import ARCHITECTURES
from stages.train_loop import seed_everything


def classifier_name(rater: str) -> str:
    """C1 for A1, C2 for A2 (the paper's naming); C-<rater> otherwise."""
    match = re.search(r"(\d+)$", rater)
    return f"C{match.group(1)}" if match else f"C-{rater}"


def oof_table(predictions: pd.DataFrame, labels: pd.DataFrame, rater: str, name: str) -> pd.DataFrame:
    """Predictions in label-table form: the rater's case metadata, the classifier's labels."""
    meta = labels.loc[labels.rater == rater, ["case_id", "study_id", "series_uid", "sop_uid"]]
    table = meta.merge(predictions, on="case_id", how="inner")
    table.insert(table.columns.get_loc("sop_uid") + 1, "rater", name)
    table["mask"] = ""
    return table


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="grade-train", description=__doc__)
    p.add_argument("--labels", required=True, help="label table (SPEC format)")
    p.add_argument("--images", required=True, help="folder holding the DICOM files the table refers to")
    p.add_argument("--rater", required=True, help="whose labels to learn, e.g. A1")
    p.add_argument("--stages", help=f"comma-separated subset of {','.join(STAGES)} (default: every stage the "
                                    "tables can train: the locator only where a sagittal column table is found)")
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--column-labels", help="sagittal column maps for the locator stage (default: column.csv beside "
                                           "the label table, as grade-phantom writes it)")
    p.add_argument("--splits", help="the cohort's folds (default: splits_final.json beside the label table, planned "
                                    "from all raters' labels on first use and shared by every rater's run)")
    p.add_argument("--only-folds", help="run just these folds, e.g. 0,1 (one job per fold; merge with --merge)")
    p.add_argument("--no-final", action="store_true", help="skip the model trained on all patients")
    p.add_argument("--final-only", action="store_true", help="train only the model on all patients (no folds)")
    p.add_argument("--merge", action="store_true", help="only merge existing fold predictions into oof_predictions.csv")
    p.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    p.add_argument("--segmenter", choices=ARCHITECTURES, help="segmenter architecture (default: the profile's)")
    p.add_argument("--segmenter-loss", choices=LOSSES, help="segmenter loss (default: the profile's)")
    p.add_argument("--backbone-weights", help="local ImageNet ResNet50 weights for the detector (never downloaded)")
    p.add_argument("--as", dest="name", help="rater name for the predictions (default C<n> for A<n>)")
    p.add_argument("--epochs", type=int, help="epochs for every stage (default: the profile's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the last epoch checkpoints in -o")
    p.add_argument("-o", "--output", required=True, help="run folder")
    return p


def _main(argv: list[str] | None, scan: StudyScan | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.output)
    name = args.name or classifier_name(args.rater)
    column_path = Path(args.column_labels or Path(args.labels).parent / "column.csv")
    if args.stages is None:
        stages = tuple(s for s in STAGES if s != "locator" or column_path.is_file())
    else:
        stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    if set(stages) - set(STAGES):
        raise CommandError(f"--stages: unknown stage(s) {', '.join(sorted(set(stages) - set(STAGES)))}", EXIT_USAGE)
    try:
        labels = read_label_table(args.labels, required=TRAINING_COLUMNS)
    except LabelTableError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    if args.rater not in set(labels.rater):
        raise CommandError(f"rater {args.rater!r} not in {args.labels} (it has: {', '.join(sorted(set(labels.rater)))})",
                           EXIT_USAGE)
    if not args.merge:
        seed_everything(args.seed)
        start = time.perf_counter()
        profile = PROFILES[args.profile](args.seed)
        if scan is None:  # once, for the slices and the columns
            scan = scan_study(args.images, progress=True, verify_pixels=False)
        data = load_training_data(labels, args.images, args.rater, Path(args.labels).parent,
                                  preprocessing=profile.configs.preprocessing, scan=scan)
        if data.missing:  # the slices still train, without what makes randomised renders and sac masks
            print(f"grade-train: {len(data.missing)} mask or label-map files named in {args.labels} were not used "
                  f"(paths are read relative to {Path(args.labels).parent}); those slices train without them. "
                  f"First: {data.missing[0]}", file=sys.stderr)
        column_records = []
        if "locator" in stages:
            if not column_path.is_file():
                raise CommandError(f"{column_path}: no sagittal column table for the locator stage "
                                   "(grade-phantom writes column.csv; or pass --column-labels)", EXIT_USAGE)
            column = pd.read_csv(column_path, dtype={"study_id": str}, keep_default_na=False)
            column_records = load_column_data(column, args.images, column_path.parent,
                                              preprocessing=profile.configs.preprocessing, scan=scan).records
        if args.segmenter or args.segmenter_loss:
            configs = profile.configs
            segmenter = replace(configs.segmenter, architecture=args.segmenter or configs.segmenter.architecture)
            profile = replace(profile, configs=replace(configs, segmenter=segmenter,
                                                       segmenter_loss=args.segmenter_loss or configs.segmenter_loss))
        if args.epochs:
            profile = replace(profile, settings={stage: replace(s, epochs=args.epochs)
                                                 for stage, s in profile.settings.items()})
        folds = tuple(int(f) for f in args.only_folds.split(",")) if args.only_folds else None
        if args.final_only:
            folds = ()
        try:
            plan = ensure_splits(labels, args.splits or Path(args.labels).parent / DEFAULT_NAME, args.folds, args.seed)
        except SplitsError as exc:
            raise CommandError(str(exc), EXIT_USAGE) from None
        request = CVRequest(stages=stages, profile=profile, plan=plan, column_records=column_records,
                            n_folds=args.folds, folds=folds, final=not args.no_final,
                            seed=args.seed, backbone_weights=args.backbone_weights, resume=args.resume,
                            provenance={"rater": args.rater, "profile": args.profile, "seed": args.seed,
                                        "labels": str(Path(args.labels).resolve()),
                                        "n_slices": len(data.records)})
        try:
            summary = run_cross_validation(data.records, request, out)
        except ValueError as exc:
            raise CommandError(str(exc), EXIT_USAGE) from None
        if not workers().is_main:  # a torchrun worker: rank 0 reports and merges
            return 0
        print(f"trained {', '.join(stages)} on {len(data.records)} slices in {time.perf_counter() - start:.0f} s")
        for fold, info in summary["folds"].items():
            scores = ", ".join(f"{s} {m['best_val_score']:.3f}" for s, m in info["stages"].items())
            print(f"  fold {fold}: best validation {scores} ({info['seconds']:.0f} s)")
        for model, info in [*((f"fold {k}", v) for k, v in summary["folds"].items()), ("final", summary.get("final"))]:
            warning = unsure_detector_warning(model, (info or {}).get("stages", {}).get("detector", {}))
            if warning:
                print(warning)
    if any(out.glob("fold_*/predictions.csv")):
        oof = oof_table(merge_fold_predictions(out), labels, args.rater, name)
        write_label_table(oof, out / "oof_predictions.csv")
        print(f"out-of-fold predictions ({name}): {out / 'oof_predictions.csv'}")
    if (out / "final" / "bundle" / "manifest.json").is_file():
        print(f"final model bundle: {out / 'final' / 'bundle'}")
    return 0


def unsure_detector_warning(name: str, metrics: dict) -> str:
    """A warning when a trained detector scores its own right validation boxes under
    grade-study's threshold, which then finds no canal on most slices ('' otherwise)."""
    median = metrics.get("val_right_box_median_score")  # absent: no right box, or no detector
    if median is None or median >= MIN_BOX_SCORE:
        return ""
    suggested = metrics["val_suggested_box_threshold"]
    return (f"warning: the {name} detector scores its right validation boxes {median:.2f} (median), under "
            f"grade-study's {MIN_BOX_SCORE:g}: it will report 'no canal' on most slices. Retrain it with another "
            f"--seed, or grade with --box-threshold {suggested:g} (what its validation suggests)")


def main(argv: list[str] | None = None, scan: StudyScan | None = None) -> int:
    """grade-train; ``scan``: the --images folder's header scan, when the caller already made it
    (grade-demo trains three times on one cohort)."""
    try:
        return run_command("grade-train", lambda: _main(argv, scan))
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
