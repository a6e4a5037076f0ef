"""How the detector's proposal limits trade time against agreement and accuracy.

    uv run python scripts/bench_detection_limits.py --patients 6

For phantom patients not seen in training, runs the bundle's detector with torchvision's limits
(1000 proposals per level before NMS, 1000 after, 100 detections) and with smaller ones, and
prints per setting: detector seconds, the share of slices whose box moved (IoU < 0.99 against
the torchvision box), slices where a canal was found by one and not the other, and accuracy
against the phantom truth (IoU >= 0.5).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from grading.models_location import find_model_bundle
from grading.phantom.cohort import CohortConfig, generate_patient
from grading.pipeline import load_study
from stages.bundle import load_bundle
from stages.detector import box_iou
from stages.inference import InferenceSettings, predict_slices, prepare_models

LIMITS = ((1000, 1000, 100), (200, 100, 1), (200, 50, 1), (200, 20, 1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", help="model bundle (default: $GRADING_MODELS, then grade-demo's)")
    p.add_argument("--patients", type=int, default=6)
    p.add_argument("--seed", type=int, default=7, help="phantom seed (grade-demo trains on seed 0)")
    args = p.parse_args()
    bundle = find_model_bundle(args.models)
    if bundle is None:
        raise SystemExit("no trained bundle: run grade-demo once or pass --models")
    models, configs, _ = load_bundle(bundle, stages=["detector"])
    runs = {limits: prepare_models(models, InferenceSettings(rpn_pre_nms_top_n=limits[0], rpn_post_nms_top_n=limits[1],
                                                             detections_per_img=limits[2])) for limits in LIMITS}
    seconds = dict.fromkeys(LIMITS, 0.0)
    boxes: dict[tuple, list] = {limits: [] for limits in LIMITS}
    truth = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(100, 100 + args.patients):
            rows, _ = generate_patient(Path(tmp), index, args.seed, CohortConfig(series=("ax_t2",)))
            truth_of = {r["sop_uid"]: (r["box_x0"], r["box_y0"], r["box_x1"], r["box_y1"])
                        for r in rows if r["rater"] == "truth"}
            loaded = load_study(Path(tmp) / "dicom" / rows[0]["study_id"])
            spacings = loaded.spacings
            truth += [truth_of[h.sop_uid] for h in loaded.pixels.headers]
            for limits, prepared in runs.items():
                start = time.perf_counter()
                found = predict_slices(prepared, configs, loaded.images, spacings)
                seconds[limits] += time.perf_counter() - start
                boxes[limits] += [f.box for f in found]
    reference = boxes[LIMITS[0]]
    print(f"{len(truth)} slices of {args.patients} phantom patients (seed {args.seed}); bundle {bundle}")
    print("| pre-NMS / post-NMS / detections | detector s | boxes moved (IoU < 0.99) | canal found differs "
          "| IoU >= 0.5 with the truth |")
    print("|---|---:|---:|---:|---:|")
    for limits in LIMITS:
        both = [(a, b) for a, b in zip(reference, boxes[limits]) if a is not None and b is not None]
        moved = np.mean([box_iou(a, b) < 0.99 for a, b in both]) if both else 0.0
        differs = sum((a is None) != (b is None) for a, b in zip(reference, boxes[limits]))
        accurate = np.mean([b is not None and box_iou(b, t) >= 0.5 for b, t in zip(boxes[limits], truth)])
        print(f"| {' / '.join(map(str, limits))} | {seconds[limits]:.1f} | {moved:.1%} | {differs} | {accurate:.3f} |")


if __name__ == "__main__":
    main()
