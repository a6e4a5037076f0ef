"""Where raters' labels live while they work: one SQLite file (standard library), written a
change at a time, safe for several raters labelling the same studies at once.

Every change is its own transaction, committed (synchronous=FULL) before the page hears it was
saved, so a killed server loses nothing. WAL journaling lets several servers, one per rater,
share the file. :meth:`LabelStore.export` writes the SPEC label table, sac masks beside it,
atomically. Boxes and outlines are kept on the stored pixel grid, as the table wants them.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.path import Path as MplPath
from PIL import Image

from grading.labels import LABEL_COLUMNS, write_label_table
from stages.atomic import write_atomic
from stages.vocabulary import GRADES, TABLE_LEVELS

SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    sop_uid TEXT NOT NULL,
    rater TEXT NOT NULL,
    case_id TEXT NOT NULL,
    study_id TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    rows INTEGER NOT NULL,
    columns INTEGER NOT NULL,
    level TEXT NOT NULL,
    grade TEXT NOT NULL,
    box_x0 REAL, box_y0 REAL, box_x1 REAL, box_y1 REAL,
    outline TEXT,
    dsca_mm2 REAL,
    box_source TEXT NOT NULL,
    box_adjusted INTEGER NOT NULL,
    label_source TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (sop_uid, rater)
)
"""
#: Where a box started: the rater's own (drawn, or carried from the slice before), the
#: --assist detector's suggestion, or grade-study's call under review.
BOX_SOURCES = ("rater", "assist", "call")
LABEL_SOURCES = ("rater", "review-confirmed", "review-corrected")
EXTRA_COLUMNS = ("box_source", "box_adjusted", "label_source", "labelled_at")
#: Mask files no row refers to are removed once older than this (another rater's server may
#: have just written one for a row this export has not seen).
STALE_MASK_S = 600.0

Box = tuple[float, float, float, float]


class LabelError(ValueError):
    """A label that cannot be stored as given; the message says why, for the page and the server."""


@dataclass(frozen=True)
class SliceRef:
    """The facts of a slice a stored label carries (stored grid)."""

    sop_uid: str
    case_id: str
    study_id: str
    series_uid: str
    rows: int
    columns: int
    spacing: tuple[float, float]  # (row, column) mm


@dataclass(frozen=True)
class Label:
    """One rater's label of one slice, on the stored pixel grid.

    ``level`` is empty while only a box or outline has been drawn (a draft: saved at once, not
    exported until the rater gives the level).
    """

    level: str
    grade: str = ""
    box: Box | None = None  # pixel-edge coordinates
    outline: list[list[float]] | None = None  # sac outline polygon, pixel-edge (x, y)
    box_source: str = "rater"
    box_adjusted: bool = False
    label_source: str = "rater"


def check_label(label: Label, shape: tuple[int, int]) -> None:
    """Refuse a level or grade outside the vocabulary, a grade on a slice that is not rootlet,
    and a box or outline outside the ``shape`` (rows, columns) image."""
    if label.level and label.level not in TABLE_LEVELS:
        raise LabelError(f"level {label.level!r} is not one of {', '.join(TABLE_LEVELS)}")
    if label.grade and label.grade not in GRADES:
        raise LabelError(f"grade {label.grade!r} is not one of {', '.join(GRADES)}")
    if label.grade and label.level != "rootlet":
        raise LabelError(f"a grade is given to rootlet slices only; this one is {label.level or 'not labelled'}")
    if label.box_source not in BOX_SOURCES:
        raise LabelError(f"box source {label.box_source!r} is not one of {', '.join(BOX_SOURCES)}")
    if label.label_source not in LABEL_SOURCES:
        raise LabelError(f"label source {label.label_source!r} is not one of {', '.join(LABEL_SOURCES)}")
    rows, cols = shape
    if label.box is not None:
        x0, y0, x1, y1 = label.box
        if not all(np.isfinite(label.box)) or not (0 <= x0 < x1 <= cols and 0 <= y0 < y1 <= rows):
            corners = ", ".join(f"{v:.1f}" for v in label.box)
            raise LabelError(f"box ({corners}) is not inside the {cols} x {rows} image")
    if label.outline is not None:
        points = np.asarray(label.outline, float)
        if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3:
            raise LabelError("a sac outline needs at least three (x, y) points")
        if not np.isfinite(points).all() or points.min() < 0 or (points[:, 0] > cols).any() \
                or (points[:, 1] > rows).any():
            raise LabelError(f"the sac outline leaves the {cols} x {rows} image")


def outline_mask(outline: list[list[float]], shape: tuple[int, int]) -> np.ndarray:
    """The pixels whose centres lie inside the polygon (pixel-edge coordinates): the exact
    rule (matplotlib's point-in-path test), where a polygon fill would also take edge pixels."""
    points = np.asarray(outline, float)
    mask = np.zeros(shape, bool)
    c0, r0 = np.floor(points.min(axis=0)).astype(int).clip(0)
    c1, r1 = np.minimum(np.ceil(points.max(axis=0)).astype(int), (shape[1], shape[0]))
    if c1 <= c0 or r1 <= r0:
        return mask
    rows, cols = np.mgrid[r0:r1, c0:c1]
    centres = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1)
    mask[r0:r1, c0:c1] = MplPath(points).contains_points(centres).reshape(rows.shape)
    return mask


def mask_name(sop_uid: str, rater: str, outline: str) -> str:
    """A mask file name that carries no tag value: a digest of what the mask is, so an
    unchanged outline is never written twice and a changed one never overwrites a file a
    table being read may point at."""
    return hashlib.sha256(f"{sop_uid}\x1f{rater}\x1f{outline}".encode()).hexdigest()[:24] + ".png"


class LabelStore:
    """The labels of every rater; one connection per server, guarded by a lock (the server's
    request threads share it)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a committed label survives a killed server
            self._db.execute(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise LabelError(f"{self.path}: not a label store ({exc})") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def save(self, rater: str, ref: SliceRef, label: Label) -> dict:
        """Store one rater's label of one slice (replacing theirs); returns it as stored."""
        check_label(label, (ref.rows, ref.columns))
        outline = None if label.outline is None else json.dumps([[round(x, 2), round(y, 2)] for x, y in label.outline])
        dsca = None
        if label.outline is not None:
            dsca = round(float(outline_mask(label.outline, (ref.rows, ref.columns)).sum()
                               * ref.spacing[0] * ref.spacing[1]), 2)
        box = tuple(round(float(v), 2) for v in label.box) if label.box is not None else (None,) * 4
        values = {"sop_uid": ref.sop_uid, "rater": rater, "case_id": ref.case_id, "study_id": ref.study_id,
                  "series_uid": ref.series_uid, "rows": ref.rows, "columns": ref.columns, "level": label.level,
                  "grade": label.grade, "box_x0": box[0], "box_y0": box[1], "box_x1": box[2], "box_y1": box[3],
                  "outline": outline, "dsca_mm2": dsca, "box_source": label.box_source,
                  "box_adjusted": int(label.box_adjusted), "label_source": label.label_source,
                  "updated_at": time.time()}
        names = ", ".join(values)
        updates = ", ".join(f"{k}=excluded.{k}" for k in values if k not in ("sop_uid", "rater"))
        with self._lock:
            self._db.execute(f"INSERT INTO labels ({names}) VALUES ({', '.join('?' * len(values))}) "
                             f"ON CONFLICT(sop_uid, rater) DO UPDATE SET {updates}", tuple(values.values()))
        return self.get(rater, ref.sop_uid)

    def delete(self, rater: str, sop_uid: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM labels WHERE rater=? AND sop_uid=?", (rater, sop_uid))

    def get(self, rater: str, sop_uid: str) -> dict | None:
        """One rater's label of one slice; never another rater's (the page is blinded)."""
        rows = self._select("WHERE rater=? AND sop_uid=?", (rater, sop_uid))
        return rows[0] if rows else None

    def labels_of(self, rater: str) -> dict[str, dict]:
        """This rater's labels (drafts too) by SOP instance."""
        return {row["sop_uid"]: row for row in self._select("WHERE rater=?", (rater,))}

    def _select(self, where: str = "", parameters: tuple = ()) -> list[dict]:
        with self._lock:
            cursor = self._db.execute(f"SELECT * FROM labels {where}", parameters)
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, values)) for values in cursor.fetchall()]
        for row in rows:
            row["outline"] = None if row["outline"] is None else json.loads(row["outline"])
        return rows

    def export(self, path: Path | str) -> int:
        """Write every rater's finished labels as the SPEC label table (extra columns after the
        SPEC ones), masks beside it in ``<table>_masks/``; returns the number of rows."""
        path = Path(path)
        mask_dir = path.parent / f"{path.stem}_masks"
        rows, referenced = [], set()
        for row in self._select("WHERE level != '' ORDER BY rater, case_id"):
            mask = ""
            if row["outline"]:
                name = mask_name(row["sop_uid"], row["rater"], json.dumps(row["outline"]))
                referenced.add(name)
                if not (mask_dir / name).is_file():
                    picture = outline_mask(row["outline"], (row["rows"], row["columns"]))
                    write_atomic(mask_dir / name, lambda tmp, p=picture: Image.fromarray(
                        p.astype(np.uint8) * 255).save(tmp, format="PNG"))
                mask = f"{mask_dir.name}/{name}"
            rows.append({**{c: row[c] for c in LABEL_COLUMNS if c in row}, "mask": mask,
                         "box_source": row["box_source"] if row["box_x0"] is not None else "",
                         "box_adjusted": row["box_adjusted"] if row["box_x0"] is not None else "",
                         "label_source": row["label_source"],
                         "labelled_at": datetime.fromtimestamp(row["updated_at"], timezone.utc).isoformat(
                             timespec="seconds")})
        write_label_table(pd.DataFrame(rows, columns=[*LABEL_COLUMNS, *EXTRA_COLUMNS]), path)
        _remove_stale_masks(mask_dir, referenced)
        return len(rows)


def _remove_stale_masks(mask_dir: Path, referenced: set[str]) -> None:
    if not mask_dir.is_dir():
        return
    now = time.time()
    for file in mask_dir.glob("*.png"):
        if file.name not in referenced and now - file.stat().st_mtime > STALE_MASK_S:
            file.unlink(missing_ok=True)
