"""Timing one grade-study run stage by stage, and checking two runs compute the same thing.

Shared by ``scripts/bench_study.py`` and the tests that hold fast settings to the defaults.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from grading.outputs import replace_folder
from grading.pipeline import StudyGrading, grade_loaded, load_study
from grading.reports.study_report import build_report, write_study_outputs
from stages.configs import StageConfigs
from stages.detector import box_iou
from stages.inference import InferenceSettings


def timed_run(study_dir: Path, models: dict, configs: StageConfigs, settings: InferenceSettings,
              bundle: Path, device: str | torch.device = "cpu", decode_workers: int = 2, report_workers: int = 2,
              min_box_score: float = 0.5) -> tuple[StudyGrading, dict[str, float]]:
    """grade-study's whole path for one study (scan, decode, models, report written to a scratch
    folder) with seconds per stage and in all."""
    start = time.perf_counter()
    localizer_slices = configs.locator.slices if "locator" in models else 0  # as grade-study reads it
    loaded = load_study(study_dir, decode_workers=decode_workers, preprocessing=configs.preprocessing,
                        localizer_slices=localizer_slices)
    if loaded is None:
        raise ValueError(f"{study_dir}: no gradable axial T2 series")
    result = grade_loaded(loaded, models, configs, device, settings, min_box_score)
    report_start = time.perf_counter()
    report = build_report(result, bundle, {})
    with tempfile.TemporaryDirectory() as scratch:
        replace_folder(Path(scratch) / "out",
                       lambda folder: write_study_outputs(result, report, folder, workers=report_workers))
    timings = dict(result.timings)
    timings["report_s"] = time.perf_counter() - report_start
    timings["total_s"] = time.perf_counter() - start
    return result, timings


def grading_differences(a: StudyGrading, b: StudyGrading) -> dict[str, float | int]:
    """How far two gradings of the same study are apart: boxes, calls and areas."""
    pairs = list(zip(a.slices, b.slices))
    both_boxed = [(x, y) for x, y in pairs if x["box_x0"] is not None and y["box_x0"] is not None]

    def box(row):
        return row["box_x0"], row["box_y0"], row["box_x1"], row["box_y1"]

    ious = [box_iou(box(x), box(y)) for x, y in both_boxed]
    corner_px = [max(abs(u - v) for u, v in zip(box(x), box(y))) for x, y in both_boxed]
    areas = [abs(x["dsca_mm2"] - y["dsca_mm2"]) for x, y in pairs
             if x["dsca_mm2"] is not None and y["dsca_mm2"] is not None]
    return {
        "slices": len(pairs),
        "canal_found_differs": sum((x["box_x0"] is None) != (y["box_x0"] is None) for x, y in pairs),
        "min_box_iou": float(min(ious)) if ious else 1.0,
        "max_box_corner_px": float(max(corner_px)) if corner_px else 0.0,
        "level_differs": sum(x["level"] != y["level"] for x, y in pairs),
        "grade_differs": sum(x["grade"] != y["grade"] for x, y in pairs),
        "max_dsca_mm2": float(max(areas)) if areas else 0.0,
        "max_grade_probability": float(max((abs(x[f"p_{g}"] - y[f"p_{g}"]) for x, y in pairs for g in "ABCD"
                                            if x[f"p_{g}"] is not None and y[f"p_{g}"] is not None), default=0.0)),
    }


def matmul_peak_gflops(sizes: tuple[int, ...] = (1024, 2048), repeats: int = 7) -> float:
    """The best float32 ``torch.matmul`` rate over a few square sizes, GFLOP/s: the limit the
    pipeline's achieved rate is set against."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.matmul(a, b)
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            torch.matmul(a, b)
            seconds.append(time.perf_counter() - start)
        best = max(best, 2 * n**3 / float(np.median(seconds)) / 1e9)
    return best
