"""The SPEC label table: one row per slice and rater, read and validated with row-level errors."""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

import pandas as pd

from stages.atomic import write_atomic
from stages.vocabulary import GRADES, TABLE_LEVELS

LABEL_COLUMNS = (
    "case_id", "study_id", "series_uid", "sop_uid", "rater", "level", "grade",
    "box_x0", "box_y0", "box_x1", "box_y1", "mask", "dsca_mm2",
)
BOX_COLUMNS = ("box_x0", "box_y0", "box_x1", "box_y1")
#: What grade-agreement needs; training needs the full set up to ``grade``.
AGREEMENT_COLUMNS = ("case_id", "rater", "level", "grade")
TRAINING_COLUMNS = LABEL_COLUMNS[:7]


class LabelTableError(ValueError):
    """A label table with problems; ``problems`` holds one line per bad cell."""

    def __init__(self, path: Path | str, problems: Sequence[str]):
        self.path, self.problems = Path(path), list(problems)
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        super().__init__(f"{path}: {problems[0]}{more}")


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def validate_labels(table: pd.DataFrame, required: Iterable[str] = AGREEMENT_COLUMNS) -> list[str]:
    """Every problem in the table, as 'line N, column C: ...' (line 1 is the header)."""
    missing = [c for c in required if c not in table.columns]
    if missing:
        return [f"missing column(s) {', '.join(missing)}"]
    problems = []

    def bad(i: int, column: str, message: str) -> None:
        problems.append(f"line {i + 2}, column {column}: {message}")

    for i, row in enumerate(table.to_dict("records")):
        for column in ("case_id", "rater"):
            if column in row and not row[column].strip():
                bad(i, column, "empty")
        level, grade = row.get("level", ""), row.get("grade", "")
        if "level" in row and level not in TABLE_LEVELS:
            bad(i, "level", f"{level!r} is not one of {', '.join(TABLE_LEVELS)}")
        if "grade" in row and grade and grade not in GRADES:
            bad(i, "grade", f"{grade!r} is not one of {', '.join(GRADES)} (or empty)")
        elif grade and level in ("cord", "other"):
            bad(i, "grade", f"{grade!r} given for a {level} slice; grades are for rootlet slices only")
        box_values = [row.get(c, "") for c in BOX_COLUMNS]
        if any(box_values):
            numbers = [_number(v) for v in box_values]
            if any(n is None for n in numbers):
                column = BOX_COLUMNS[numbers.index(None)]
                bad(i, column, f"{row.get(column, '')!r} is not a number (give all four box corners or none)")
            elif numbers[2] <= numbers[0] or numbers[3] <= numbers[1]:
                bad(i, "box_x1", f"box {numbers} has x1 <= x0 or y1 <= y0")
        dsca = row.get("dsca_mm2", "")
        if dsca and (_number(dsca) is None or _number(dsca) < 0):
            bad(i, "dsca_mm2", f"{dsca!r} is not a non-negative number")
        for column in ("mask", "label_map"):
            path = row.get(column, "")
            if path and (PurePosixPath(path).is_absolute() or ".." in PurePosixPath(path).parts):
                bad(i, column, f"{path!r} must be a path inside the table's folder")
        fold = row.get("fold", "")
        if fold and not fold.lstrip("-").isdigit():
            bad(i, "fold", f"{fold!r} is not an integer")
    if {"case_id", "rater"} <= set(table.columns):
        duplicated = table.duplicated(["case_id", "rater"], keep="first")
        for i in duplicated[duplicated].index:
            bad(int(i), "case_id", f"duplicate row for case {table.at[i, 'case_id']!r}, rater {table.at[i, 'rater']!r}")
    return problems


def read_label_table(path: Path | str, required: Iterable[str] = AGREEMENT_COLUMNS) -> pd.DataFrame:
    """Read and validate; raise :class:`LabelTableError` naming the first bad cell.

    Text columns stay text (empty, not NaN); numeric columns are converted after validation.
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError:
        raise LabelTableError(path, ["no such file"]) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise LabelTableError(path, [f"not a readable CSV ({exc})"]) from None
    table.columns = [c.strip() for c in table.columns]
    table = table.apply(lambda column: column.str.strip())
    problems = validate_labels(table, required)
    if problems:
        raise LabelTableError(path, problems)
    for column in (*BOX_COLUMNS, "dsca_mm2"):
        if column in table.columns:
            table[column] = pd.to_numeric(table[column].replace("", None), errors="coerce")
    if "fold" in table.columns:
        table["fold"] = pd.to_numeric(table["fold"].replace("", None), errors="coerce").astype("Int64")
    table.attrs["path"] = str(path)
    return table


def write_label_table(rows: Sequence[dict] | pd.DataFrame, path: Path | str) -> None:
    """Write atomically with the SPEC columns first (extra columns, e.g. ``fold``, after)."""
    path = Path(path)
    table = pd.DataFrame(rows)
    columns = [c for c in LABEL_COLUMNS if c in table.columns] + [c for c in table.columns if c not in LABEL_COLUMNS]
    write_atomic(path, lambda tmp: table[columns].to_csv(tmp, index=False))
