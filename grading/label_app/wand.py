"""A suggested sac outline inside the rater's box, for them to accept or redraw: the bright
(CSF) region nearest the box centre on a T2 slice, split from its surroundings by Otsu's
threshold. No model is involved, so suggesting it does not unblind a rater.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from grading.label_app.catalogue import outline_of


def otsu_threshold(values: np.ndarray, bins: int = 128) -> float:
    """The threshold that maximises the between-class variance of ``values``."""
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    mean_low = np.cumsum(counts * centres) / np.maximum(weight_low, 1)
    mean_high = (np.sum(counts * centres) - np.cumsum(counts * centres)) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centres[int(np.argmax(between))])


def suggest_outline(image: np.ndarray, box: tuple[float, float, float, float]) -> list[list[float]] | None:
    """An outline (pixel-edge coordinates of ``image``) of the bright region in ``box``, or None."""
    rows, cols = image.shape
    c0, r0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    c1, r1 = min(int(np.ceil(box[2])), cols), min(int(np.ceil(box[3])), rows)
    crop = np.asarray(image[r0:r1, c0:c1], np.float32)
    if crop.shape[0] < 3 or crop.shape[1] < 3 or np.ptp(crop) == 0:
        return None
    smooth = ndimage.gaussian_filter(crop, 1.0)  # thermal noise would fray the outline
    bright = ndimage.binary_opening(smooth > otsu_threshold(smooth), iterations=1)
    regions, n = ndimage.label(bright)
    if n == 0:
        return None
    # The sac is large and central: score each region by its area over its distance to the centre.
    index = np.arange(1, n + 1)
    areas = ndimage.sum_labels(np.ones_like(crop), regions, index)
    centroids = np.asarray(ndimage.center_of_mass(np.ones_like(crop), regions, index)).reshape(-1, 2)
    half = np.array(crop.shape) / 2
    distance = np.linalg.norm((centroids - (half - 0.5)) / half, axis=1)
    best = int(index[np.argmax(areas / (0.25 + distance))])
    mask = np.zeros(image.shape, bool)
    mask[r0:r1, c0:c1] = ndimage.binary_fill_holes(regions == best)
    return outline_of(mask)
