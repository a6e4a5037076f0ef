"""grade-study's grading run (the model-loading half of the command)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from grading.cli.common import EXIT_NO_SERIES, EXIT_OK, EXIT_USAGE, CommandError
from grading.outputs import replace_folder, safe_name
from grading.pipeline import grade_study
from grading.reports.study_report import build_report, write_study_outputs
from stages.bundle import BundleError, load_bundle


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise CommandError("--device cuda: no CUDA device is available", EXIT_USAGE)
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def output_folder(args: argparse.Namespace, study: Path, used: set[str]) -> Path:
    name = safe_name(study.resolve().name)
    while name in used:
        name += "_"
    used.add(name)
    if args.output is None:
        return Path("grading-out") / name
    return Path(args.output) / name if len(args.studies) > 1 else Path(args.output)


def grade_studies(args: argparse.Namespace, bundle: Path) -> int:
    device = pick_device(args.device)
    try:
        models, configs, manifest = load_bundle(bundle, stages=None, device=device)
    except BundleError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    missing = {"detector", "level", "grade", "segmenter"} - set(models)
    if missing:
        raise CommandError(f"{bundle}: the bundle lacks the {', '.join(sorted(missing))} stage(s) grade-study needs",
                           EXIT_USAGE)
    used: set[str] = set()
    graded = 0
    for study in tqdm(args.studies, desc="studies", unit="study", disable=None if len(args.studies) > 1 else True):
        study = Path(study)
        if not study.is_dir():
            print(f"grade-study: error: {study}: not a folder", file=sys.stderr)
            continue
        result = grade_study(study, models, configs, series_uid=args.series, device=device,
                             progress=not args.json)
        if result is None:
            print(f"grade-study: error: {study}: no gradable axial T2 series", file=sys.stderr)
            continue
        report = build_report(result, bundle, manifest.get("provenance", {}))
        out = output_folder(args, study, used)
        replace_folder(out, lambda folder: write_study_outputs(result, report, folder))
        graded += 1
        if args.json:
            print(json.dumps(report))
        else:
            worst = [f"{lv['level']} {lv['worst_grade']}" for lv in report["levels"] if lv["worst_grade"]]
            with_canal = sum(row["level"] != "no canal" for row in result.slices)
            print(f"{study}: {len(result.slices)} slices, {with_canal} with a canal; "
                  f"worst grade per level: {', '.join(worst) or 'none'}")
            print(f"  report: {out / 'report.html'}")
    return EXIT_OK if graded else EXIT_NO_SERIES
