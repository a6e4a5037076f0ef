"""Time grade-study on a phantom series, stage by stage, against torchvision's default settings.

    uv run python scripts/bench_study.py                      # 40 slices of 384 x 384, 5 repeats
    uv run python scripts/bench_study.py --bf16 --compile     # also time the opt-in settings

Builds one phantom study, loads the bundle (--models, $GRADING_MODELS or grade-demo's; freshly
initialised quick-profile models when there is none, which times the same work but grades nothing
meaningful), runs the whole grade-study path (scan, decode, models, report) after a warm-up with
each setting in turn, interleaved so that machine noise hits both alike, and prints medians:
seconds per study, per slice and per stage; the ratio to the default-settings run; the models'
GFLOP/s against a torch.matmul peak measured in the same run; peak RSS of a separate process
grading a 60-slice 512 x 512 series; how far the fast results are from the default ones. On a
CUDA machine it adds slices/s on the GPU.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from grading.benchmark import grading_differences, matmul_peak_gflops, timed_run
from grading.models_location import find_model_bundle
from grading.phantom.cohort import CohortConfig, generate_patient
from grading.pipeline import load_study
from stages.bundle import load_bundle
from stages.inference import InferenceSettings, predict_slices, prepare_models
from stages.models import build_model
from stages.profiles import quick

STAGES = ("scan_s", "decode_s", "detector_s", "classifiers_s", "segmenter_s", "locator_s", "report_s", "total_s")
NO_LOCATOR = "fast, axial-only level names"  # the same run without the sagittal locator


def make_study(root: Path, slices: int, matrix: int, seed: int = 0) -> Path:
    """A study folder of one contiguous axial T2 TSE series (and a sagittal, as protocols have)."""
    config = CohortConfig(series=("ax_t2", "sag_t2"), axial_presets={"t2_tse": 1.0})
    generate_patient(root, 3, seed, config, matrix=matrix, n_slices=slices)
    return next((root / "dicom").iterdir())


def load_models(models_arg: str | None):
    bundle = find_model_bundle(models_arg)
    if bundle is not None:
        models, configs, _ = load_bundle(bundle, stages=None)
        return models, configs, bundle, 0.5
    print("no model bundle found: timing freshly initialised quick-profile models (run grade-demo for real ones)")
    torch.manual_seed(0)
    configs = quick().configs
    models = {stage: build_model(stage, configs) for stage in ("detector", "level", "grade", "segmenter")}
    return models, configs, Path("untrained"), 0.0  # every box passes, so every stage has work


def model_gflop(models, configs, study: Path, settings: InferenceSettings) -> float:
    """FLOPs of the models on the study's slices, counted by torch's FlopCounterMode."""
    loaded = load_study(study)
    with FlopCounterMode(display=False) as counter:
        predict_slices(models, configs, loaded.images, loaded.spacings, min_box_score=0.0, settings=settings)
    return counter.get_total_flops() / 1e9


def own_peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, since ru_maxrss carries the parent's peak across fork/exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_rss_child(models_arg, study: Path, threads: int, queue) -> None:
    torch.set_num_threads(threads)
    models, configs, bundle, min_score = load_models(models_arg)
    models = prepare_models(models, InferenceSettings())  # as grade-study does: the originals are dropped
    timed_run(study, models, configs, InferenceSettings(), bundle, min_box_score=min_score)
    queue.put(own_peak_rss_mb())


def peak_rss_mb(models_arg, slices: int, matrix: int, threads: int) -> tuple[float, float]:
    """Peak RSS of a fresh process that loads the models and grades one series, and of one that
    only imports the pipeline (torch alone is ~0.5 GB of it), in MB."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        study = make_study(Path(tmp), slices, matrix)
        child = context.Process(target=_peak_rss_child, args=(models_arg, study, threads, queue))
        child.start()
        child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"memory check process failed (exit {child.exitcode})")
    importer = context.Process(target=_imports_only, args=(queue,))
    importer.start()
    importer.join()
    return queue.get(), queue.get()


def _imports_only(queue) -> None:
    import grading.benchmark  # noqa: F401  (everything the graded run imports)

    queue.put(own_peak_rss_mb())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", help="model bundle (default: $GRADING_MODELS, then grade-demo's)")
    p.add_argument("--slices", type=int, default=40)
    p.add_argument("--matrix", type=int, default=384)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--bf16", action="store_true", help="also time bfloat16 autocast")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (compile time reported apart)")
    p.add_argument("--ablation", action="store_true", help="also time the fast settings with one change undone each")
    p.add_argument("--memory-slices", type=int, default=60)
    p.add_argument("--memory-matrix", type=int, default=512)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    models, configs, bundle, min_score = load_models(args.models)
    fast = InferenceSettings()
    runs = {"default settings": (InferenceSettings.torchvision_defaults(), 1, 1), "fast": (fast, 2, 2)}
    if args.bf16:
        runs["fast + bf16"] = (replace(fast, bf16=True), 2, 2)
    if args.compile:
        runs["fast + compile"] = (replace(fast, compile=True), 2, 2)
    if args.ablation:
        runs.update({
            "fast, torchvision limits": (replace(fast, rpn_pre_nms_top_n=1000, rpn_post_nms_top_n=1000,
                                                 detections_per_img=100), 2, 2),
            "fast, one slice at a time": (replace(fast, detector_batch=1, patch_batch=1), 2, 2),
            "fast, no channels-last": (replace(fast, channels_last=False), 2, 2),
            "fast, no inference mode": (replace(fast, inference_mode=False), 2, 2),
            "fast, serial decode and report": (fast, 1, 1),
        })
    if "locator" in models:
        runs[NO_LOCATOR] = (fast, 2, 2)
    prepared = {name: prepare_models(models, settings) for name, (settings, _, _) in runs.items()}
    if NO_LOCATOR in prepared:
        prepared[NO_LOCATOR] = {k: m for k, m in prepared[NO_LOCATOR].items() if k != "locator"}

    with tempfile.TemporaryDirectory() as tmp:
        study = make_study(Path(tmp), args.slices, args.matrix)
        peak = matmul_peak_gflops()
        times: dict[str, list[dict]] = {name: [] for name in runs}
        results = {}
        for repeat in range(args.repeats + 1):  # the first round is the warm-up (and compiles)
            for name, (settings, decode_workers, report_workers) in runs.items():
                result, t = timed_run(study, prepared[name], configs, settings, bundle, decode_workers=decode_workers,
                                      report_workers=report_workers, min_box_score=min_score)
                results[name] = result
                if repeat == 0:
                    if name == "fast + compile":
                        print(f"torch.compile warm-up run: {t['total_s']:.1f} s")
                    continue
                times[name].append(t)
        gflop = model_gflop(prepared["fast"], configs, study, fast)
        gpu = gpu_slices_per_s(models, configs, study, bundle, min_score) if torch.cuda.is_available() else None

    medians = {name: {k: float(np.median([t.get(k, 0.0) for t in ts])) for k in STAGES} for name, ts in times.items()}
    for m in medians.values():
        m["models_s"] = m["detector_s"] + m["classifiers_s"] + m["segmenter_s"]
    rss, imports_rss = peak_rss_mb(args.models, args.memory_slices, args.memory_matrix, args.threads)
    summary = {
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} torch threads, torch {torch.__version__}",
        "study": f"{args.slices} slices of {args.matrix} x {args.matrix}", "repeats": args.repeats,
        "bundle": str(bundle), "medians_s": medians,
        "speedup_vs_default": medians["default settings"]["total_s"] / medians["fast"]["total_s"],
        "models_gflop_per_study": gflop, "matmul_peak_gflops": peak,
        "models_gflops": gflop / medians["fast"]["models_s"],
        "pipeline_gflops": gflop / medians["fast"]["total_s"],
        "differences_from_default": {name: grading_differences(results["default settings"], results[name])
                                     for name in runs if name != "default settings"},
        "peak_rss_mb": {f"{args.memory_slices} slices of {args.memory_matrix}^2": rss, "imports only": imports_rss},
        "gpu_slices_per_s": gpu, "fast_settings": asdict(fast),
        "level_naming_overhead": (medians["fast"]["total_s"] / medians[NO_LOCATOR]["total_s"] - 1
                                  if NO_LOCATOR in medians else None),
    }
    print_table(summary, args.slices)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


def gpu_slices_per_s(models, configs, study: Path, bundle: Path, min_score: float, repeats: int = 5) -> dict:
    out = {}
    for name, settings in (("fast", InferenceSettings()), ("fast + bf16", InferenceSettings(bf16=True))):
        gpu_models = {k: m.to("cuda") for k, m in prepare_models(models, settings).items()}
        totals = []
        for _ in range(repeats + 1):
            result, t = timed_run(study, gpu_models, configs, settings, bundle, device="cuda", min_box_score=min_score)
            totals.append((t["total_s"], t["detector_s"] + t["classifiers_s"] + t["segmenter_s"]))
        total, model = np.median(totals[1:], axis=0)
        out[name] = {"slices_per_s_end_to_end": len(result.slices) / total, "slices_per_s_models": len(result.slices) / model}
    return out


def print_table(summary: dict, slices: int) -> None:
    print(f"\n{summary['study']}, median of {summary['repeats']} repeats after a warm-up; {summary['machine']}")
    columns = STAGES
    print("| run | " + " | ".join(c[:-2] for c in columns) + " | s per slice | x faster than default |")
    print("|---|" + "---:|" * (len(columns) + 2))
    default = summary["medians_s"]["default settings"]["total_s"]
    for name, m in summary["medians_s"].items():
        print(f"| {name} | " + " | ".join(f"{m[c]:.3f}" for c in columns)
              + f" | {m['total_s'] / slices:.3f} | {default / m['total_s']:.2f} |")
    print(f"\nfast vs default settings: {summary['speedup_vs_default']:.2f}x faster")
    if summary["level_naming_overhead"] is not None:
        print(f"naming levels from the sagittal series costs {summary['level_naming_overhead']:+.1%} of the "
              f"study's time (fast vs {NO_LOCATOR!r}, same run)")
    print(f"models: {summary['models_gflop_per_study']:.0f} GFLOP per study, {summary['models_gflops']:.0f} GFLOP/s "
          f"= {summary['models_gflops'] / summary['matmul_peak_gflops']:.0%} of the torch.matmul peak "
          f"({summary['matmul_peak_gflops']:.0f} GFLOP/s); whole pipeline {summary['pipeline_gflops']:.0f} GFLOP/s "
          f"= {summary['pipeline_gflops'] / summary['matmul_peak_gflops']:.0%}")
    for what, mb in summary["peak_rss_mb"].items():
        print(f"peak RSS, {what} (fresh process): {mb:.0f} MB")
    for name, diff in summary["differences_from_default"].items():
        print(f"{name} vs default settings: {json.dumps(diff)}")
    if summary["gpu_slices_per_s"]:
        print(f"GPU: {json.dumps(summary['gpu_slices_per_s'])}")


if __name__ == "__main__":
    main()
