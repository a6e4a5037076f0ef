"""The agreement study: records for every (task, pair), per fold when folds are known."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from eval.area import area_agreement
from eval.bootstrap import cluster_bootstrap, corrected_resampled_ttest
from eval.classification import bowker_p, categorical_agreement, mcnemar_p, stuart_maxwell_p
from eval.pairs import GRADES, LEVELS, area_pairs, grade_pairs, level_pairs, misses, paired, side_exclusions

MIN_AREA_CASES = 3


def pair_records(table: pd.DataFrame, rater_a: str, rater_b: str) -> list[dict]:
    """The level, grade and (where both measured areas) dsca records for one pair of raters."""
    both = paired(table, rater_a, rater_b)
    head = {"rater_a": rater_a, "rater_b": rater_b}
    records = []
    levels, excluded = level_pairs(both)
    if len(levels):
        record = {"task": "level", **head, **categorical_agreement(levels.level_a, levels.level_b, LEVELS)}
        record["mcnemar_p"] = mcnemar_p(np.asarray(record["confusion"]))
        records.append(_with_folds(_accounted(record, both, levels, excluded, "level"), levels, "level", LEVELS))
    grades = grade_pairs(both)
    if len(grades):
        record = {"task": "grade", **head, **categorical_agreement(grades.grade_a, grades.grade_b, GRADES)}
        confusion = np.asarray(record["confusion"])
        record["stuart_maxwell_p"] = stuart_maxwell_p(confusion)
        record["bowker_p"] = bowker_p(confusion)
        excluded = {"a": side_exclusions(both, "a", "grade"), "b": side_exclusions(both, "b", "grade")}
        records.append(_with_folds(_accounted(record, both, grades, excluded, "grade"), grades, "grade", GRADES))
    areas = area_pairs(both)
    if len(areas) >= MIN_AREA_CASES:
        records.append({"task": "dsca", **head, **area_agreement(areas.dsca_mm2_a, areas.dsca_mm2_b)})
    return records


def _accounted(record: dict, both: pd.DataFrame, scored: pd.DataFrame, excluded: dict, task: str) -> dict:
    """What the paper's intersection leaves out, per side and reason; the accuracy counting the
    second side's detector misses as disagreements; patient-level bootstrap intervals."""
    column = "level" if task == "level" else "grade"
    missed = misses(both, task)
    agree = int((scored[f"{column}_a"] == scored[f"{column}_b"]).sum())
    record["excluded"] = {record["rater_a"]: excluded["a"], record["rater_b"]: excluded["b"]}
    record["misses"] = missed
    record["accuracy_counting_misses"] = agree / (len(scored) + missed) if len(scored) + missed else None
    if "patient" in scored.columns:
        record["bootstrap_ci95"] = cluster_bootstrap(scored[f"{column}_a"], scored[f"{column}_b"], scored["patient"],
                                                     LEVELS if task == "level" else GRADES)
    return record


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


#: Each fold trains on 7 parts and tests on 1 (the paper's 7 / 2 / 1 split).
TEST_TRAIN_RATIO = 1 / 7


def fold_comparisons(records: list[dict], test_train_ratio: float = TEST_TRAIN_RATIO) -> list[dict]:
    """Paired t-tests across folds: the first pair (observer-observer) against each other pair.

    One plausible reading of the paper's P values: does the observer-classifier agreement differ
    from the inter-observer agreement, fold by fold? Beside the paper's plain test, the
    Nadeau-Bengio corrected test, since folds share most of their training data.
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
                    **dict(zip(("corrected_t", "corrected_p"), corrected_resampled_ttest(oth - ref, test_train_ratio))),
                    "test_train_ratio": test_train_ratio,
                })
    return out
