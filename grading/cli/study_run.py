"""grade-study's grading run (the model-loading half of the command)."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from tqdm import tqdm

from grading.cli.common import EXIT_NO_SERIES, EXIT_OK, EXIT_USAGE, CommandError
from grading.deidentify import study_pseudonym
from grading.outputs import replace_folder, safe_name
from grading.pipeline import MIN_BOX_SCORE, LoadedSeries, grade_loaded, load_study
from grading.reports.study_report import build_report, write_study_outputs
from stages.bundle import BundleError, load_bundle
from stages.inference import InferenceSettings, prepare_models
from stages.preprocessing import Preprocessing


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise CommandError("--device cuda: no CUDA device is available", EXIT_USAGE)
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def output_folder(args: argparse.Namespace, study: Path, used: set[str], pseudonym: str) -> Path:
    name = pseudonym if args.deidentify else safe_name(study.resolve().name)
    while name in used:
        name += "_"
    used.add(name)
    if args.output is None:
        return Path("grading-out") / name
    return Path(args.output) / name if len(args.studies) > 1 else Path(args.output)


def inference_settings(args: argparse.Namespace) -> InferenceSettings:
    return InferenceSettings(bf16=args.bf16, compile=args.compile)


def _load(study: Path, args: argparse.Namespace, preprocessing: Preprocessing,
          localizer_slices: int) -> LoadedSeries | str:
    """One study scanned and decoded, or the one-line reason it cannot be graded."""
    if not study.is_dir():
        return f"{study}: not a folder"
    loaded = load_study(study, args.series, progress=not args.json and len(args.studies) == 1,
                        preprocessing=preprocessing, sagittal_uid=args.sagittal, localizer_slices=localizer_slices)
    if loaded is None:
        return f"{study}: no gradable axial T2 series"
    if not loaded.images:
        first = loaded.pixels.skipped[0]
        return f"{study}: no slice of the selected series could be decoded ({first.path.name}: {first.reason})"
    return loaded


def prefetched(studies: list[Path], args: argparse.Namespace, preprocessing: Preprocessing,
               localizer_slices: int = 0) -> Iterator[tuple[Path, LoadedSeries | str]]:
    """Studies in order, each read and decoded in a background thread while the one before it is
    graded: reading is I/O and decoders that release the GIL, grading is torch's threads."""
    with ThreadPoolExecutor(1) as reader:
        pending = reader.submit(_load, studies[0], args, preprocessing, localizer_slices) if studies else None
        for i, study in enumerate(studies):
            loaded = pending.result()
            pending = (reader.submit(_load, studies[i + 1], args, preprocessing, localizer_slices)
                       if i + 1 < len(studies) else None)
            yield study, loaded


def grade_studies(args: argparse.Namespace, bundle: Path) -> int:
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        models, configs, manifest = load_bundle(bundle, stages=None, device=device)
    except BundleError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    missing = {"detector", "level", "grade", "segmenter"} - set(models)
    if missing:
        raise CommandError(f"{bundle}: the bundle lacks the {', '.join(sorted(missing))} stage(s) grade-study needs",
                           EXIT_USAGE)
    settings = inference_settings(args)
    models = prepare_models(models, settings)
    used: set[str] = set()
    graded = 0
    studies = [Path(s) for s in args.studies]
    localizer_slices = configs.locator.slices if "locator" in models else 0
    for study, loaded in tqdm(prefetched(studies, args, configs.preprocessing, localizer_slices), total=len(studies),
                              desc="studies", unit="study",
                              disable=None if len(studies) > 1 else True):
        if isinstance(loaded, str):
            print(f"grade-study: error: {loaded}", file=sys.stderr)
            continue
        result = grade_loaded(loaded, models, configs, device, settings, track=not args.slice_by_slice,
                              min_box_score=MIN_BOX_SCORE if args.box_threshold is None else args.box_threshold)
        report = build_report(result, bundle, manifest.get("provenance", {}), deidentify=args.deidentify)
        out = output_folder(args, study, used, study_pseudonym(result.headers[0].study_uid))
        replace_folder(out, lambda folder: write_study_outputs(result, report, folder))
        graded += 1
        for failure in report.get("output_failures", []):
            print(f"grade-study: warning: {study}: {failure['output']} not written ({failure['reason']})",
                  file=sys.stderr)
        if args.json:
            print(json.dumps(report))
        else:
            worst = [f"{lv['level']} {lv['worst_grade']}" for lv in report["levels"] if lv["worst_grade"]]
            with_canal = sum(row["level"] != "no canal" for row in result.slices)
            print(f"{study}: {len(result.slices)} slices, {with_canal} with a canal; "
                  f"worst grade per level: {', '.join(worst) or 'none'}")
            print(f"  report: {out / 'report.html'}")
    return EXIT_OK if graded else EXIT_NO_SERIES
