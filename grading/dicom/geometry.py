"""Slice geometry from ImageOrientationPatient / ImagePositionPatient: one patient frame for
every decision the product makes about where a slice is and which way it faces.

Patient coordinates are DICOM LPS: +x to the patient's left, +y posterior, +z superior. Slice
normals are turned to point along the positive patient axis they are closest to (axial: towards
the head), so the order of slices never depends on the sign a scanner chose for its row and
column directions. Positions are measured at slice centres, not at ImagePositionPatient (the
first pixel's corner, which moves by about FOV/2 x sin(tilt) when a stack is angled).
"""
from __future__ import annotations

import numpy as np

from stages.orientation import DisplayTransform

#: A slice counts as axial / sagittal / coronal when its normal is within this angle of the
#: matching patient axis. Lumbar disc-angled stacks are tilted up to ~30 degrees, so 35 keeps
#: them axial while a 45-degree plane is called oblique.
MAX_TILT_DEG = 35.0

_AXIS_NAMES = ("sagittal", "coronal", "axial")  # normal along x, y, z
#: Display frame per orientation: where the image's columns and rows should run in the patient
#: (axial: columns to the patient's left, rows posterior: anterior up, patient's right on the left;
#: sagittal: columns posterior, rows to the feet; coronal: columns to the left, rows to the feet).
_DISPLAY_AXES = {"axial": (np.array([1.0, 0, 0]), np.array([0, 1.0, 0])),
                 "sagittal": (np.array([0, 1.0, 0]), np.array([0, 0, -1.0])),
                 "coronal": (np.array([1.0, 0, 0]), np.array([0, 0, -1.0]))}


def slice_normal(orientation) -> np.ndarray:
    """Unit normal of a slice from its six direction cosines (row direction, column direction)."""
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row, col)
    norm = np.linalg.norm(normal)
    if norm < 1e-6:
        raise ValueError("ImageOrientationPatient row and column directions are parallel")
    return normal / norm


def canonical(normal: np.ndarray) -> np.ndarray:
    """The normal turned to point along the positive patient axis it is closest to."""
    normal = np.asarray(normal, float)
    return normal if normal[int(np.argmax(np.abs(normal)))] >= 0 else -normal


def classify_orientation(normal: np.ndarray, max_tilt_deg: float = MAX_TILT_DEG) -> str:
    """'axial', 'sagittal', 'coronal' or 'oblique' from a slice normal."""
    normal = np.abs(np.asarray(normal, float))
    axis = int(np.argmax(normal))
    if normal[axis] >= np.cos(np.deg2rad(max_tilt_deg)):
        return _AXIS_NAMES[axis]
    return "oblique"


def mean_normal(normals: np.ndarray) -> np.ndarray:
    """Average slice normal of a series, in the canonical sense (axial: towards the head).

    Multi-stack lumbar series tilt each disc stack differently; the mean normal still orders
    slices head to foot.
    """
    normals = np.array([canonical(n) for n in np.asarray(normals, float)])
    mean = normals.mean(axis=0)
    return canonical(mean / np.linalg.norm(mean))


def slice_centre(position, orientation, spacing: tuple[float, float], shape: tuple[int, int]) -> np.ndarray:
    """Patient coordinates of the centre of a slice (ImagePositionPatient is its first pixel's centre)."""
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    rows, cols = shape
    return (np.asarray(position, float) + (cols - 1) / 2 * spacing[1] * row + (rows - 1) / 2 * spacing[0] * col)


def display_transform(orientation, kind: str | None = None) -> DisplayTransform:
    """The flips and transpose that bring a stored slice to the display frame of its
    orientation (``kind``, default: classified from the normal)."""
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    kind = kind or classify_orientation(slice_normal(orientation))
    want_cols, want_rows = _DISPLAY_AXES.get(kind, _DISPLAY_AXES["axial"])
    transpose = abs(row @ want_cols) < abs(col @ want_cols)
    display_cols, display_rows = (col, row) if transpose else (row, col)
    return DisplayTransform(transpose=bool(transpose), flip_rows=bool(display_rows @ want_rows < 0),
                            flip_cols=bool(display_cols @ want_cols < 0))


def pixel_to_patient(position, orientation, spacing: tuple[float, float], rows: np.ndarray,
                     cols: np.ndarray) -> np.ndarray:
    """Patient coordinates (..., 3) of stored pixel centres (row, column indices)."""
    row_dir, col_dir = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    return (np.asarray(position, float) + np.asarray(cols, float)[..., None] * spacing[1] * row_dir
            + np.asarray(rows, float)[..., None] * spacing[0] * col_dir)
