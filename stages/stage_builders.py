"""The four stages as trainable units: model, data, loss and validation score for each."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score

from stages.augment import column_augment, detection_augment, patch_augment, patch_center
from stages.configs import LocatorConfig, StageConfigs
from stages.datasets import ColumnCollate, ColumnData, DetectionCollate, DetectionData, PatchCollate, PatchData
from stages.detector import DetectorConfig, box_iou, detect, operating_threshold
from stages.inference import classify, segment
from stages.losses import segmentation_loss
from stages.models import build_model
from stages.records import SliceRecord
from stages.train_loop import StageTraining


def mask_area(probabilities: np.ndarray, pixel_area_mm2: float | np.ndarray) -> np.ndarray:
    """Sac area (mm²): pixels with probability >= 0.5 times the patch pixel area (SPEC's DSCA).

    Summing probabilities instead would add the small background probabilities of thousands of
    pixels: on phantoms that overstated areas by ~30% while Dice was already 0.97.
    """
    return (probabilities >= 0.5).reshape(len(probabilities), -1).sum(1) * np.asarray(pixel_area_mm2)


def _detector_loss(model, batch):
    images, targets = batch
    return sum(model(images, targets).values())


def top_box_scores(model, data: DetectionData, config: DetectorConfig) -> tuple[np.ndarray, np.ndarray]:
    """(score, IoU with the true box) of the top plausible box on each slice that has a canal."""
    keep = [i for i, b in enumerate(data.boxes) if b is not None]
    found = detect(model, [data.images[i] for i in keep], [data.spacings[i] for i in keep], config)
    return (np.array([d.score if d else 0.0 for d in found]),
            np.array([box_iou(d.box, data.boxes[i]) if d else 0.0 for d, i in zip(found, keep)]))


def _evaluate_detector(config: DetectorConfig):
    """Share of validation slices boxed right (IoU >= 0.5), and how sure the detector is of
    those right boxes (median score; NaN without one) with the threshold they suggest
    (``stages.detector.operating_threshold``): what grade-train warns about."""
    def evaluate(model, data: DetectionData) -> dict:
        scores, ious = top_box_scores(model, data, config)
        mean_iou = float(ious.mean()) if len(ious) else 0.0
        right = scores[ious >= 0.5]
        return {"score": float((ious >= 0.5).mean()) if len(ious) else 0.0, "mean_iou": mean_iou, "tiebreak": mean_iou,
                "right_box_median_score": float(np.median(right)) if len(right) else float("nan"),
                "suggested_box_threshold": operating_threshold(scores, ious)}
    return evaluate


def _classifier_loss(binary: bool):
    def loss(model, batch):
        x, y = batch
        logits = model(x)
        if binary:
            return F.binary_cross_entropy_with_logits(logits[:, 0], y.float())
        return F.cross_entropy(logits, y)
    return loss


#: Validation slices are already at the locator's pixel size: resampling them again is a no-op.
LOCATOR_IDENTITY = LocatorConfig(pixel_mm=1.0, max_side=100_000)

#: What chooses each stage's best epoch (and drives its lr schedule); recorded in the manifest.
SELECTED_BY = {"detector": "share of validation slices with box IoU >= 0.5 (tie: mean IoU)",
               "level": "validation macro-F1 (tie: accuracy): about 95% of slices are rootlet, where accuracy kept "
                        "the epoch-1 model that calls every slice rootlet on two of four demo seeds",
               "grade": "validation macro-F1, the paper's F-score (tie: accuracy): about 77% of slices are "
                        "grade A, where accuracy would favour a model that rarely calls B-D",
               "segmenter": "validation Dice (tie: DSCA error)",
               "locator": "validation mean Dice of vertebral body, disc and sacrum"}


def _evaluate_classifier(model, data: PatchData) -> dict:
    """Macro-F1 as the score, accuracy to break ties: both classifiers' classes are unbalanced
    (level ~95% rootlet, grade ~77% A), where accuracy favours a model that calls the majority."""
    patches = np.stack([data.center(image=c)["image"] for c in data.crops]) if len(data) else np.zeros((0, 1, 1))
    predicted = classify(model, patches).argmax(1)
    truth = np.asarray(data.labels)
    if not len(truth):
        return {"score": 0.0, "f1_macro": 0.0}
    f1 = float(f1_score(truth, predicted, average="macro", labels=np.unique(truth)))
    accuracy = float((predicted == truth).mean())
    return {"score": f1, "accuracy": accuracy, "f1_macro": f1, "tiebreak": accuracy}


def _segmenter_loss(name: str):
    def loss(model, batch):
        x, target = batch
        out = model(x)
        if isinstance(out, tuple):  # dual output: the bottleneck mask is an auxiliary target
            return segmentation_loss(name, out[0], target) + 0.4 * segmentation_loss(name, out[1], target)
        return segmentation_loss(name, out, target)
    return loss


def _evaluate_segmenter(data: PatchData, model) -> dict:
    if not len(data):
        return {"score": 0.0}
    pairs = [data.center(image=c, mask=m) for c, m in zip(data.crops, data.masks)]
    probs = segment(model, np.stack([p["image"] for p in pairs]))
    masks = np.stack([p["mask"] for p in pairs]) >= 0.5
    pred = probs >= 0.5
    inter = (pred & masks).sum((1, 2))
    dice = 2 * inter / np.maximum(pred.sum((1, 2)) + masks.sum((1, 2)), 1)
    areas = mask_area(probs, np.asarray(data.area_per_pixel))
    truth = np.array([d if d is not None else np.nan for d in data.dsca], float)
    mae = float(np.nanmean(np.abs(areas - truth))) if np.isfinite(truth).any() else float("nan")
    return {"score": float(dice.mean()), "dsca_mae_mm2": mae, "tiebreak": -mae if np.isfinite(mae) else 0.0}


def _locator_loss(model, batch):
    x, classes = batch
    logits = model(x)
    probs = torch.softmax(logits, 1)
    one_hot = F.one_hot(classes, logits.shape[1]).permute(0, 3, 1, 2).float()
    dice = (2 * (probs * one_hot).sum((2, 3)) + 1) / (probs.sum((2, 3)) + one_hot.sum((2, 3)) + 1)
    return F.cross_entropy(logits, classes) + (1 - dice[:, 1:].mean())


def _evaluate_locator(model, data) -> dict:
    """Mean Dice of the body, disc and sacrum classes over the validation slices (whole)."""
    from stages.locator import column_probabilities

    if not len(data):
        return {"score": 0.0}
    scores = []
    for image, classes in zip(data.images, data.classes):
        predicted = column_probabilities(model, LOCATOR_IDENTITY, [image], [(1.0, 1.0)])[0].argmax(0)
        per_class = []
        for k in range(1, int(classes.max(initial=0)) + 1):
            truth, guess = classes == k, predicted == k
            if truth.any() or guess.any():
                per_class.append(2 * (truth & guess).sum() / (truth.sum() + guess.sum()))
        if per_class:
            scores.append(float(np.mean(per_class)))
    return {"score": float(np.mean(scores)) if scores else 0.0}


def stage_loss(stage: str, configs: StageConfigs):
    """The loss of ``stage``'s model on one training batch: ``loss(model, batch)``."""
    if stage == "locator":
        return _locator_loss
    if stage == "detector":
        return _detector_loss
    if stage in ("level", "grade"):
        return _classifier_loss(stage == "level")
    return _segmenter_loss(configs.segmenter_loss)


def stage_training(stage: str, configs: StageConfigs, train: list[SliceRecord], val: list[SliceRecord],
                   backbone_weights=None):
    """(StageTraining, train dataset, validation dataset) for one stage."""
    model = build_model(stage, configs, backbone_weights)
    synth, loss = getattr(configs.synth, stage), stage_loss(stage, configs)
    if stage == "locator":
        augment = column_augment(configs.augment)
        return (StageTraining(stage, model, loss, _evaluate_locator, ColumnCollate(synth), augment,
                              channels_last=True),
                ColumnData(train, configs.locator, augment, crop=True), ColumnData(val, configs.locator))
    if stage == "detector":
        augment = detection_augment(configs.augment)
        return (StageTraining(stage, model, loss, _evaluate_detector(configs.detector),
                              DetectionCollate(synth), augment),
                DetectionData(train, configs.detector, augment, crop=True), DetectionData(val, configs.detector))
    if stage in ("level", "grade"):
        cfg = configs.classifier_patch
        augment = patch_augment(configs.augment, cfg.size)
        return (StageTraining(stage, model, loss,
                              _evaluate_classifier, PatchCollate(synth),
                              augment, channels_last=True),
                PatchData(train, cfg, stage, augment, patch_center(cfg.size)),
                PatchData(val, cfg, stage, None, patch_center(cfg.size)))
    cfg = configs.segmenter_patch
    augment = patch_augment(configs.augment, cfg.size)
    return (StageTraining(stage, model, loss, lambda m, d: _evaluate_segmenter(d, m),
                          PatchCollate(synth), augment),
            PatchData(train, cfg, "mask", augment, patch_center(cfg.size)),
            PatchData(val, cfg, "mask", None, patch_center(cfg.size)))


