"""k-fold cross-validation of the stages: per-fold bundles, out-of-fold predictions, final model.

Each fold writes its own folder (checkpoints, metrics, bundle, predictions.csv), so folds can run
as separate jobs and be merged afterwards with :func:`merge_fold_predictions`.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from stages.atomic import write_atomic
from stages.bundle import save_bundle
from stages.configs import STAGES
from stages.distributed import workers
from stages.folds import FoldPlan, plan_folds
from stages.inference import predict_slices
from stages.profiles import Profile
from stages.records import SliceRecord
from stages.stage_builders import SELECTED_BY, stage_training
from stages.train_loop import fit, seed_everything
from stages.vocabulary import CLASSIFIED, FROM_CLASSIFIER, FROM_LABELS, GRADES, LEVELS, NO_CANAL, NOT_CLASSIFIED


@dataclass
class CVRequest:
    stages: tuple[str, ...]
    profile: Profile
    plan: FoldPlan | None = None  # the cohort's folds (every rater's run shares them); None: planned here
    column_records: list[SliceRecord] = field(default_factory=list)  # sagittal slices, for the locator
    n_folds: int = 10
    folds: tuple[int, ...] | None = None  # run only these (e.g. one job per fold)
    final: bool = True  # also train the model on all patients
    seed: int = 0
    backbone_weights: Path | None = None
    resume: bool = False
    provenance: dict = field(default_factory=dict)


def _settings(request: CVRequest, stage: str, n_train_patients: int, final: bool = False):
    settings = request.profile.settings[stage]
    if final and stage in request.profile.final_epochs:
        settings = replace(settings, epochs=request.profile.final_epochs[stage])
    if stage == "detector" and request.profile.detector_slices_per_patient:
        settings = replace(settings, samples_per_epoch=request.profile.detector_slices_per_patient * n_train_patients)
    return settings


def train_stages(train: list[SliceRecord], val: list[SliceRecord], request: CVRequest, folder: Path,
                 progress: bool = True, final: bool = False) -> tuple[dict[str, torch.nn.Module], dict[str, dict]]:
    """Train each requested stage on ``train``, choosing the best epoch on ``val`` (the locator
    on the same patients' sagittal slices); ``final``: the model a bundle grades studies with,
    which may train longer than the folds (``Profile.final_epochs``)."""
    models, metrics = {}, {}
    train_patients, val_patients = {r.patient for r in train}, {r.patient for r in val}
    n_patients = len(train_patients)
    for stage in request.stages:
        settings = _settings(request, stage, n_patients, final)
        seed_everything(settings.seed)  # the stage starts the same whichever stages trained before it
        stage_train, stage_val = train, val
        if stage == "locator":
            stage_train = [r for r in request.column_records if r.patient in train_patients]
            stage_val = [r for r in request.column_records if r.patient in val_patients]
        unit, train_data, val_data = stage_training(stage, request.profile.configs, stage_train,
                                                    _spread(stage_val, settings.max_val_items), request.backbone_weights)
        if len(train_data) == 0:
            raise ValueError(f"no training data for the {stage} stage (check the labels for this rater)")
        result = fit(unit, train_data, val_data, settings, folder / stage, resume=request.resume,
                     progress=None if progress else False)
        models[stage] = unit.model
        kept = result.history[result.best_epoch] if result.history else {}  # the epoch the model is from
        metrics[stage] = {"best_val_score": result.best_score, "selected_by": SELECTED_BY[stage],
                          "best_epoch": result.best_epoch + 1,
                          "epochs": settings.epochs, "train_seconds": round(result.seconds, 1),
                          "images_per_s": round(result.images_per_s, 1), "workers": workers().world_size,
                          "n_train": len(train_data),
                          "n_val": len(val_data),
                          **{k: v for k, v in kept.items() if k.startswith("val_") and np.isfinite(v)}}
    return models, metrics


def stratum(record: SliceRecord) -> str:
    """What folds are stratified on: the grade of a rootlet slice, else its level."""
    return record.grade if record.level == "rootlet" and record.grade else record.level


def _spread(records: list[SliceRecord], limit: int | None) -> list[SliceRecord]:
    """At most ``limit`` records, evenly spread over the list (patients stay represented)."""
    if limit is None or len(records) <= limit:
        return records
    return [records[int(i)] for i in np.linspace(0, len(records) - 1, limit)]


def predictions_table(records: list[SliceRecord], models, configs, fold: int | None) -> pd.DataFrame:
    """One row per record: predicted level, grade (and its probabilities), box and sac area."""
    models = {stage: model for stage, model in models.items() if stage != "locator"}  # axial stages only
    boxes = [r.box for r in records]
    preds = predict_slices(models, configs, [r.image for r in records], [r.spacing for r in records], boxes=boxes)
    rows = []
    for r, p in zip(records, preds):
        if p.level in LEVELS:
            status, level, source = CLASSIFIED, p.level, FROM_CLASSIFIER
        elif p.level == NO_CANAL:  # nothing was classified: 'other' in the table, a miss in the agreement study
            status, level, source = NO_CANAL, "other", ""
        else:  # a canal, but no level stage in this run: the rater's level, never scored as the classifier's
            status, level, source = NOT_CLASSIFIED, r.level, FROM_LABELS
        row = {"case_id": r.case_id, "level": level, "grade": p.grade if level == "rootlet" else "",
               "status": status, "level_source": source, "level_probability": p.level_probability, "box_score": p.box_score,
               "dsca_mm2": None if p.dsca_mm2 is None else round(p.dsca_mm2, 2)}
        if p.box is not None:  # back on the stored grid, as label tables hold boxes
            box = r.display.box_to_stored(p.box, r.display.display_shape(r.image.shape))
            row.update({f"box_{k}": round(v, 2) for k, v in zip(("x0", "y0", "x1", "y1"), box)})
        for name, prob in zip(GRADES, p.grade_probabilities):
            row[f"p_{name}"] = round(prob, 4)
        if fold is not None:
            row["fold"] = fold
        rows.append(row)
    return pd.DataFrame(rows)


def run_cross_validation(records: list[SliceRecord], request: CVRequest, out_dir: Path | str,
                         progress: bool = True) -> dict:
    """Train and evaluate; returns (and writes as ``cv_summary.json``) what each fold measured."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    unknown = set(request.stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(sorted(unknown))}; choose from {', '.join(STAGES)}")
    plan = request.plan or plan_folds([r.patient for r in records], [stratum(r) for r in records], request.n_folds,
                                      request.seed)
    plan.check_covers({r.patient for r in records}, "the training records")
    team = workers()
    if team.is_main:
        plan.save(out_dir / "splits_final.json")  # the folds this run used
    summary: dict = {"folds": {}, "stages": list(request.stages), "profile": request.profile.name}
    folds = request.folds if request.folds is not None else tuple(range(plan.n_folds))
    for fold in folds:
        start = time.perf_counter()
        train_p, val_p, test_p = plan.split(fold)
        split = {name: [r for r in records if r.patient in group]
                 for name, group in (("train", train_p), ("val", val_p), ("test", test_p))}
        folder = out_dir / f"fold_{fold:02d}"
        models, metrics = train_stages(split["train"], split["val"], request, folder, progress)
        if not team.is_main:  # under torchrun, rank 0 alone writes
            continue
        provenance = {**request.provenance, "fold": fold, "n_folds": plan.n_folds, "train_patients": sorted(train_p),
                      "val_patients": sorted(val_p), "test_patients": sorted(test_p)}
        save_bundle(folder / "bundle", models, request.profile.configs, provenance, metrics)
        predictions = predictions_table(split["test"], models, request.profile.configs, fold)
        write_atomic(folder / "predictions.csv", lambda tmp: predictions.to_csv(tmp, index=False))
        summary["folds"][fold] = {"stages": metrics, "seconds": round(time.perf_counter() - start, 1),
                                  "n_test": len(split["test"])}
    if request.final:
        start = time.perf_counter()
        train_p, val_p = plan.final_split()
        train = [r for r in records if r.patient in train_p]
        val = [r for r in records if r.patient in val_p]
        models, metrics = train_stages(train, val, request, out_dir / "final", progress, final=True)
        if not team.is_main:
            return summary
        provenance = {**request.provenance, "fold": None, "train_patients": sorted(train_p),
                      "val_patients": sorted(val_p),
                      "final_split": f"trained on {plan.n_folds - plan.n_val_folds} of {plan.n_folds} folds; "
                                     f"the other {plan.n_val_folds} choose the best epoch and drive the lr schedule"}
        save_bundle(out_dir / "final" / "bundle", models, request.profile.configs, provenance, metrics)
        summary["final"] = {"stages": metrics, "seconds": round(time.perf_counter() - start, 1)}
    if team.is_main:
        (out_dir / "cv_summary.json").write_text(json.dumps(summary, indent=1, default=_json_default))
    return summary


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(type(value))


def merge_fold_predictions(out_dir: Path | str) -> pd.DataFrame:
    """All folds' predictions.csv under ``out_dir``, one table (folds may have run as separate jobs)."""
    parts = sorted(Path(out_dir).glob("fold_*/predictions.csv"))
    if not parts:
        raise FileNotFoundError(f"{out_dir}: no fold_*/predictions.csv")
    return pd.concat([pd.read_csv(p, keep_default_na=False) for p in parts], ignore_index=True)


__all__ = ["CVRequest", "merge_fold_predictions", "run_cross_validation", "train_stages"]
