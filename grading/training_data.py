"""Turn a label table and a folder of DICOM studies into the slice records the stages train on."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from grading.dicom import SkippedFile, StudyScan, scan_study
from grading.dicom.pixels import load_slice
from stages.preprocessing import Preprocessing, normalise_intensity
from stages.records import SliceRecord


@dataclass
class TrainingData:
    records: list[SliceRecord]
    missing: list[str]  # label rows whose image could not be found or read (one line each)
    skipped: list[SkippedFile]  # files under the image root that are not gradable images


def _box(row) -> tuple[float, float, float, float] | None:
    values = [row.get(c) for c in ("box_x0", "box_y0", "box_x1", "box_y1")]
    if any(v is None or pd.isna(v) for v in values):
        return None
    return tuple(float(v) for v in values)


def _scanned(images_root: Path | str, scan: StudyScan | None, progress: bool) -> StudyScan:
    """The image root's scan: the one given (reading 4000 headers takes seconds), else a fresh one."""
    return scan if scan is not None else scan_study(images_root, progress=progress, verify_pixels=False)


def load_training_data(labels: pd.DataFrame, images_root: Path | str, rater: str, table_dir: Path | str,
                       progress: bool = True, preprocessing: Preprocessing = Preprocessing(),
                       scan: StudyScan | None = None) -> TrainingData:
    """Records for ``rater``'s rows, matched to images by SOP Instance UID (``scan``: of
    ``images_root``, when the caller has one)."""
    rows = labels[labels.rater == rater]
    if rows.empty:
        raise ValueError(f"no rows for rater {rater!r} (the table has: {', '.join(sorted(set(labels.rater)))})")
    scan = _scanned(images_root, scan, progress)
    by_sop = {s.sop_uid: s for series in scan.series for s in series.slices}
    records, missing = [], []
    for row in tqdm(rows.to_dict("records"), desc=f"loading {rater}'s slices", unit="slice", disable=None if progress else True):
        header = by_sop.get(row["sop_uid"])
        if header is None:
            missing.append(f"case {row['case_id']}: no image with SOP Instance UID {row['sop_uid']} under {images_root}")
            continue
        try:
            image = load_slice(header)
        except Exception as exc:  # a bad file is reported, not fatal
            missing.append(f"case {row['case_id']}: {header.path}: {type(exc).__name__}: {exc}")
            continue
        mask = _side_image(row, "mask", table_dir, image.shape, missing)
        label_map = _side_image(row, "label_map", table_dir, image.shape, missing)
        dsca = row.get("dsca_mm2")
        # The table's boxes and masks are on the stored grid; the models see the display frame.
        display = header.display
        box = _box(row)
        records.append(SliceRecord(
            case_id=row["case_id"],
            patient=row["study_id"],
            image=display.apply(normalise_intensity(image, preprocessing)),
            spacing=display.spacing(header.pixel_spacing),
            box=None if box is None else display.box_to_display(box, image.shape),
            level=row["level"],
            grade=row["grade"],
            mask=None if mask is None else display.apply(mask > 0),
            dsca_mm2=None if dsca is None or pd.isna(dsca) else float(dsca),
            label_map=None if label_map is None else display.apply(label_map),
            display=display,
        ))
    return TrainingData(records, missing, scan.skipped)


def load_column_data(table: pd.DataFrame, images_root: Path | str, table_dir: Path | str,
                     preprocessing: Preprocessing = Preprocessing(), max_from_middle: float = 3,
                     progress: bool = True, scan: StudyScan | None = None) -> TrainingData:
    """Sagittal slices near each series' middle, with their column class maps (and label maps),
    in the sagittal display frame: what the level locator learns from."""
    rows = table[table.from_middle.astype(float) <= max_from_middle]
    scan = _scanned(images_root, scan, progress)
    by_sop = {s.sop_uid: s for series in scan.series for s in series.slices}
    records, missing = [], []
    for row in tqdm(rows.to_dict("records"), desc="loading sagittal slices", unit="slice",
                    disable=None if progress else True):
        header = by_sop.get(row["sop_uid"])
        if header is None:
            missing.append(f"case {row['case_id']}: no image with SOP Instance UID {row['sop_uid']} under {images_root}")
            continue
        image = load_slice(header)
        classes = _side_image(row, "classes", table_dir, image.shape, missing)
        if classes is None:
            continue
        label_map = _side_image(row, "label_map", table_dir, image.shape, missing)
        display = header.display
        records.append(SliceRecord(
            case_id=row["case_id"], patient=row["study_id"],
            image=display.apply(normalise_intensity(image, preprocessing)),
            spacing=display.spacing(header.pixel_spacing), box=None, level="other", grade="",
            label_map=None if label_map is None else display.apply(label_map), display=display,
            classes=display.apply(classes)))
    return TrainingData(records, missing, scan.skipped)


def _side_image(row: dict, column: str, table_dir: Path | str, shape: tuple[int, int], missing: list[str]):
    """A PNG the table points at beside the slice (sac mask, label map), or None; a missing or
    mis-sized file is reported, not fatal."""
    if not row.get(column):
        return None
    path = Path(table_dir) / row[column]
    try:
        array = np.asarray(Image.open(path))
    except OSError as exc:
        missing.append(f"case {row['case_id']}: {column} {row[column]}: {exc}")
        return None
    if array.shape != shape:
        missing.append(f"case {row['case_id']}: {column} {row[column]} is {array.shape}, image is {shape}")
        return None
    return array
