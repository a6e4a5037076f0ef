"""Simulated expert raters whose labels disagree the way the paper's two surgeons did.

Each rater reads the latent stenosis severity with noise and a personal bias, so disagreements
fall between adjacent Schizas grades (the paper's Table 3), and places the conus with a few
millimetres of error, so level disagreements cluster around the cord's end (Table 2).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grading.phantom.anatomy import SliceAnatomy, Spine, grade_of


@dataclass(frozen=True)
class RaterModel:
    name: str
    severity_noise: float  # SD of the rater's reading of the latent severity (0..1)
    severity_bias: float  # + grades more severely
    conus_noise_mm: float
    conus_bias_mm: float  # + places the conus lower (more cord slices)
    random_other: float  # chance of calling a usable slice unusable
    dsca_noise: float  # relative SD of the rater's manual planimetry
    box_jitter: float  # relative SD of the rater's box edges


RATERS = (
    RaterModel("A1", 0.06, -0.012, 5.0, -2.5, 0.01, 0.07, 0.04),
    RaterModel("A2", 0.06, 0.022, 5.0, 3.0, 0.006, 0.07, 0.04),
)


@dataclass
class RaterLabel:
    level: str
    grade: str
    box: tuple[float, float, float, float]
    dsca_mm2: float


def rate_series(
    rater: RaterModel,
    spine: Spine,
    anatomy: list[SliceAnatomy],
    boxes: list[tuple[float, float, float, float]],
    rng: np.random.Generator,
) -> list[RaterLabel]:
    conus = spine.conus_tip + rater.conus_bias_mm + rng.normal(0, rater.conus_noise_mm)
    labels = []
    for anat, box in zip(anatomy, boxes):
        if anat.metal and rng.random() < 0.97:
            level = "other"
        elif rng.random() < rater.random_other:
            level = "other"
        else:
            level = "cord" if anat.s < conus else "rootlet"
        grade = ""
        if level == "rootlet":
            seen = anat.severity + rater.severity_bias + rng.normal(0, rater.severity_noise)
            grade = grade_of(float(np.clip(seen, 0, 1)))
        w, h = box[2] - box[0], box[3] - box[1]
        jitter = rng.normal(0, rater.box_jitter, 4) * np.array([w, h, w, h])
        labels.append(
            RaterLabel(
                level=level,
                grade=grade,
                box=tuple(float(b + j) for b, j in zip(box, jitter)),
                dsca_mm2=float(anat.dsca_mm2 * (1 + rng.normal(0, rater.dsca_noise))),
            )
        )
    return labels
