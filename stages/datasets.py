"""Prepared, in-memory training data for each stage, built once from slice records.

Whole slices are kept at the detector's pixel size and patches as context crops around the
labelled canal box, so an epoch never touches DICOM. Where a slice has a label map (synthetic
data), it is kept beside the image and moves with it through the augmentation; the collate
functions then replace a share of each batch (``SynthConfig.probability``) by new images
rendered from the label maps with random contrast, a whole batch at a time.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from stages.configs import PatchConfig
from stages.detector import (
    DetectorConfig,
    input_scale,
    resample,
    scale_box,
    to_model_input,
)
from stages.patches import PatchGeometry, extract_patches, patch_geometry
from stages.records import SliceRecord
from stages.synth import SynthConfig, render_random, unresolve_share


def context_geometry(box, cfg: PatchConfig, spacing: tuple[float, float]) -> PatchGeometry:
    """The patch geometry widened by ``context``: centre-cropping it to ``size`` gives the patch."""
    return patch_geometry(box, cfg.size, cfg.margin, spacing).widened(int(round(cfg.size * cfg.context)))


def _rendered(labels: torch.Tensor, synth: SynthConfig) -> torch.Tensor:
    """Random-contrast images for a batch of label maps, spread over a random intensity range
    like the percentile-normalised slices the models see at inference (0 to about 1.5)."""
    images = render_random(labels, synth)
    top = 0.8 + 0.7 * torch.rand(len(images), 1, 1)
    return images * top


def _render_share(images: torch.Tensor, labels: list[np.ndarray | None], synth: SynthConfig | None) -> torch.Tensor:
    """Replace the images whose label map is drawn (probability ``synth.probability``), then
    blur structures below a coarse series' resolution on a share of all label-mapped ones."""
    mapped = [i for i, lab in enumerate(labels) if lab is not None]
    if synth is None or not mapped:
        return images
    maps = torch.from_numpy(np.stack([labels[i] for i in mapped]).astype(np.int64))
    if synth.probability > 0:
        drawn = [k for k in range(len(mapped)) if float(torch.rand(1)) < synth.probability]
        if drawn:
            images[[mapped[k] for k in drawn]] = _rendered(maps[drawn], synth)
    images[mapped] = unresolve_share(images[mapped], maps, synth)
    return images


class DetectionData(Dataset):
    """Slices at the detector's pixel size with their canal box (none for slices without one).

    With ``crop``, each item is a ``train_crop`` square: around the box four times in five,
    anywhere otherwise, so bowel, kidneys and skin far from the spine are seen as background
    (slices smaller than the crop are padded).
    """

    def __init__(self, records: list[SliceRecord], config: DetectorConfig, augment=None, crop: bool = False):
        self.images, self.boxes, self.labels, self.spacings = [], [], [], []
        for r in records:
            scale = input_scale(r.image.shape, r.spacing, config)
            self.images.append(resample(r.image, scale))
            self.labels.append(None if r.label_map is None else resample(r.label_map, scale, "nearest"))
            self.boxes.append(None if r.box is None else scale_box(r.box, scale))
            self.spacings.append((r.spacing[0] / scale[0], r.spacing[1] / scale[1]))
        self.augment = augment
        self.crop = config.train_crop if crop else None
        self.strata = ["canal" if b is not None else "none" for b in self.boxes]

    def __len__(self) -> int:
        return len(self.images)

    def _window(self, shape: tuple[int, int], box) -> tuple[int, int]:
        """Top-left corner of the crop (rows, columns)."""
        size = self.crop
        limits = [max(0, n - size) for n in shape]
        if box is not None and float(torch.rand(1)) < 0.8:
            x0, y0, x1, y1 = box
            lo = [max(0, int(np.ceil(y1)) - size), max(0, int(np.ceil(x1)) - size)]
            hi = [min(limits[0], int(y0)), min(limits[1], int(x0))]
            return tuple(int(torch.randint(lo[k], max(lo[k], hi[k]) + 1, (1,))) for k in range(2))
        return tuple(int(torch.randint(0, limit + 1, (1,))) for limit in limits)

    def _cropped(self, i: int):
        image, labels, box = self.images[i], self.labels[i], self.boxes[i]
        if self.crop is None:
            return image, labels, box
        r0, c0 = self._window(image.shape, box)
        size = self.crop
        out = np.zeros((size, size), np.float32)
        part = image[r0:r0 + size, c0:c0 + size]
        out[:part.shape[0], :part.shape[1]] = part
        out_labels = None
        if labels is not None:
            out_labels = np.zeros((size, size), np.uint8)
            out_labels[:part.shape[0], :part.shape[1]] = labels[r0:r0 + size, c0:c0 + size]
        if box is not None:
            x0, y0, x1, y1 = box[0] - c0, box[1] - r0, box[2] - c0, box[3] - r0
            # Each overlap clamped at 0: a box beyond the crop on both axes has two negative overlaps.
            overlap = max(0.0, min(x1, size) - max(x0, 0)) * max(0.0, min(y1, size) - max(y0, 0))
            inside = overlap / max((x1 - x0) * (y1 - y0), 1e-6)
            box = (max(0.0, x0), max(0.0, y0), min(float(size), x1), min(float(size), y1)) if inside > 0.6 else None
        return out, out_labels, box

    def __getitem__(self, i: int):
        image, labels, box = self._cropped(i)
        boxes = [] if box is None else [self._clip(box, image.shape)]
        if self.augment is not None:
            masks = [labels] if labels is not None else []
            out = self.augment(image=image, masks=masks, bboxes=np.array(boxes, np.float32).reshape(-1, 4),
                               labels=[1] * len(boxes))
            image, boxes = out["image"], [tuple(b) for b in out["bboxes"]]
            if labels is not None:
                labels = np.ascontiguousarray(out["masks"][0])
        target = {"boxes": torch.tensor(np.array(boxes, np.float32).reshape(-1, 4)),
                  "labels": torch.ones(len(boxes), dtype=torch.int64)}
        return np.ascontiguousarray(image, np.float32), labels, target

    @staticmethod
    def _clip(box, shape):
        x0, y0, x1, y1 = box
        return (max(0.0, x0), max(0.0, y0), min(float(shape[1]), x1), min(float(shape[0]), y1))


class DetectionCollate:
    """Batches detection items, rendering a share of them from their label maps."""

    def __init__(self, synth: SynthConfig | None = None):
        self.synth = synth

    def __call__(self, batch):
        images = [torch.from_numpy(b[0]) for b in batch]
        if self.synth is not None and len({tuple(i.shape) for i in images}) == 1:
            images = list(_render_share(torch.stack(images), [b[1] for b in batch], self.synth))
        return [to_model_input(i) for i in images], [b[2] for b in batch]


class PatchData(Dataset):
    """Context crops around the labelled canal, with level/grade targets, soft sac masks and
    (for synthetic slices) label-map crops."""

    def __init__(self, records: list[SliceRecord], cfg: PatchConfig, target: str, augment=None, center=None):
        if target not in ("level", "grade", "mask"):
            raise ValueError(target)
        keep = [r for r in records if r.box is not None and _has_target(r, target)]
        geometries = [context_geometry(r.box, cfg, r.spacing) for r in keep]
        self.crops = [extract_patches(r.image, [g])[0] for r, g in zip(keep, geometries)]
        self.masks = ([extract_patches(r.mask.astype(np.float32), [g])[0] for r, g in zip(keep, geometries)]
                      if target == "mask" else None)
        self.label_crops = [None if r.label_map is None else
                            extract_patches(r.label_map.astype(np.float32), [g], mode="nearest")[0].astype(np.uint8)
                            for r, g in zip(keep, geometries)]
        self.area_per_pixel = [g.pixel_area_mm2(r.spacing) for r, g in zip(keep, geometries)]
        self.dsca = [r.dsca_mm2 for r in keep]
        self.labels = [r.level_index if target == "level" else r.grade_index if target == "grade" else 0 for r in keep]
        self.strata = [str(label) for label in self.labels]
        self.augment, self.center = augment, center

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, i: int):
        transform = self.augment if self.augment is not None else self.center
        masks = ([self.masks[i]] if self.masks is not None else []) + \
            ([self.label_crops[i]] if self.label_crops[i] is not None else [])
        out = transform(image=self.crops[i], masks=masks)
        image = torch.from_numpy(np.ascontiguousarray(out["image"]))[None]
        labels = np.ascontiguousarray(out["masks"][-1]) if self.label_crops[i] is not None else None
        if self.masks is not None:
            return image, torch.from_numpy(np.ascontiguousarray(out["masks"][0]))[None], labels
        return image, torch.tensor(self.labels[i]), labels


class PatchCollate:
    """Stacks patch items into (x, y), rendering a share of them from their label maps."""

    def __init__(self, synth: SynthConfig | None = None):
        self.synth = synth

    def __call__(self, batch):
        x = torch.stack([b[0] for b in batch])
        y = torch.stack([b[1] for b in batch])
        rendered = _render_share(x[:, 0].clone(), [b[2] for b in batch], self.synth)
        return rendered[:, None], y


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


class ColumnData(Dataset):
    """Sagittal slices at the locator's pixel size with their column class maps (for the level
    locator); with ``crop``, random ``train_crop`` squares (smaller slices padded)."""

    def __init__(self, records: list[SliceRecord], config, augment=None, crop: bool = False):
        self.images, self.classes, self.labels = [], [], []
        for r in records:
            scale = input_scale(r.image.shape, r.spacing, config)
            self.images.append(resample(r.image, scale))
            self.classes.append(resample(r.classes, scale, "nearest"))
            self.labels.append(None if r.label_map is None else resample(r.label_map, scale, "nearest"))
        self.augment = augment
        self.crop = config.train_crop if crop else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image, classes, labels = self.images[i], self.classes[i], self.labels[i]
        if self.crop is not None:
            size = self.crop
            r0, c0 = (int(torch.randint(0, max(0, n - size) + 1, (1,))) for n in image.shape)
            image, classes, labels = (_padded(a[r0:r0 + size, c0:c0 + size], size) if a is not None else None
                                      for a in (image, classes, labels))
        if self.augment is not None:
            out = self.augment(image=image, masks=[classes] + ([labels] if labels is not None else []))
            image, classes = out["image"], out["masks"][0]
            labels = out["masks"][1] if labels is not None else None
        return (np.ascontiguousarray(image, np.float32), None if labels is None else np.ascontiguousarray(labels),
                torch.from_numpy(np.ascontiguousarray(classes).astype(np.int64)))


def _padded(array: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((size, size), array.dtype)
    out[:array.shape[0], :array.shape[1]] = array
    return out


class ColumnCollate:
    """Stacks column items into (x, classes), rendering a share of them from their label maps."""

    def __init__(self, synth: SynthConfig | None = None):
        self.synth = synth

    def __call__(self, batch):
        images = _render_share(torch.stack([torch.from_numpy(b[0]) for b in batch]), [b[1] for b in batch], self.synth)
        return images[:, None], torch.stack([b[2] for b in batch])
