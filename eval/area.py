"""Agreement between two raters' dural sac areas (mm²)."""
from __future__ import annotations

import numpy as np
from scipy import stats


def icc_2_1(ratings: np.ndarray) -> float:
    """ICC(2,1) of Shrout & Fleiss (1979): two-way random effects, absolute agreement, one rater.

    ``ratings`` is targets x raters. Written out because neither statsmodels nor scikit-learn has it.
    """
    y = np.asarray(ratings, float)
    n, k = y.shape
    grand = y.mean()
    ss_rows = k * ((y.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((y.mean(axis=0) - grand) ** 2).sum()
    ss_error = ((y - grand) ** 2).sum() - ss_rows - ss_cols
    bms, jms = ss_rows / (n - 1), ss_cols / (k - 1)
    ems = ss_error / ((n - 1) * (k - 1))
    return float((bms - ems) / (bms + (k - 1) * ems + k * (jms - ems) / n))


def area_agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """MAE, Pearson r, Bland-Altman bias (b - a) and 95% limits of agreement, ICC(2,1)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = b - a
    sd = float(np.std(diff, ddof=1)) if len(diff) > 1 else float("nan")
    bias = float(diff.mean())
    return {
        "n": int(len(a)),
        "mae_mm2": float(np.abs(diff).mean()),
        "pearson_r": float(stats.pearsonr(a, b)[0]) if len(a) > 2 and a.std() > 0 and b.std() > 0 else None,
        "bias_mm2": bias,
        "loa_low_mm2": bias - 1.96 * sd,
        "loa_high_mm2": bias + 1.96 * sd,
        "icc": icc_2_1(np.column_stack([a, b])) if len(a) > 2 else None,
    }
