"""What choosing each slice's canal box with its neighbours (grading/canal_track.py) changes,
against the phantom truth, beside the slice-by-slice rule (the best box when it scores >= 0.5);
and what calling rootlet or cord with one conus along the series (stages.inference.one_conus)
changes on the slices so boxed.

    uv run python scripts/bench_canal_track.py --models BUNDLE --patients 12 --seed 78

For held-out phantom patients (grade-demo trains on seed 0), both axial series of each study (the
contiguous stack and the stacks angled to each disc) go through grade-study's loading and the
bundle's detector once; each rule then picks its boxes from the same candidates. Per slice: right
(IoU >= 0.5 with the true box), wrong (a box elsewhere), missed (no box where the sac is), false (a
box where the phantom has no sac). ``--bonus``, ``--penalty`` and ``--threshold`` add rows with
other weights and other scores a lone box needs. ``--contrast random`` re-renders every slice from
its label map with random contrast (stages.synth, seeded): slices unlike any preset the detector
trained on, where its scores fall as they do on a real scanner it has never seen; this is where a
threshold is chosen, never on real scans.
Rootlet/cord: the share of boxed slices whose truth is rootlet or cord that get the right call.
"""
from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from grading.canal_track import TrackConfig, choose, head_to_foot, place, with_neighbours
from grading.models_location import find_model_bundle
from grading.phantom.cohort import CohortConfig, generate_patient
from grading.pipeline import load_study
from stages.bundle import load_bundle
from stages.detector import box_iou, detect_candidates
from stages.inference import InferenceSettings, predict_slices, prepare_models, top_boxes
from stages.preprocessing import normalise_intensity
from stages.synth import SynthConfig, render_random


def _tally(chosen: list, truth: list) -> np.ndarray:
    """(right, wrong, missed, false) over slices."""
    out = np.zeros(4, int)
    for box, true in zip(chosen, truth):
        if true is None:
            out[3] += box is not None
        elif box is None:
            out[2] += 1
        else:
            out[0 if box_iou(box, true) >= 0.5 else 1] += 1
    return out


def _randomised(root: Path, label_maps: list[str], headers, generator: torch.Generator) -> list[np.ndarray]:
    """Each slice rendered anew from its label map (display frame) with random contrast."""
    out = []
    for path, header in zip(label_maps, headers):
        labels = header.display.apply(np.asarray(Image.open(root / path)))
        image = render_random(torch.from_numpy(labels[None].astype(np.int64)), SynthConfig(), generator)[0]
        out.append(normalise_intensity(image.numpy()))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", help="model bundle (default: $GRADING_MODELS, then grade-demo's)")
    p.add_argument("--patients", type=int, default=12)
    p.add_argument("--seed", type=int, default=78, help="phantom seed (grade-demo trains on seed 0)")
    p.add_argument("--detections", type=int, default=InferenceSettings().detections_per_img,
                   help="candidates the detector gives per slice (grade-study: %(default)s)")
    p.add_argument("--bonus", type=float, nargs="*", default=[], help="other continuity bonuses to compare")
    p.add_argument("--penalty", type=float, nargs="*", default=[], help="other contradiction penalties to compare")
    p.add_argument("--max-gap", type=float, nargs="*", default=[], help="other reaches (mm) to compare")
    p.add_argument("--threshold", type=float, nargs="*", default=[],
                   help="other scores a lone box needs, to compare (slice by slice and with neighbours)")
    p.add_argument("--contrast", choices=("preset", "random"), default="preset",
                   help="the slices as written, or re-rendered from their label maps with random contrast")
    args = p.parse_args()
    bundle = find_model_bundle(args.models)
    if bundle is None:
        raise SystemExit("no trained bundle: run grade-demo once or pass --models")
    models, configs, _ = load_bundle(bundle, stages=["detector", "level"])
    settings = InferenceSettings(detections_per_img=args.detections)
    models = prepare_models(models, settings)
    detector = models["detector"]
    levels = {"slice by slice": np.zeros(2, int), "one conus": np.zeros(2, int)}  # (right, boxed slices scored)
    base = TrackConfig()
    rules = {"best box >= 0.5, slice by slice": None, "with its neighbours": base}
    rules.update({f"with its neighbours, bonus {b:g}": replace(base, bonus=b) for b in args.bonus})
    rules.update({f"with its neighbours, penalty {q:g}": replace(base, penalty=q) for q in args.penalty})
    rules.update({f"with its neighbours, reach {g:g} mm": replace(base, max_gap_mm=g) for g in args.max_gap})
    for t in args.threshold:
        rules[f"best box >= {t:g}, slice by slice"] = t
        rules[f"with its neighbours, threshold {t:g}"] = replace(base, threshold=t)
    generator = torch.Generator().manual_seed(args.seed)
    tallies = {(rule, kind): np.zeros(4, int) for rule in rules for kind in ("ax_t2", "ax_t2_angled")}
    with tempfile.TemporaryDirectory() as tmp:
        for index in tqdm(range(1, args.patients + 1), desc="held-out phantom studies"):
            rows, _ = generate_patient(Path(tmp), index, args.seed, CohortConfig(series=("ax_t2", "ax_t2_angled")))
            truth_of = {r["sop_uid"]: None if r["box_x0"] == "" else tuple(float(r[k]) for k in
                                                                            ("box_x0", "box_y0", "box_x1", "box_y1"))
                        for r in rows if r["rater"] == "truth"}
            series_of = {r["series_uid"]: r["case_id"].split("-")[1] for r in rows}
            label_of = {r["sop_uid"]: r["label_map"] for r in rows}
            for uid, kind in series_of.items():
                loaded = load_study(Path(tmp) / "dicom" / rows[0]["study_id"], series_uid=uid)
                headers = loaded.pixels.headers
                images = loaded.images if args.contrast == "preset" else \
                    _randomised(Path(tmp), [label_of[h.sop_uid] for h in headers], headers, generator)
                candidates = detect_candidates(detector, images, loaded.spacings, configs.detector,
                                               midline_band=settings.midline_band)
                # Truth boxes are on the stored grid, the detector's on the display frame.
                truth = [None if truth_of[h.sop_uid] is None else
                         h.display.box_to_display(truth_of[h.sop_uid], (h.rows, h.columns)) for h in headers]
                placed, order = place(headers, candidates), head_to_foot(headers)
                for rule, config in rules.items():
                    if not isinstance(config, TrackConfig):
                        lone = base.threshold if config is None else config
                        chosen = [None if d is None else d.box for d, _ in top_boxes(lone)(candidates)]
                    else:
                        picks = choose(placed, order, config)
                        chosen = [None if k is None else c[k].box for c, k in zip(candidates, picks)]
                    tallies[(rule, kind)] += _tally(chosen, truth)
                level_truth = {r["sop_uid"]: r["level"] for r in rows if r["rater"] == "truth"}
                for name, along in (("slice by slice", None), ("one conus", order)):
                    found = predict_slices(models, configs, images, loaded.spacings, settings=settings,
                                           choose=with_neighbours(headers, base), head_to_foot=along)
                    scored = [(p.level, level_truth[h.sop_uid]) for p, h in zip(found, headers)
                              if p.box is not None and level_truth[h.sop_uid] in ("rootlet", "cord")]
                    levels[name] += (sum(a == b for a, b in scored), len(scored))
    print(f"{args.patients} held-out phantom patients (seed {args.seed}, {args.contrast} contrast); bundle {bundle}")
    print("| series | rule | right | wrong | missed | false | right / slices with a sac |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for (rule, kind), (right, wrong, missed, false) in tallies.items():
        share = right / max(right + wrong + missed, 1)
        print(f"| {kind} | {rule} | {right} | {wrong} | {missed} | {false} | {share:.3f} |")
    print("\n| rootlet / cord on boxed slices (both series) | right | scored | share |\n|---|---:|---:|---:|")
    for name, (right, scored) in levels.items():
        print(f"| {name} | {right} | {scored} | {right / max(scored, 1):.3f} |")


if __name__ == "__main__":
    main()
