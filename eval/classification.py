"""Agreement between two raters' categorical labels: the paper's Table 4 figures and more."""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
)
from statsmodels.stats.contingency_tables import SquareTable, mcnemar
from statsmodels.stats.inter_rater import cohens_kappa
from statsmodels.tools.sm_exceptions import SingularMatrixWarning


def _nan_to_none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def kappa(confusion: np.ndarray, weights: str | None = None) -> tuple[float | None, float | None, float | None]:
    """Cohen's kappa (unweighted, 'linear' or 'quadratic') with its asymptotic 95% CI.

    None where kappa is undefined (both raters used a single category).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        result = cohens_kappa(confusion, wt=weights) if weights else cohens_kappa(confusion)
        values = (result.kappa, result.kappa_low, result.kappa_upp)
    return tuple(_nan_to_none(float(v)) for v in values)


def paired_ttest(codes_a: np.ndarray, codes_b: np.ndarray) -> tuple[float | None, float | None]:
    """Paired t-test on label codes: does one rater systematically call higher codes?"""
    if len(codes_a) < 2 or np.all(codes_a == codes_b):
        return None, None  # no differences: the test is undefined
    t, p = stats.ttest_rel(codes_a, codes_b)
    return _nan_to_none(t), _nan_to_none(p)


def _used(confusion: np.ndarray) -> np.ndarray:
    """Categories either rater used; the marginal-homogeneity tests are singular otherwise."""
    return (confusion.sum(axis=0) + confusion.sum(axis=1)) > 0


def stuart_maxwell_p(confusion: np.ndarray) -> float | None:
    used = _used(confusion)
    if used.sum() < 2:
        return None
    # statsmodels answers a singular covariance with chi2 = inf (P = 0); the test is undefined there.
    with warnings.catch_warnings():
        warnings.simplefilter("error", SingularMatrixWarning)
        try:
            return _nan_to_none(SquareTable(confusion[np.ix_(used, used)], shift_zeros=False).homogeneity().pvalue)
        except (np.linalg.LinAlgError, SingularMatrixWarning):
            return None


def bowker_p(confusion: np.ndarray) -> float | None:
    """Bowker's symmetry test (statsmodels): df = k(k-1)/2 over the categories used, empty
    off-diagonal pairs included (SAS drops them from df; statsmodels and Bowker's paper do not)."""
    used = _used(confusion)
    if used.sum() < 2:
        return None
    return _nan_to_none(SquareTable(confusion[np.ix_(used, used)], shift_zeros=False).symmetry().pvalue)


def mcnemar_p(confusion: np.ndarray) -> float | None:
    """McNemar's test; exact binomial when there are few discordant cases."""
    discordant = confusion[0, 1] + confusion[1, 0]
    if discordant == 0:
        return None
    return float(mcnemar(confusion, exact=discordant < 25, correction=True).pvalue)


def categorical_agreement(a: Sequence[str], b: Sequence[str], labels: Sequence[str]) -> dict:
    """Confusion matrix (rows ``a``, columns ``b``), accuracy, per-class and macro F1, kappas, t-test.

    Precision and recall take ``a`` as the reference. ``f1_macro`` is the unweighted mean over
    the classes either rater used: the paper's F-score.
    """
    a, b, labels = np.asarray(a), np.asarray(b), list(labels)
    confusion = confusion_matrix(a, b, labels=labels)
    precision, recall, f1, support = precision_recall_fscore_support(a, b, labels=labels, zero_division=0)
    used = (confusion.sum(axis=0) + confusion.sum(axis=1)) > 0  # a class neither rater used has no F1
    codes = {label: i for i, label in enumerate(labels)}
    t, p = paired_ttest(np.vectorize(codes.get)(a), np.vectorize(codes.get)(b))
    k, k_low, k_high = kappa(confusion)
    return {
        "n": int(len(a)),
        "accuracy": float(accuracy_score(a, b)),
        "f1_macro": float(np.mean(f1[used])) if used.any() else None,
        "kappa": k,
        "kappa_linear": kappa(confusion, "linear")[0] if len(labels) > 2 else k,
        "kappa_quadratic": kappa(confusion, "quadratic")[0] if len(labels) > 2 else k,
        "kappa_ci95": [k_low, k_high],
        "ttest_t": t,
        "ttest_p": p,
        "per_class": {
            label: {"precision": float(pr), "recall": float(rc), "f1": float(f), "support": int(s)}
            for label, pr, rc, f, s in zip(labels, precision, recall, f1, support)
        },
        "labels": labels,
        "confusion": confusion.tolist(),
    }
