"""Bilinear enlargement of small smooth maps (coordinates, noise fields, coil sensitivity).

Two small interpolation matrices, one per axis (corners aligned, as ``align_corners=True``): the
enlargement is two matrix products, with no torch import in the phantom, whose start-up alone cost
grade-phantom seconds.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=64)
def _weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32: each output sample from its two neighbours, end samples aligned."""
    weights = np.zeros((n_out, n_in), np.float32)
    if n_in == 1 or n_out == 1:
        weights[:, 0] = 1.0
    else:
        _fill(weights)
    weights.setflags(write=False)  # shared by every caller through the cache
    return weights


def _fill(weights: np.ndarray) -> None:
    n_out, n_in = weights.shape
    source = np.arange(n_out, dtype=np.float64) * ((n_in - 1) / (n_out - 1))
    lo = np.minimum(np.floor(source).astype(np.intp), n_in - 2)
    frac = (source - lo).astype(np.float32)
    rows = np.arange(n_out)
    weights[rows, lo] = 1.0 - frac
    weights[rows, lo + 1] += frac


def upsample_bilinear(small: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``small`` (..., h, w) enlarged to (..., *shape), float32."""
    small = np.asarray(small, np.float32)
    rows, cols = _weights(small.shape[-2], int(shape[0])), _weights(small.shape[-1], int(shape[1]))
    return rows @ small @ cols.T
