"""Uncertainty that respects how the data were collected.

Slices cluster within patients (~30 slices each), so treating ~10,000 slices as independent
makes intervals far too narrow. :func:`cluster_bootstrap` resamples patients, not slices: each
replicate's confusion matrix is a sum of whole patients' matrices, computed for all replicates
at once. Cross-validation folds share most of their training data, so a plain paired t-test on
per-fold scores is too confident; :func:`corrected_resampled_ttest` is Nadeau and Bengio's
correction (Machine Learning 2003), which widens the variance by the test/train size ratio.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

N_RESAMPLES = 2000


def _kappas(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unweighted, linear and quadratic Cohen's kappa of a stack of confusion matrices (R, k, k)."""
    k = confusion.shape[-1]
    n = confusion.sum((1, 2))
    rows, cols = confusion.sum(2) / n[:, None], confusion.sum(1) / n[:, None]
    expected = rows[:, :, None] * cols[:, None, :]
    observed = confusion / n[:, None, None]
    out = []
    i, j = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    for weights in (np.eye(k), 1 - np.abs(i - j) / max(k - 1, 1), 1 - ((i - j) / max(k - 1, 1)) ** 2):
        po = (weights * observed).sum((1, 2))
        pe = (weights * expected).sum((1, 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            out.append(np.where(pe < 1, (po - pe) / (1 - pe), np.nan))
    return tuple(out)


def _macro_f1(confusion: np.ndarray) -> np.ndarray:
    diagonal = np.diagonal(confusion, axis1=1, axis2=2)
    totals = confusion.sum(2) + confusion.sum(1)
    used = totals > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(used, 2 * diagonal / totals, 0.0)
    return f1.sum(1) / np.maximum(used.sum(1), 1)


def confusion_metrics(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, macro-F1 (over classes either rater used) and the three kappas, per matrix."""
    confusion = np.asarray(confusion, float)
    if confusion.ndim == 2:
        confusion = confusion[None]
    kappa, linear, quadratic = _kappas(confusion)
    accuracy = np.trace(confusion, axis1=1, axis2=2) / confusion.sum((1, 2))
    return {"accuracy": accuracy, "f1_macro": _macro_f1(confusion), "kappa": kappa, "kappa_linear": linear,
            "kappa_quadratic": quadratic}


def cluster_bootstrap(a: Sequence[str], b: Sequence[str], clusters: Sequence[str], labels: Sequence[str],
                      n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """Percentile 95% intervals for accuracy, macro-F1 and the kappas, resampling clusters
    (patients) with replacement."""
    a, b, clusters = np.asarray(a), np.asarray(b), np.asarray(clusters)
    index = {label: i for i, label in enumerate(labels)}
    k = len(labels)
    patients, which = np.unique(clusters, return_inverse=True)
    per_patient = np.zeros((len(patients), k * k))
    np.add.at(per_patient, (which, [index[x] * k + index[y] for x, y in zip(a, b)]), 1)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(patients), size=(n_resamples, len(patients)))
    counts = np.zeros((n_resamples, len(patients)))
    np.add.at(counts, (np.repeat(np.arange(n_resamples), len(patients)), draws.ravel()), 1)
    replicates = (counts @ per_patient).reshape(n_resamples, k, k)
    out: dict = {"n_patients": int(len(patients)), "n_resamples": int(n_resamples)}
    for name, values in confusion_metrics(replicates).items():
        values = values[np.isfinite(values)]
        out[name] = [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))] if len(values) else None
    return out


def corrected_resampled_ttest(differences: Sequence[float], test_train_ratio: float) -> tuple[float | None, float | None]:
    """Nadeau-Bengio corrected resampled t-test on per-fold differences: t = mean /
    sqrt((1/k + n_test/n_train) * variance), k - 1 degrees of freedom; (t, two-sided P)."""
    d = np.asarray(differences, float)
    k = len(d)
    if k < 2 or np.allclose(d, d[0]):
        return None, None
    t = d.mean() / np.sqrt((1 / k + test_train_ratio) * d.var(ddof=1))
    return float(t), float(2 * stats.t.sf(abs(t), k - 1))
