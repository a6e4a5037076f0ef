"""Augmentations (albumentations): rotation, scale, translation, horizontal flip, elastic
deformation, Gaussian noise, gamma.

Boxes, sac masks and label maps move with the image (label maps by nearest neighbour). Each
epoch reseeds the pipeline from (seed, epoch), so a resumed run sees the same augmentations as
an uninterrupted one. Flips are left-right only: slices reach the models in the display
orientation (anterior up), where an upside-down canal never occurs.
"""
from __future__ import annotations

import albumentations as A

from stages.configs import AugmentConfig


def _geometric(cfg: AugmentConfig) -> list[A.BasicTransform]:
    return [
        A.Affine(rotate=(-cfg.rotate_deg, cfg.rotate_deg), scale=cfg.scale,
                 translate_percent=(-cfg.translate, cfg.translate), border_mode=0, fill=0, fill_mask=0, p=cfg.p),
        A.ElasticTransform(alpha=12, sigma=6, border_mode=0, fill=0, fill_mask=0, p=cfg.elastic_p),
        A.HorizontalFlip(p=cfg.flip_p),
        A.RandomGamma(gamma_limit=(int(cfg.gamma[0] * 100), int(cfg.gamma[1] * 100)), p=0.5),
        A.GaussNoise(std_range=cfg.noise_std, mean_range=(0.0, 0.0), p=0.5),
    ]


def detection_augment(cfg: AugmentConfig) -> A.Compose:
    """For slices or crops with the canal box (pascal_voc pixel corners) and label maps."""
    return A.Compose(_geometric(cfg), bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"],
                                                               min_visibility=0.6), seed=0)


def column_augment(cfg: AugmentConfig) -> A.Compose:
    """For sagittal slices and their column maps: no flips (anterior stays left, the head up)."""
    return A.Compose([transform for transform in _geometric(cfg) if not isinstance(transform, A.HorizontalFlip)],
                     seed=0)


def patch_augment(cfg: AugmentConfig, size: int) -> A.Compose:
    """For context crops around the canal (and their masks): augment, then crop to ``size``."""
    return A.Compose([*_geometric(cfg), A.CenterCrop(size, size)], seed=0)


def patch_center(size: int) -> A.Compose:
    return A.Compose([A.CenterCrop(size, size)], seed=0)
