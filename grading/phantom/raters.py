"""Simulated expert raters whose labels disagree the way the paper's two surgeons did.

Each rater reads the sac's rootlet packing with noise and a personal bias, so disagreements fall
between adjacent Schizas grades (the paper's Table 3); judges the dorsal epidural fat (C or D)
with noise; and places the conus with a few millimetres of error, so level disagreements cluster
around the cord's end (Table 2).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grading.phantom.anatomy import SliceTruth, grade_of


@dataclass(frozen=True)
class RaterModel:
    name: str
    packing_noise: float  # SD of the rater's reading of the rootlet packing
    packing_bias: float  # + grades more severely
    conus_noise_mm: float
    conus_bias_mm: float  # + places the conus lower (more cord slices)
    random_other: float  # chance of calling a usable slice unusable
    dsca_noise: float  # relative SD of the rater's manual planimetry
    box_jitter: float  # relative SD of the rater's box edges


RATERS = (
    RaterModel("A1", 0.075, -0.015, 5.0, -2.5, 0.01, 0.07, 0.04),
    RaterModel("A2", 0.075, 0.03, 5.0, 3.0, 0.006, 0.07, 0.04),
)


@dataclass
class RaterLabel:
    level: str
    grade: str
    box: tuple[float, float, float, float] | None
    dsca_mm2: float


def rate_series(rater: RaterModel, conus_tip_s: float, truths: list[SliceTruth],
                rng: np.random.Generator) -> list[RaterLabel]:
    """One rater's labels for a series' slices (their truth, in series order)."""
    conus = conus_tip_s + rater.conus_bias_mm + rng.normal(0, rater.conus_noise_mm)
    labels = []
    for truth in truths:
        if truth.level == "other" and (truth.metal or truth.box is None):
            level = "other" if truth.box is None or rng.random() < 0.97 else "rootlet"
        elif rng.random() < rater.random_other:
            level = "other"
        else:
            level = "cord" if truth.s_mm < conus - 4 else "rootlet"
        grade = ""
        if level == "rootlet":
            seen = truth.packing * (1 + rater.packing_bias) + rng.normal(0, rater.packing_noise)
            fat = truth.dorsal_fat_mm2 * rng.lognormal(0, 0.5)
            grade = grade_of(float(seen), float(fat))
        box = truth.box
        if box is not None:
            w, h = box[2] - box[0], box[3] - box[1]
            jitter = rng.normal(0, rater.box_jitter, 4) * np.array([w, h, w, h])
            box = tuple(float(b + j) for b, j in zip(box, jitter))
        labels.append(RaterLabel(level=level, grade=grade, box=box,
                                 dsca_mm2=float(truth.dsca_mm2 * (1 + rng.normal(0, rater.dsca_noise)))))
    return labels
