"""The stages chained on a batch of slices: box -> patch -> level -> grade and sac area.

Used for out-of-fold predictions in cross-validation and by grade-study. Imports nothing that
only training needs (albumentations, scikit-learn).
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from stages.configs import StageConfigs
from stages.detector import MIDLINE_BAND, Detection, detect_candidates, set_detection_limits
from stages.patches import extract_patches, paste_patch, patch_geometry
from stages.vocabulary import BOX_TOP, GRADES, LEVELS


def _batched(model: nn.Module, patches: np.ndarray, batch_size: int, device) -> list[torch.Tensor]:
    """Runs under the caller's grad mode and autocast (see stages.inference.predict_slices);
    ``device`` None means the model's own."""
    model.eval()
    device = device or next(model.parameters(), torch.empty(0)).device  # a parameterless model: the CPU
    outputs = []
    for start in range(0, len(patches), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(patches[start:start + batch_size], np.float32))[:, None].to(device)
        out = model(x)
        outputs.append((out[0] if isinstance(out, tuple) else out).float().cpu())
    return outputs


@torch.no_grad()
def classify(model: nn.Module, patches: np.ndarray, batch_size: int = 64, device=None) -> np.ndarray:
    """Class probabilities (N, C). A one-logit binary head gives [P(class 0), P(class 1)]."""
    if len(patches) == 0:
        return np.zeros((0, 2), np.float32)
    logits = torch.cat(_batched(model, patches, batch_size, device))
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - p, p], 1).numpy()
    return torch.softmax(logits, 1).numpy()


def classify_mirrored(model: nn.Module, patches: np.ndarray, batch_size: int = 64, device=None) -> np.ndarray:
    """Class probabilities averaged over each patch and its left-right mirror: how both classifiers
    are read. They train with left-right flips, so both are equally valid inputs; their mean depends
    less on what one training's asymmetries decide (docs/STAGES_BENCHMARK.md, "Stop 36")."""
    mirrored = np.ascontiguousarray(np.asarray(patches)[..., ::-1])
    return (classify(model, patches, batch_size, device) + classify(model, mirrored, batch_size, device)) / 2


@torch.no_grad()
def segment(model: nn.Module, patches: np.ndarray, batch_size: int = 32, device=None) -> np.ndarray:
    """Sac probability maps (N, P, P)."""
    if len(patches) == 0:
        return np.zeros((0, 0, 0), np.float32)
    return torch.sigmoid(torch.cat(_batched(model, patches, batch_size, device))[:, 0]).numpy()


@dataclass
class SlicePrediction:
    box: tuple[float, float, float, float] | None
    box_score: float | None  # None where the box came from labels, not the detector
    level: str  # rootlet | cord | no canal
    level_probability: float | None  # probability of the level given
    grade: str = ""
    grade_probabilities: list[float] = field(default_factory=list)  # A, B, C, D
    dsca_mm2: float | None = None  # from sac_mask: the one mask every measure and output comes from
    sac_mask: np.ndarray | None = field(default=None, repr=False)  # bool, the slice's grid
    box_choice: str = ""  # what the box rests on: 'top' (its own score), or a ChooseBoxes policy's word


#: A policy that picks each slice's canal box from its plausible detections (best first), given
#: all slices at once: (box or None, what the choice rests on) per slice.
ChooseBoxes = Callable[[list[list[Detection]]], list[tuple[Detection | None, str]]]


def top_boxes(min_box_score: float) -> ChooseBoxes:
    """The slice-by-slice rule: each slice's best box when it scores at least ``min_box_score``."""
    def pick(candidates: list[list[Detection]]) -> list[tuple[Detection | None, str]]:
        return [(c[0], BOX_TOP) if c and c[0].score >= min_box_score else (None, "") for c in candidates]
    return pick


@dataclass(frozen=True)
class InferenceSettings:
    """How the stages run, not what they compute: every default here matches torchvision's
    default-settings run within the tolerance that tests/test_inference_settings.py states.

    Detection limits suit one canal per slice: 200 proposals per FPN level before NMS, 50 after,
    five detections (torchvision: 1000, 1000, 100), of which the best near the body's midline is
    kept (``midline_band``; None: the best anywhere). With 20 after NMS, as in training, boxes
    moved on 18% of slices (IoU < 0.99 against the 1000-proposal box), with 50 on 11%; accuracy
    against the phantom truth was no lower for either (scripts/bench_detection_limits.py). None
    keeps the bundle's value. ``bf16`` (autocast) changes results more and is opt-in.
    """
    detector_batch: int = 8
    patch_batch: int = 64
    rpn_pre_nms_top_n: int | None = 200
    rpn_post_nms_top_n: int | None = 50
    detections_per_img: int | None = 5
    midline_band: float | None = MIDLINE_BAND
    channels_last: bool = True
    bf16: bool = False
    compile: bool = False
    inference_mode: bool = True

    @classmethod
    def torchvision_defaults(cls) -> "InferenceSettings":
        """One slice at a time with torchvision's own detection limits, as a plain script would run it."""
        return cls(detector_batch=1, patch_batch=1, rpn_pre_nms_top_n=1000, rpn_post_nms_top_n=1000,
                   detections_per_img=100, channels_last=False, inference_mode=False)


def one_conus(p_cord: np.ndarray) -> np.ndarray:
    """Cord (True) or rootlet for slices given head to foot: the cord ends once, at the conus, so
    every cord slice lies above every rootlet slice. The split that makes the classifier's calls
    most likely (the sum of log-probabilities) decides; an isolated call on the wrong side of it
    is overruled, a run of them moves the split."""
    p = np.clip(np.asarray(p_cord, float), 1e-6, 1 - 1e-6)
    log_cord, log_rootlet = np.log(p), np.log1p(-p)
    # Total log-likelihood with the first k slices cord and the rest rootlet, for k = 0..n.
    totals = np.concatenate([[0.0], np.cumsum(log_cord)]) + np.concatenate([np.cumsum(log_rootlet[::-1])[::-1], [0.0]])
    return np.arange(len(p)) < int(np.argmax(totals))


def prepare_models(models: dict[str, torch.nn.Module], settings: InferenceSettings) -> dict[str, torch.nn.Module]:
    """Copies of the models set up for ``settings`` (the originals are left as they are)."""
    prepared = {}
    for name, model in models.items():
        model = copy.deepcopy(model).eval()
        if settings.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if name == "detector":
            set_detection_limits(model, settings.rpn_pre_nms_top_n, settings.rpn_post_nms_top_n,
                                 settings.detections_per_img)
            if settings.compile:  # the backbone only: fixed shapes, where nearly all the time goes
                model.backbone = torch.compile(model.backbone)
        elif settings.compile:
            model = torch.compile(model)
        prepared[name] = model
    return prepared


@contextmanager
def _timed(timings: dict[str, float] | None, key: str):
    start = time.perf_counter()
    yield
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - start


def predict_slices(models: dict[str, torch.nn.Module], configs: StageConfigs, images: list[np.ndarray],
                   spacings: list[tuple[float, float]], boxes: list | None = None, min_box_score: float = 0.5,
                   device: str | torch.device = "cpu", settings: InferenceSettings = InferenceSettings(),
                   timings: dict[str, float] | None = None, choose: ChooseBoxes | None = None,
                   head_to_foot: list[int] | None = None) -> list[SlicePrediction]:
    """Predictions for normalised slices. ``boxes`` stand in for the detector when it is absent.

    ``choose`` picks the canal boxes from the detector's candidates (default: :func:`top_boxes`
    at ``min_box_score``); a slice without a box keeps its best score for the record. With
    ``head_to_foot`` (the slices' order along the spine) the level calls of the boxed slices are
    made together, with one conus (:func:`one_conus`); otherwise slice by slice.
    ``timings`` (when given) gains the seconds spent in the detector, classifiers and segmenter.
    """
    grad_off = torch.inference_mode() if settings.inference_mode else torch.no_grad()
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=settings.bf16)
    with grad_off, autocast:
        return _predict(models, configs, images, spacings, boxes, choose or top_boxes(min_box_score), device,
                        settings, timings, head_to_foot)


def _predict(models, configs, images, spacings, boxes, choose: ChooseBoxes, device, settings, timings,
             head_to_foot):
    if "detector" in models:
        with _timed(timings, "detector_s"):
            candidates = detect_candidates(models["detector"], images, spacings, configs.detector,
                                           batch_size=settings.detector_batch, device=device,
                                           midline_band=settings.midline_band)
        located = [(d.box, d.score, why) if d is not None else (None, c[0].score if c else None, why)
                   for (d, why), c in zip(choose(candidates), candidates)]
    elif boxes is not None:
        located = [(b, None, "") for b in boxes]
    else:
        raise ValueError("no detector in the bundle and no boxes given")
    out = [SlicePrediction(box=b, box_score=s, level="no canal", level_probability=None, box_choice=why)
           for b, s, why in located]
    have_box = [i for i, p in enumerate(out) if p.box is not None]
    for i in have_box:
        out[i].level = ""  # a canal, not (yet) classified
    if not have_box:
        return out
    if "level" in models or "grade" in models:
        cfg = configs.classifier_patch
        patches = np.stack([extract_patches(images[i], [patch_geometry(out[i].box, cfg.size, cfg.margin, spacings[i])])[0]
                            for i in have_box])
    if "level" in models:
        with _timed(timings, "classifiers_s"):
            level_probs = classify_mirrored(models["level"], patches, settings.patch_batch, device)
        calls = level_probs.argmax(1)
        if head_to_foot is not None:
            rank = {i: r for r, i in enumerate(head_to_foot)}
            along = sorted(range(len(have_box)), key=lambda j: rank[have_box[j]])
            cord = one_conus(level_probs[along, LEVELS.index("cord")])
            calls[along] = np.where(cord, LEVELS.index("cord"), LEVELS.index("rootlet"))
        for i, p, k in zip(have_box, level_probs, calls):
            out[i].level, out[i].level_probability = LEVELS[k], float(p[k])
    # SPEC: grade and sac area on rootlet slices (on every canal when levels are not classified).
    graded = [j for j, i in enumerate(have_box) if out[i].level in ("rootlet", "")]
    if graded and "grade" in models:
        with _timed(timings, "classifiers_s"):
            grade_probs = classify_mirrored(models["grade"], patches[graded], settings.patch_batch, device)
        for j, p in zip(graded, grade_probs):
            out[have_box[j]].grade = GRADES[int(np.argmax(p))]
            out[have_box[j]].grade_probabilities = [float(v) for v in p]
    to_segment = [have_box[j] for j in graded]
    if to_segment and "segmenter" in models:
        seg_cfg = configs.segmenter_patch
        geometries = [patch_geometry(out[i].box, seg_cfg.size, seg_cfg.margin, spacings[i]) for i in to_segment]
        seg_patches = np.stack([extract_patches(images[i], [g])[0] for i, g in zip(to_segment, geometries)])
        with _timed(timings, "segmenter_s"):
            probs = segment(models["segmenter"], seg_patches, settings.patch_batch, device)
        for i, g, prob in zip(to_segment, geometries, probs):
            # SPEC: DSCA = sac pixels x row spacing x column spacing, counted on the slice's own grid.
            mask = paste_patch(prob, g, images[i].shape) >= 0.5
            out[i].sac_mask, out[i].dsca_mm2 = mask, float(mask.sum() * spacings[i][0] * spacings[i][1])
    return out
