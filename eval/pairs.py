"""Pair two raters' labels case by case, as each agreement task needs them."""
from __future__ import annotations

import pandas as pd

LEVEL_LABELS = ("rootlet", "cord")
GRADE_LABELS = ("A", "B", "C", "D")


class AgreementInputError(ValueError):
    """Tables that cannot be compared as asked (unknown rater, nothing in common, ...)."""


def merge_tables(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """One long table from several (e.g. the raters' labels and a classifier's oof predictions)."""
    merged = pd.concat(tables, ignore_index=True, sort=False)
    duplicated = merged.duplicated(["case_id", "rater"], keep=False)
    if duplicated.any():
        first = merged[duplicated].iloc[0]
        raise AgreementInputError(
            f"duplicate rows for case {first.case_id!r}, rater {first.rater!r} across the tables "
            f"({int(duplicated.sum())} rows in all)"
        )
    return merged


def paired(table: pd.DataFrame, rater_a: str, rater_b: str) -> pd.DataFrame:
    """Cases labelled by both raters: columns ``case_id``, ``<col>_a``, ``<col>_b`` (and ``fold``)."""
    raters = set(table.rater)
    for rater in (rater_a, rater_b):
        if rater not in raters:
            raise AgreementInputError(f"unknown rater {rater!r} (the tables have: {', '.join(sorted(raters))})")
    columns = [c for c in ("case_id", "level", "grade", "dsca_mm2") if c in table.columns]
    a = table.loc[table.rater == rater_a, columns]
    b = table.loc[table.rater == rater_b, columns]
    both = a.merge(b, on="case_id", suffixes=("_a", "_b"))
    if both.empty:
        raise AgreementInputError(f"raters {rater_a!r} and {rater_b!r} have no case_id in common")
    if "fold" in table.columns:
        folds = table.dropna(subset=["fold"]).drop_duplicates("case_id").set_index("case_id").fold
        both["fold"] = both.case_id.map(folds)
    return both.reset_index(drop=True)


def level_pairs(both: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Cases both raters call rootlet or cord; and how many were left out as 'other'."""
    usable = both.level_a.isin(LEVEL_LABELS) & both.level_b.isin(LEVEL_LABELS)
    return both[usable], int((~usable).sum())


def grade_pairs(both: pd.DataFrame) -> pd.DataFrame:
    """Cases both raters call rootlet and both graded (the paper's intersection)."""
    rootlet = (both.level_a == "rootlet") & (both.level_b == "rootlet")
    graded = both.grade_a.isin(GRADE_LABELS) & both.grade_b.isin(GRADE_LABELS)
    bad = both[rootlet & ~graded & (both.grade_a.ne("") & both.grade_b.ne(""))]
    if not bad.empty:
        row = bad.iloc[0]
        raise AgreementInputError(f"case {row.case_id!r}: grade {row.grade_a!r}/{row.grade_b!r} is outside A-D")
    return both[rootlet & graded]


def area_pairs(both: pd.DataFrame) -> pd.DataFrame:
    """Cases where both raters measured the dural sac area."""
    if "dsca_mm2_a" not in both.columns:
        return both.iloc[0:0]
    a = pd.to_numeric(both.dsca_mm2_a, errors="coerce")
    b = pd.to_numeric(both.dsca_mm2_b, errors="coerce")
    return both.assign(dsca_mm2_a=a, dsca_mm2_b=b)[a.notna() & b.notna()]
