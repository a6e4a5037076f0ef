"""Prepared, in-memory training data for each stage, built once from slice records.

Whole slices are kept at the detector's input size and patches as context crops around the
labelled canal box, so an epoch never touches DICOM and memory stays at ~50 kB a slice.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from stages.detector import detector_input, to_model_input
from stages.patches import PatchGeometry, extract_patches, patch_geometry
from stages.records import SliceRecord


@dataclass(frozen=True)
class PatchConfig:
    size: int = 64  # patch side, pixels
    margin: float = 0.25  # around the box, fraction of its longer side, each side
    context: float = 0.2  # extra crop kept for augmentation, fraction of ``size`` each side


def context_geometry(box, cfg: PatchConfig) -> PatchGeometry:
    """The patch geometry widened by ``context``: centre-cropping it to ``size`` gives the patch."""
    core = patch_geometry(box, cfg.size, cfg.margin)
    pad = int(round(cfg.size * cfg.context))
    return PatchGeometry(core.x0 - pad * core.step, core.y0 - pad * core.step, core.step, cfg.size + 2 * pad)


class DetectionData(Dataset):
    """Slices at the detector's input size with their canal box (none for slices without one)."""

    def __init__(self, records: list[SliceRecord], input_size: int, augment=None):
        self.images, self.boxes = [], []
        for r in records:
            image, scale = detector_input(r.image, input_size)
            self.images.append(image)
            self.boxes.append(None if r.box is None else tuple(v * scale for v in r.box))
        self.augment = augment
        self.strata = ["canal" if b is not None else "none" for b in self.boxes]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image, box = self.images[i], self.boxes[i]
        boxes = [] if box is None else [self._clip(box, image.shape)]
        if self.augment is not None:
            out = self.augment(image=image, bboxes=np.array(boxes, np.float32).reshape(-1, 4), labels=[1] * len(boxes))
            image, boxes = out["image"], [tuple(b) for b in out["bboxes"]]
        target = {"boxes": torch.tensor(np.array(boxes, np.float32).reshape(-1, 4)),
                  "labels": torch.ones(len(boxes), dtype=torch.int64)}
        return to_model_input(image), target

    @staticmethod
    def _clip(box, shape):
        x0, y0, x1, y1 = box
        return (max(0.0, x0), max(0.0, y0), min(float(shape[1]), x1), min(float(shape[0]), y1))


def detection_collate(batch):
    return [b[0] for b in batch], [b[1] for b in batch]


class PatchData(Dataset):
    """Context crops around the labelled canal, with level/grade targets and soft sac masks."""

    def __init__(self, records: list[SliceRecord], cfg: PatchConfig, target: str, augment=None, center=None):
        if target not in ("level", "grade", "mask"):
            raise ValueError(target)
        keep = [r for r in records if r.box is not None and _has_target(r, target)]
        geometries = [context_geometry(r.box, cfg) for r in keep]
        self.crops = [extract_patches(r.image, [g])[0] for r, g in zip(keep, geometries)]
        self.masks = ([extract_patches(r.mask.astype(np.float32), [g])[0] for r, g in zip(keep, geometries)]
                      if target == "mask" else None)
        self.area_per_pixel = [g.pixel_area_mm2(r.spacing) for r, g in zip(keep, geometries)]
        self.dsca = [r.dsca_mm2 for r in keep]
        self.labels = [r.level_index if target == "level" else r.grade_index if target == "grade" else 0 for r in keep]
        self.strata = [str(label) for label in self.labels]
        self.augment, self.center = augment, center

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, i: int):
        transform = self.augment if self.augment is not None else self.center
        if self.masks is not None:
            out = transform(image=self.crops[i], mask=self.masks[i])
            return torch.from_numpy(out["image"])[None], torch.from_numpy(np.ascontiguousarray(out["mask"]))[None]
        out = transform(image=self.crops[i])
        return torch.from_numpy(out["image"])[None], torch.tensor(self.labels[i])


def _has_target(r: SliceRecord, target: str) -> bool:
    if target == "level":
        return r.level_index is not None
    if target == "grade":
        return r.grade_index is not None
    return r.mask is not None and r.level in ("rootlet", "cord")


def balanced_weights(strata: list[str]) -> torch.Tensor:
    """Sampling weights under which every stratum (level or grade) is drawn equally often."""
    values, inverse, counts = np.unique(np.asarray(strata), return_inverse=True, return_counts=True)
    return torch.as_tensor(1.0 / counts[inverse], dtype=torch.double)
