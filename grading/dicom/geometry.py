"""Slice geometry from ImageOrientationPatient / ImagePositionPatient.

Patient coordinates are DICOM LPS: +x to the patient's left, +y posterior, +z superior.
"""
from __future__ import annotations

import numpy as np

#: A slice counts as axial / sagittal / coronal when its normal is within this angle of the
#: matching patient axis. Lumbar disc-angled stacks are tilted up to ~30 degrees, so 35 keeps
#: them axial while a 45-degree plane is called oblique.
MAX_TILT_DEG = 35.0

_AXIS_NAMES = ("sagittal", "coronal", "axial")  # normal along x, y, z


def slice_normal(orientation: np.ndarray) -> np.ndarray:
    """Unit normal of a slice from its six direction cosines (row direction, column direction)."""
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row, col)
    norm = np.linalg.norm(normal)
    if norm < 1e-6:
        raise ValueError("ImageOrientationPatient row and column directions are parallel")
    return normal / norm


def classify_orientation(normal: np.ndarray, max_tilt_deg: float = MAX_TILT_DEG) -> str:
    """'axial', 'sagittal', 'coronal' or 'oblique' from a slice normal."""
    normal = np.abs(np.asarray(normal, float))
    axis = int(np.argmax(normal))
    if normal[axis] >= np.cos(np.deg2rad(max_tilt_deg)):
        return _AXIS_NAMES[axis]
    return "oblique"


def mean_normal(normals: np.ndarray) -> np.ndarray:
    """Average slice normal of a series, sign-aligned to the first slice.

    Multi-stack lumbar series tilt each disc stack differently; the mean normal still orders
    slices head to foot.
    """
    normals = np.asarray(normals, float)
    signs = np.sign(normals @ normals[0])
    signs[signs == 0] = 1.0
    mean = (normals * signs[:, None]).mean(axis=0)
    return mean / np.linalg.norm(mean)
