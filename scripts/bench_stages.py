"""Train the stages on a phantom cohort and measure them on held-out folds against the truth.

    uv run python scripts/bench_stages.py --patients 40 --folds 10 --eval-folds 0,1 -o /tmp/bench
    uv run python scripts/bench_stages.py --models BUNDLE --stages level,grade,segmenter --seed 78 -o /tmp/b

Prints canal box IoU, level accuracy, grade accuracy and macro-F1, sac Dice, DSCA MAE and Pearson
r over the test slices of the folds run, with training wall time and images/s per stage, three
times: on the slices as the cohort wrote them (``--preset``, T2 TSE by default), on the same slices
re-rendered with random contrast from their label maps (fixed seed), so transfer beyond one
sequence is measured too, and on the same slices as a coarser acquisition would show them
(``--coarse-mm``, Dixon and abdominal series: rootlets no longer resolved, as on most real scans
outside a dedicated lumbar T2 TSE). ``--models`` skips training and measures a given bundle on
every slice of the cohort (generate it with a seed the bundle never saw); without a detector in
``--stages`` the true boxes stand in for it.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from scipy.ndimage import gaussian_filter
from sklearn.metrics import confusion_matrix, f1_score

from grading.labels import TRAINING_COLUMNS, read_label_table
from grading.phantom.cohort import CohortConfig, generate_cohort
from grading.training_data import load_training_data
from stages.bundle import load_bundle
from stages.cross_validation import CVRequest, run_cross_validation
from stages.detector import box_iou
from stages.inference import predict_slices
from stages.preprocessing import normalise_intensity
from stages.profiles import PROFILES
from stages.records import SliceRecord
from stages.synth import SynthConfig, render_random
from stages.train_loop import seed_everything
from stages.vocabulary import GRADES

TARGETS = {"box_iou50": 0.98, "level_accuracy": 0.95, "grade_accuracy": 0.90, "grade_f1_macro": 0.80,
           "dice": 0.90, "dsca_mae_mm2": 10.0, "dsca_pearson_r": 0.98}


def randomised(records: list[SliceRecord], seed: int) -> list[SliceRecord]:
    """The same slices with an image rendered from each label map with random contrast."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for r in records:
        if r.label_map is None:
            continue
        image = render_random(torch.from_numpy(r.label_map[None].astype(np.int64)), SynthConfig(), generator)[0]
        out.append(replace(r, image=normalise_intensity(image.numpy())))
    return out


def coarser(records: list[SliceRecord], acquired_mm: float) -> list[SliceRecord]:
    """The same slices as an acquisition of ``acquired_mm`` pixels would show them: a Gaussian
    point spread of that full width at half maximum, whatever each slice's own pixel size."""
    sigma_mm = acquired_mm / (2 * np.sqrt(2 * np.log(2)))
    return [replace(r, image=gaussian_filter(r.image, (sigma_mm / r.spacing[0], sigma_mm / r.spacing[1])))
            for r in records]


def box_shares(true_boxes, predicted_boxes) -> dict[str, float]:
    """Of the slices with a true canal box: the share boxed right (IoU >= 0.5), the share boxed
    wrong (a box kept at grade-study's threshold, IoU < 0.5: it would be graded) and the share
    with no box; and the mean IoU (0 where there is no box)."""
    ious = np.array([box_iou(p, t) if p else 0.0 for t, p in zip(true_boxes, predicted_boxes)])
    boxed = np.array([p is not None for p in predicted_boxes])
    return {"box_iou50": float(np.mean(ious >= 0.5)), "box_wrong": float(np.mean(boxed & (ious < 0.5))),
            "box_missed": float(np.mean(~boxed)), "box_iou_mean": float(np.mean(ious))}


def grade_confusion(truth, pred) -> dict[str, dict[str, int]]:
    """Counts by true grade (outer) and call (inner): where the errors go, e.g. healthy sacs called D."""
    counts = confusion_matrix(truth, pred, labels=list(GRADES))
    return {t: {p: int(counts[i, j]) for j, p in enumerate(GRADES)} for i, t in enumerate(GRADES)}


def evaluate(records, models, configs) -> dict:
    preds = predict_slices(models, configs, [r.image for r in records], [r.spacing for r in records],
                           boxes=[r.box for r in records])
    # Canal boxes on usable slices (what gets graded) and, apart, on 'other' (metal artefact) slices.
    usable = [(r.box, p.box) for r, p in zip(records, preds) if r.box and r.level != "other"]
    other_ious = [box_iou(p.box, r.box) if p.box else 0.0 for r, p in zip(records, preds) if r.box and r.level == "other"]
    level = [(r.level, p.level) for r, p in zip(records, preds) if r.level in ("rootlet", "cord") and "level" in models]
    graded = [(r.grade, p.grade) for r, p in zip(records, preds) if r.level == "rootlet" and p.grade]
    dice, areas = [], []
    for r, p in zip(records, preds):
        if p.sac_mask is None or r.mask is None or r.level != "rootlet":
            continue
        dice.append(2 * (r.mask & p.sac_mask).sum() / max(r.mask.sum() + p.sac_mask.sum(), 1))
        areas.append((r.dsca_mm2, p.dsca_mm2))
    out = {"n_slices": len(records)}
    if usable:
        out.update(box_shares(*zip(*usable)))
    if other_ious:
        out.update(box_iou50_other=float(np.mean(np.array(other_ious) >= 0.5)), n_other=len(other_ious))
    if level:
        out["level_accuracy"] = float(np.mean([a == b for a, b in level]))
    if graded:
        truth, pred = zip(*graded)
        out.update(grade_accuracy=float(np.mean(np.array(truth) == np.array(pred))),
                   grade_f1_macro=float(f1_score(truth, pred, average="macro", labels=sorted(set(truth)))),
                   n_graded=len(graded), grade_confusion=grade_confusion(truth, pred))
    if areas:
        a, b = np.array(areas, float).T
        out.update(dice=float(np.mean(dice)), dsca_mae_mm2=float(np.mean(np.abs(a - b))),
                   dsca_pearson_r=float(stats.pearsonr(a, b)[0]))
    return out


CONDITIONS = ("preset", "random", "coarse")


def evaluate_conditions(records, models, configs, coarse_mm: float, seed: int) -> dict[str, dict]:
    return {"preset": evaluate(records, models, configs),
            "random": evaluate(randomised(records, seed=seed), models, configs),
            "coarse": evaluate(coarser(records, coarse_mm), models, configs)}


def print_table(by_fold: dict[int, dict[str, dict]], folds: tuple[int, ...], args) -> dict:
    """Slice-weighted means over the folds, per condition, against the targets; returns them by condition."""
    results = {c: {f: by_fold[f][c] for f in folds} for c in CONDITIONS}
    heads = (args.preset + " preset", "random contrast", f"coarse {args.coarse_mm:g} mm")
    print(f"{'metric':18s} " + " ".join(f"{h:>16s}" for h in heads) + f" {'target':>8s}")
    for key, target in (*TARGETS.items(), ("box_wrong", None)):  # a wrong box is graded: worse than none
        row = []
        for condition in CONDITIONS:
            values = [results[condition][f].get(key) for f in folds]
            weights = np.array([results[condition][f]["n_slices"] for f in folds], float)
            row.append(None if any(v is None for v in values) else float(np.average(values, weights=weights)))
        if row[0] is None:
            continue
        cells = " ".join(f"{v:>16.4f}" if v is not None else f"{'-':>16s}" for v in row)
        if target is None:
            print(f"{key:18s} {cells}   (lower is better; not a target)")
            continue
        ok = all(v is not None and (v <= target if key.endswith("mm2") else v >= target) for v in row)
        print(f"{key:18s} {cells} {target:8.2f}  {'ok' if ok else 'MISSED'}")
    for condition, head in zip(CONDITIONS, heads):
        confusions = [results[condition][f]["grade_confusion"] for f in folds
                      if "grade_confusion" in results[condition][f]]
        if confusions:  # where the grade errors go (a healthy sac called D is the one a surgeon minds)
            calls = " ".join(f"{t}: " + "/".join(str(sum(m[t][p] for m in confusions)) for p in GRADES) for t in GRADES)
            print(f"{'grade calls':18s} {head}: true {calls} (called {'/'.join(GRADES)})")
    others = [results["preset"][f].get("box_iou50_other") for f in folds if "box_iou50_other" in results["preset"][f]]
    if others:
        print(f"{'box_iou50 (other)':18s} {np.mean(others):16.4f}   (metal-artefact slices: not graded, not a target)")
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", type=Path, default=Path("/tmp/bench_stages"))
    p.add_argument("--patients", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--eval-folds", default="0,1", help="folds to train and test (all: 0..folds-1)")
    p.add_argument("--stages", default="detector,level,grade,segmenter")
    p.add_argument("--rater", default="truth")
    p.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    p.add_argument("--preset", default="t2_tse", help="the contiguous axial series' sequence preset")
    p.add_argument("--reuse", action="store_true", help="evaluate the bundles of an earlier run instead of training")
    p.add_argument("--models", type=Path, help="measure this bundle on every slice of the cohort (no training)")
    p.add_argument("--coarse-mm", type=float, default=2.0, help="acquired pixel of the coarse condition (mm)")
    args = p.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    seed_everything(args.seed)
    cohort = args.output / "cohort"
    if not (cohort / "labels.csv").is_file():
        generate_cohort(cohort, CohortConfig(args.patients, args.seed, axial_presets={args.preset: 1.0}))
    labels = read_label_table(cohort / "labels.csv", required=TRAINING_COLUMNS)
    data = load_training_data(labels, cohort / "dicom", args.rater, cohort)
    stages = tuple(args.stages.split(","))
    if args.models is not None:
        models, configs, _ = load_bundle(args.models, stages=stages)
        print(f"\nbundle {args.models} on every slice of a {args.patients}-patient cohort (seed {args.seed})")
        results = print_table({0: evaluate_conditions(data.records, models, configs, args.coarse_mm, seed=0)}, (0,), args)
        (args.output / "bench_results.json").write_text(json.dumps({"models": str(args.models), "per_fold": results},
                                                                  indent=1, default=float))
        return
    folds = tuple(int(f) for f in args.eval_folds.split(","))
    request = CVRequest(stages=stages, profile=PROFILES[args.profile](args.seed),
                        n_folds=args.folds, folds=folds, final=False, seed=args.seed)
    start = time.perf_counter()
    if args.reuse:
        summary = json.loads((args.output / "run" / "cv_summary.json").read_text())
        summary["folds"] = {int(k): v for k, v in summary["folds"].items()}
    else:
        summary = run_cross_validation(data.records, request, args.output / "run")
    wall = time.perf_counter() - start
    plan = json.loads((args.output / "run" / "splits_final.json").read_text())["fold_of_patient"]
    test = [r for r in data.records if plan[r.patient] in folds]
    by_fold = {}
    for fold in folds:
        models, configs, _ = load_bundle(args.output / "run" / f"fold_{fold:02d}" / "bundle")
        held_out = [r for r in test if plan[r.patient] == fold]
        by_fold[fold] = evaluate_conditions(held_out, models, configs, args.coarse_mm, seed=fold)
    print(f"\nphantom cohort: {args.patients} patients, {len(data.records)} slices; rater {args.rater}; "
          f"profile {args.profile}; folds {folds} of {args.folds}; {torch.get_num_threads()} threads")
    results = print_table(by_fold, folds, args)
    print(f"\n{'stage':10s} {'train s/fold':>12s} {'images/s':>9s} {'epochs':>6s}")
    for stage in request.stages:
        secs = np.mean([summary["folds"][f]["stages"][stage]["train_seconds"] for f in folds])
        ips = np.mean([summary["folds"][f]["stages"][stage]["images_per_s"] for f in folds])
        print(f"{stage:10s} {secs:12.1f} {ips:9.1f} {summary['folds'][folds[0]]['stages'][stage]['epochs']:6d}")
    if not args.reuse:
        print(f"wall time, training and evaluation of {len(folds)} folds: {wall:.0f} s")
    (args.output / "bench_results.json").write_text(json.dumps({"per_fold": results, "summary": summary}, indent=1,
                                                              default=float))


if __name__ == "__main__":
    main()
