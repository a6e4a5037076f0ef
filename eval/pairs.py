"""Pair two raters' labels case by case, as each agreement task needs them."""
from __future__ import annotations

import pandas as pd

from stages.vocabulary import FROM_LABELS, GRADES, LEVELS, NO_CANAL


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
    columns = [c for c in ("case_id", "study_id", "level", "grade", "dsca_mm2", "status", "level_source")
               if c in table.columns]
    a = table.loc[table.rater == rater_a, columns]
    b = table.loc[table.rater == rater_b, columns]
    both = a.merge(b, on="case_id", suffixes=("_a", "_b"))
    for side in ("a", "b"):  # raters' own labels have neither column: a rater's level is its own
        for column in ("status", "level_source"):
            if f"{column}_{side}" not in both.columns:
                both[f"{column}_{side}"] = ""
        both[f"status_{side}"] = both[f"status_{side}"].fillna("")
        both[f"level_source_{side}"] = both[f"level_source_{side}"].fillna("")
    if "study_id_a" in both.columns:
        both["patient"] = both["study_id_a"].where(both["study_id_a"].astype(str) != "", both.get("study_id_b"))
    if both.empty:
        raise AgreementInputError(f"raters {rater_a!r} and {rater_b!r} have no case_id in common")
    if "fold" in table.columns:
        both["fold"] = both.case_id.map(_folds(table, rater_a, rater_b))
    return both.reset_index(drop=True)


def side_exclusions(both: pd.DataFrame, side: str, task: str) -> dict[str, int]:
    """Why one side of a pair could not be scored, counted per reason."""
    level, status, source = both[f"level_{side}"], both[f"status_{side}"], both[f"level_source_{side}"]
    counts = {NO_CANAL: int((status == NO_CANAL).sum()),
              "other": int(((level == "other") & (status != NO_CANAL)).sum())}
    if task == "level":
        counts["level copied from labels"] = int((source == FROM_LABELS).sum())
    else:
        counts["cord"] = int((level == "cord").sum())
    return {reason: n for reason, n in counts.items() if n}


def _folds(table: pd.DataFrame, rater_a: str, rater_b: str) -> pd.Series:
    """Each case's test fold: the one the pair's classifier was tested in (its second rater,
    A1:C1, else its first); for two raters, the cohort's fold, which every classifier shares."""
    with_fold = table.dropna(subset=["fold"])
    for rater in (rater_b, rater_a):
        own = with_fold[with_fold.rater == rater]
        if len(own):
            return own.drop_duplicates("case_id").set_index("case_id").fold
    per_case = with_fold.groupby("case_id").fold.nunique()
    if (per_case > 1).any():
        case = per_case[per_case > 1].index[0]
        raise AgreementInputError(f"case {case!r} was tested in different folds by different classifiers: plan the "
                                  "splits once per cohort (grade-train's splits_final.json) and train every rater on them")
    return with_fold.drop_duplicates("case_id").set_index("case_id").fold


def level_pairs(both: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Cases both sides call rootlet or cord on their own (a level copied from the labels is
    never scored), and what was left out on each side and why."""
    usable = both.level_a.isin(LEVELS) & both.level_b.isin(LEVELS)
    usable &= (both.level_source_a != FROM_LABELS) & (both.level_source_b != FROM_LABELS)
    return both[usable], {"a": side_exclusions(both, "a", "level"), "b": side_exclusions(both, "b", "level")}


def grade_pairs(both: pd.DataFrame) -> pd.DataFrame:
    """Cases both raters call rootlet and both graded (the paper's intersection)."""
    rootlet = (both.level_a == "rootlet") & (both.level_b == "rootlet")
    graded = both.grade_a.isin(GRADES) & both.grade_b.isin(GRADES)
    bad = both[rootlet & ~graded & (both.grade_a.ne("") & both.grade_b.ne(""))]
    if not bad.empty:
        row = bad.iloc[0]
        raise AgreementInputError(f"case {row.case_id!r}: grade {row.grade_a!r}/{row.grade_b!r} is outside A-D")
    return both[rootlet & graded]


def misses(both: pd.DataFrame, task: str) -> int:
    """Cases the first rater could score but the second side never labelled because its detector
    found no canal: counted as disagreements in the figure beside the paper's."""
    usable_a = both.level_a.isin(LEVELS) if task == "level" else both.level_a == "rootlet"
    return int((usable_a & (both.status_b == NO_CANAL)).sum())


def area_pairs(both: pd.DataFrame) -> pd.DataFrame:
    """Cases where both raters measured the dural sac area."""
    if "dsca_mm2_a" not in both.columns:
        return both.iloc[0:0]
    a = pd.to_numeric(both.dsca_mm2_a, errors="coerce")
    b = pd.to_numeric(both.dsca_mm2_b, errors="coerce")
    return both.assign(dsca_mm2_a=a, dsca_mm2_b=b)[a.notna() & b.notna()]
