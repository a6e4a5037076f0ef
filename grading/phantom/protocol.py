"""A lumbar MRI protocol's series as planes through one patient's anatomy.

Three series share one frame of reference, as on a scanner:

* ``ax_t2``: one contiguous axial stack of 15-46 slices, 4 mm apart, from the lower thoracic
  spine to the sacrum (the paper's data);
* ``ax_t2_angled``: 3-5 slices angled to each lumbar disc, all in one series, as many
  departments acquire them;
* ``sag_t2``: a sagittal stack across the canal, the localizer a radiologist names levels on.

Planes follow DICOM: pixel (r, c) lies at ImagePositionPatient + c x column spacing x row
direction + r x row spacing x column direction. Axial slices have rows towards the patient's
left and columns posterior (anterior up, the patient's right on the image's left); sagittal ones
have rows posterior and columns towards the feet (anterior on the left, head up).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grading.phantom.anatomy import Anatomy, Plane

MATRICES = (256, 320, 384, 448, 512)
X, Y, Z = np.eye(3)


@dataclass(frozen=True)
class SeriesPlan:
    key: str  # folder name and role: ax_t2 | ax_t2_angled | sag_t2
    number: int  # SeriesNumber
    orientation: str  # axial | sagittal
    planes: tuple[Plane, ...]
    thickness: float
    spacing_between: float  # centre to centre (mm)


def _matrix_and_spacing(rng: np.random.Generator, fov_range: tuple[float, float]) -> tuple[int, float]:
    matrix = int(rng.choice(MATRICES))
    spacing = float(np.clip(rng.uniform(*fov_range) / matrix, 0.35, 1.8))
    return matrix, spacing


def _axial_axes(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column directions of an axial plane with this (head-pointing) normal: rows
    towards the patient's left, columns posterior."""
    row = X - (X @ normal) * normal
    row /= np.linalg.norm(row)
    return row, np.cross(normal, row)


def _tilted(normal: np.ndarray, rng: np.random.Generator, sd_deg: float) -> np.ndarray:
    """The normal turned by a small random error, as a technologist's prescription has."""
    angles = np.deg2rad(rng.normal(0, sd_deg, 2))
    rot_x = np.array([[1, 0, 0], [0, np.cos(angles[0]), -np.sin(angles[0])], [0, np.sin(angles[0]), np.cos(angles[0])]])
    rot_y = np.array([[np.cos(angles[1]), 0, np.sin(angles[1])], [0, 1, 0], [-np.sin(angles[1]), 0, np.cos(angles[1])]])
    n = rot_y @ rot_x @ normal
    return n / np.linalg.norm(n)


def _plane(centre: np.ndarray, row: np.ndarray, col: np.ndarray, shape: tuple[int, int], spacing: float,
           thickness: float) -> Plane:
    rows, cols = shape
    origin = centre - (cols - 1) / 2 * spacing * row - (rows - 1) / 2 * spacing * col
    return Plane(origin, row, col, (spacing, spacing), shape, thickness)


def contiguous_axial(anatomy: Anatomy, rng: np.random.Generator, n_slices: int | None = None,
                     matrix: int | None = None) -> SeriesPlan:
    """15-46 slices 4 mm apart ending in the sacrum; longer series reach the cord above the conus."""
    p, line = anatomy.patient, anatomy.line
    drawn_n = int(rng.integers(15, 47))
    n = n_slices or drawn_n
    # Most are spine protocols (190-300 mm); some are abdominal, up to 460 mm (as the Dixon and
    # T2-SPIR abdominal studies that also show the lumbar spine).
    wide = rng.random() < 0.3
    drawn_matrix, spacing = _matrix_and_spacing(rng, (300, 460) if wide else (190, 300))
    if matrix:
        spacing = float(np.clip(spacing * drawn_matrix / matrix, 0.35, 1.8))
    size = matrix or drawn_matrix
    lumbar_last = [v for v in p.vertebrae if v.region == "L"][-1]
    last_s = rng.uniform(lumbar_last.start + 0.5 * lumbar_last.height, p.sacrum.start + 12)
    normal = _tilted(Z, rng, 4.0)
    last = line.at(last_s)[0]
    step = 4.0
    centres = [last + k * step * normal for k in range(n)][::-1]  # head first
    row, col = _axial_axes(normal)
    middle = line.at(float(last_s - 2 * n))[0]
    fov_centre = middle - (rng.uniform(40, 110) if wide else rng.uniform(10, 40)) * col + rng.normal(0, 8) * row
    planes = []
    for c in centres:
        centre = c + ((fov_centre - c) @ row) * row + ((fov_centre - c) @ col) * col
        planes.append(_plane(centre, row, col, (size, size), spacing, 4.0))
    return SeriesPlan("ax_t2", 3, "axial", tuple(planes), 4.0, step)


def angled_axial(anatomy: Anatomy, rng: np.random.Generator) -> SeriesPlan:
    """3-5 slices through each lumbar disc, parallel to it, in one series (caudal disc last)."""
    p, line = anatomy.patient, anatomy.line
    matrix, spacing = _matrix_and_spacing(rng, (170, 240))
    thickness = float(rng.choice([3.0, 3.5, 4.0]))
    step = thickness + float(rng.choice([0.0, 0.3, 0.5]))
    per_disc = int(rng.integers(3, 6))
    shift_ant, shift_lat = rng.uniform(10, 35), rng.normal(0, 6)
    planes = []
    for disc in p.discs:
        if not (disc.name.startswith("L") or disc.name.startswith("T12")):
            continue
        if disc.name.startswith("T12") and rng.random() < 0.7:
            continue  # most protocols start at L1/L2
        centre_s = (disc.start + disc.end) / 2
        c, _, _, w = line.at(centre_s)
        normal = _tilted(w, rng, 2.5)
        row, col = _axial_axes(normal)
        for k in range(per_disc):
            offset = (k - (per_disc - 1) / 2) * step
            centre = c - offset * normal - shift_ant * col + shift_lat * row  # head first within a stack
            planes.append(_plane(centre, row, col, (matrix, matrix), spacing, thickness))
    return SeriesPlan("ax_t2_angled", 4, "axial", tuple(planes), thickness, step)


def sagittal(anatomy: Anatomy, rng: np.random.Generator) -> SeriesPlan:
    """11-17 sagittal slices across the canal, centred on the lower lumbar spine so the view
    reaches from the thoracolumbar junction into the sacrum (S2-S3), as a lumbar protocol's does:
    a locator that only ever sees the top of the sacrum at the image's edge takes a real S1 for a
    lumbar body."""
    p, line = anatomy.patient, anatomy.line
    matrix, spacing = _matrix_and_spacing(rng, (280, 360))
    thickness = float(rng.choice([3.0, 3.5, 4.0]))
    step = thickness + float(rng.choice([0.0, 0.4, 0.8]))
    n = int(rng.choice([11, 13, 15, 17]))
    lumbar = [v for v in p.vertebrae if v.region == "L"]
    middle = lumbar[-2]  # L4 (of five)
    c = line.at((middle.start + middle.end) / 2 + rng.normal(0, 15))[0]
    normal = _tilted(X, rng, 2.0)
    col = -Z + (Z @ normal) * normal
    col /= np.linalg.norm(col)
    row = np.cross(normal, col)  # posterior: columns run front to back
    centre = c - rng.uniform(15, 35) * row + rng.normal(0, 3) * normal
    planes = [_plane(centre + (k - (n - 1) / 2) * step * normal, row, col, (matrix, matrix), spacing, thickness)
              for k in range(n)]
    return SeriesPlan("sag_t2", 2, "sagittal", tuple(planes), thickness, step)
