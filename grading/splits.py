"""Cross-validation splits planned once per cohort from its label table, kept beside it.

Every rater's ``grade-train`` reads the same ``splits_final.json``: Classifier1 and
Classifier2 are tested on the same patients, so the agreement study compares them case for
case. The plan is stratified on all raters' labels at once (each slice's most severe grade any
rater gave, else its level) and grouped by ``study_id``, which must be filled in.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from stages.folds import FoldPlan, SplitsError, plan_folds
from stages.vocabulary import GRADES

DEFAULT_NAME = "splits_final.json"


def _stratum(rows: pd.DataFrame) -> str:
    grades = [g for g in rows.grade if g in GRADES]
    if grades:
        return max(grades, key=GRADES.index)
    return rows.level.mode().iloc[0]


def plan_cohort(labels: pd.DataFrame, n_folds: int, seed: int) -> FoldPlan:
    if "study_id" not in labels.columns:
        raise SplitsError("the label table has no study_id column: folds are planned per patient")
    empty = labels[labels.study_id.astype(str).str.strip() == ""]
    if len(empty):
        raise SplitsError(f"case {empty.case_id.iloc[0]!r} has an empty study_id: folds are planned per patient, "
                          "so every slice must say whose it is")
    per_case = labels.groupby("case_id", sort=True)
    patients = per_case.study_id.first()
    strata = per_case.apply(_stratum, include_groups=False)
    return plan_folds(list(patients), list(strata.loc[patients.index]), n_folds, seed)


def ensure_splits(labels: pd.DataFrame, path: Path | str, n_folds: int, seed: int) -> FoldPlan:
    """The cohort's plan from ``path``, planned and written there first if it does not exist."""
    path = Path(path)
    if path.is_file():
        plan = FoldPlan.load(path)
        if plan.n_folds != n_folds:
            raise SplitsError(f"{path} plans {plan.n_folds} folds, not {n_folds}: pass --folds {plan.n_folds}, "
                              "or --splits with another file")
        plan.check_covers(set(labels.study_id), str(path))
        return plan
    plan = plan_cohort(labels, n_folds, seed)
    plan.save(path)
    return plan
