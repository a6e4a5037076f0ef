"""The stages chained on a batch of slices: box -> patch -> level -> grade and sac area.

Used for out-of-fold predictions in cross-validation and by grade-study.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from stages.detector import detect
from stages.patches import PatchGeometry, extract_patches, patch_geometry
from stages.predict import mask_area, classify, segment
from stages.records import GRADE_NAMES, LEVEL_NAMES
from stages.training import StageConfigs


@dataclass
class SlicePrediction:
    box: tuple[float, float, float, float] | None
    box_score: float | None  # None where the box came from labels, not the detector
    level: str  # rootlet | cord | no canal
    level_probability: float | None  # probability of the level given
    grade: str = ""
    grade_probabilities: list[float] = field(default_factory=list)  # A, B, C, D
    dsca_mm2: float | None = None
    sac_probability: np.ndarray | None = field(default=None, repr=False)  # segmenter patch map
    sac_geometry: PatchGeometry | None = None


@torch.inference_mode()
def predict_slices(models: dict[str, torch.nn.Module], configs: StageConfigs, images: list[np.ndarray],
                   spacings: list[tuple[float, float]], boxes: list | None = None, min_box_score: float = 0.5,
                   device: str | torch.device = "cpu") -> list[SlicePrediction]:
    """Predictions for normalised slices. ``boxes`` stand in for the detector when it is absent."""
    if "detector" in models:
        found = detect(models["detector"], images, configs.detector.input_size, device=device)
        located = [(d.box, d.score) if d is not None and d.score >= min_box_score else (None, d.score if d else None)
                   for d in found]
    elif boxes is not None:
        located = [(b, None) for b in boxes]
    else:
        raise ValueError("no detector in the bundle and no boxes given")
    out = [SlicePrediction(box=b, box_score=s, level="no canal", level_probability=None) for b, s in located]
    have_box = [i for i, p in enumerate(out) if p.box is not None]
    for i in have_box:
        out[i].level = ""  # a canal, not (yet) classified
    if not have_box:
        return out
    if "level" in models or "grade" in models:
        cfg = configs.classifier_patch
        patches = np.stack([extract_patches(images[i], [patch_geometry(out[i].box, cfg.size, cfg.margin)])[0]
                            for i in have_box])
    if "level" in models:
        for i, p in zip(have_box, classify(models["level"], patches, device=device)):
            k = int(np.argmax(p))
            out[i].level, out[i].level_probability = LEVEL_NAMES[k], float(p[k])
    # SPEC: grade and sac area on rootlet slices (on every canal when levels are not classified).
    graded = [j for j, i in enumerate(have_box) if out[i].level in ("rootlet", "")]
    if graded and "grade" in models:
        for j, p in zip(graded, classify(models["grade"], patches[graded], device=device)):
            out[have_box[j]].grade = GRADE_NAMES[int(np.argmax(p))]
            out[have_box[j]].grade_probabilities = [float(v) for v in p]
    to_segment = [have_box[j] for j in graded]
    if to_segment and "segmenter" in models:
        seg_cfg = configs.segmenter_patch
        geometries = [patch_geometry(out[i].box, seg_cfg.size, seg_cfg.margin) for i in to_segment]
        seg_patches = np.stack([extract_patches(images[i], [g])[0] for i, g in zip(to_segment, geometries)])
        probs = segment(models["segmenter"], seg_patches, device=device)
        pixel_areas = np.array([g.pixel_area_mm2(spacings[i]) for i, g in zip(to_segment, geometries)])
        areas = mask_area(probs, pixel_areas)
        for i, g, prob, area in zip(to_segment, geometries, probs, areas):
            out[i].sac_probability, out[i].sac_geometry, out[i].dsca_mm2 = prob, g, float(area)
    return out
