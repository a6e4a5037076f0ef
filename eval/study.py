"""The agreement study: records for every (task, pair), per fold when folds are known."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from eval.area import area_agreement
from eval.classification import (
    bowker_p,
    categorical_agreement,
    mcnemar_p,
    stuart_maxwell_p,
)
from eval.pairs import (
    GRADE_LABELS,
    LEVEL_LABELS,
    area_pairs,
    grade_pairs,
    level_pairs,
    paired,
)

MIN_AREA_CASES = 3


def pair_records(table: pd.DataFrame, rater_a: str, rater_b: str) -> list[dict]:
    """The level, grade and (where both measured areas) dsca records for one pair of raters."""
    both = paired(table, rater_a, rater_b)
    head = {"rater_a": rater_a, "rater_b": rater_b}
    records = []
    levels, n_other = level_pairs(both)
    if len(levels):
        record = {"task": "level", **head, **categorical_agreement(levels.level_a, levels.level_b, LEVEL_LABELS)}
        record["mcnemar_p"] = mcnemar_p(np.asarray(record["confusion"]))
        record["n_other_excluded"] = n_other
        records.append(_with_folds(record, levels, "level", LEVEL_LABELS))
    grades = grade_pairs(both)
    if len(grades):
        record = {"task": "grade", **head, **categorical_agreement(grades.grade_a, grades.grade_b, GRADE_LABELS)}
        confusion = np.asarray(record["confusion"])
        record["stuart_maxwell_p"] = stuart_maxwell_p(confusion)
        record["bowker_p"] = bowker_p(confusion)
        records.append(_with_folds(record, grades, "grade", GRADE_LABELS))
    areas = area_pairs(both)
    if len(areas) >= MIN_AREA_CASES:
        records.append({"task": "dsca", **head, **area_agreement(areas.dsca_mm2_a, areas.dsca_mm2_b)})
    return records


def _with_folds(record: dict, cases: pd.DataFrame, task: str, labels: Sequence[str]) -> dict:
    if "fold" not in cases.columns or cases.fold.isna().all():
        return record
    column = "level" if task == "level" else "grade"
    record["per_fold"] = {
        str(int(fold)): {
            "n": len(group),
            "accuracy": float((group[f"{column}_a"] == group[f"{column}_b"]).mean()),
            "f1_macro": categorical_agreement(group[f"{column}_a"], group[f"{column}_b"], labels)["f1_macro"],
        }
        for fold, group in cases.dropna(subset=["fold"]).groupby("fold")
    }
    return record


def agreement_study(table: pd.DataFrame, pairs: Sequence[tuple[str, str]]) -> list[dict]:
    """agreement.json: one record per (task, pair), in the order the pairs were asked for."""
    return [record for a, b in pairs for record in pair_records(table, a, b)]


def fold_comparisons(records: list[dict]) -> list[dict]:
    """Paired t-tests across folds: the first pair (observer-observer) against each other pair.

    One plausible reading of the paper's P values: does the observer-classifier agreement differ
    from the inter-observer agreement, fold by fold?
    """
    out = []
    for task in ("level", "grade"):
        with_folds = [r for r in records if r["task"] == task and "per_fold" in r]
        if len(with_folds) < 2:
            continue
        reference = with_folds[0]
        for other in with_folds[1:]:
            folds = sorted(set(reference["per_fold"]) & set(other["per_fold"]), key=int)
            for metric in ("accuracy", "f1_macro"):
                ref = np.array([reference["per_fold"][f][metric] for f in folds])
                oth = np.array([other["per_fold"][f][metric] for f in folds])
                t, p = (stats.ttest_rel(oth, ref) if len(folds) > 1 and np.any(ref != oth) else (np.nan, np.nan))
                out.append({
                    "task": task,
                    "metric": metric,
                    "reference": f"{reference['rater_a']}:{reference['rater_b']}",
                    "compared": f"{other['rater_a']}:{other['rater_b']}",
                    "n_folds": len(folds),
                    "mean_difference": float((oth - ref).mean()) if folds else None,
                    "ttest_t": None if np.isnan(t) else float(t),
                    "ttest_p": None if np.isnan(p) else float(p),
                })
    return out
