"""Augmentations (albumentations): rotation, scale, translation, horizontal flip, Gaussian noise.

Boxes and masks move with the image. Each epoch reseeds the pipeline from (seed, epoch), so a
resumed run sees the same augmentations as an uninterrupted one.
"""
from __future__ import annotations

from dataclasses import dataclass

import albumentations as A


@dataclass(frozen=True)
class AugmentConfig:
    rotate_deg: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.06  # fraction of the image side
    flip_p: float = 0.5
    noise_std: tuple[float, float] = (0.01, 0.05)  # zero-mean Gaussian, fraction of the intensity range
    p: float = 0.8


def _geometric(cfg: AugmentConfig) -> list[A.BasicTransform]:
    return [
        A.Affine(rotate=(-cfg.rotate_deg, cfg.rotate_deg), scale=cfg.scale,
                 translate_percent=(-cfg.translate, cfg.translate), border_mode=0, fill=0, fill_mask=0, p=cfg.p),
        A.HorizontalFlip(p=cfg.flip_p),
        A.GaussNoise(std_range=cfg.noise_std, mean_range=(0.0, 0.0), p=0.5),
    ]


def detection_augment(cfg: AugmentConfig) -> A.Compose:
    """For whole slices with the canal box (pascal_voc pixel corners)."""
    return A.Compose(_geometric(cfg), bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"],
                                                               min_visibility=0.6), seed=0)


def patch_augment(cfg: AugmentConfig, size: int) -> A.Compose:
    """For context crops around the canal (and their sac masks): augment, then crop to ``size``."""
    return A.Compose([*_geometric(cfg), A.CenterCrop(size, size)], seed=0)


def patch_center(size: int) -> A.Compose:
    return A.Compose([A.CenterCrop(size, size)], seed=0)
