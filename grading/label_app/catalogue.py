"""The slices a labelling session shows: the axial series of the studies named on the command
line (or the graded series of a study under review), in series order, each with an opaque id.

Only these files are ever read: the server serves slices by id, never by path. Pixels go to the
page in the display frame (anterior up, the patient's right on the left), as the models see
them; boxes and outlines come back in that frame and are stored on the stored pixel grid.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import contourpy
import numpy as np
import pandas as pd
import pydicom

from grading.deidentify import study_pseudonym
from grading.dicom import scan_study
from grading.dicom.pixels import load_slice
from grading.dicom.series import SliceHeader
from stages.preprocessing import normalise_intensity

#: Display values are sent as 16-bit integers: normalised intensity (0..~1.5) times this.
DISPLAY_SCALE = 16384


class CatalogueError(ValueError):
    """A study or graded folder that cannot be labelled; the message says why."""


class SliceGone(Exception):
    """A slice whose image file can no longer be read (moved or deleted since the session began)."""


@dataclass(frozen=True)
class Call:
    """grade-study's call on one slice, in the display frame, for a surgeon to confirm or correct."""

    level: str  # rootlet | cord | no canal
    grade: str
    level_name: str
    box: tuple[float, float, float, float] | None
    outline: list[list[float]] | None
    dsca_mm2: float | None

    def to_json(self) -> dict:
        return {"level": self.level, "grade": self.grade, "level_name": self.level_name,
                "box": self.box, "outline": self.outline, "dsca_mm2": self.dsca_mm2}


@dataclass
class Slice:
    id: int
    header: SliceHeader
    case_id: str
    study_id: str
    study_index: int  # which study on the command line
    position: int  # 1-based place in its series
    call: Call | None = None
    _pixels: np.ndarray | None = field(default=None, repr=False)

    @property
    def stored_shape(self) -> tuple[int, int]:
        return (self.header.rows, self.header.columns)

    @property
    def display_shape(self) -> tuple[int, int]:
        return self.header.display.display_shape(self.stored_shape)

    def info(self) -> dict:
        """What the page needs to know of a slice: no tag values beyond the pseudonymous ids."""
        rows, cols = self.display_shape
        row_mm, col_mm = self.header.display.spacing(self.header.pixel_spacing)
        return {"id": self.id, "study": self.study_index, "position": self.position, "case_id": self.case_id,
                "rows": rows, "columns": cols, "row_mm": row_mm, "column_mm": col_mm}

    def display_pixels(self) -> np.ndarray:
        """The slice in the display frame as little-endian uint16 (normalised x DISPLAY_SCALE), cached."""
        if self._pixels is None:
            try:
                image = load_slice(self.header)
            except Exception as exc:  # decoders raise many types; any of them means the slice is unreadable
                raise SliceGone(f"slice {self.id + 1}: its image can no longer be read "
                                f"({type(exc).__name__})") from None
            display = self.header.display.apply(normalise_intensity(image))
            self._pixels = np.clip(display * DISPLAY_SCALE, 0, 65535).astype("<u2")
        return self._pixels

    def check_present(self) -> None:
        if not self.header.path.is_file():
            raise SliceGone(f"slice {self.id + 1}: its image file no longer exists")


def series_key(series_uid: str) -> str:
    """A pseudonymous series id for case ids: no tag value appears as it is."""
    return "X" + hashlib.sha256(series_uid.encode()).hexdigest()[:10]


def from_studies(folders: list[Path], series_uid: str | None = None) -> list[Slice]:
    """Every slice of each study's axial series (the one grade-study would grade)."""
    slices: list[Slice] = []
    for index, folder in enumerate(folders):
        try:
            scan = scan_study(folder, series_uid=series_uid, verify_pixels=False)
        except (NotADirectoryError, ValueError) as exc:
            raise CatalogueError(f"{folder}: {exc}") from None
        if scan.selected is None:
            raise CatalogueError(f"{folder}: no axial series to label")
        headers = scan.selected.slices
        study_id, key = study_pseudonym(headers[0].study_uid), series_key(headers[0].series_uid)
        for k, header in enumerate(headers):
            slices.append(Slice(len(slices), header, f"{key}-{k + 1:03d}", study_id, index, k + 1))
    if not slices:
        raise CatalogueError("no studies to label")
    return slices


def from_review(graded: Path, study_dir: Path | None = None) -> list[Slice]:
    """A graded study's slices with grade-study's call on each.

    The images are found where report.json says the study was read (``source``), or in
    ``study_dir`` when the study moved or was graded with ``--deidentify``.
    """
    report_path = graded / "report.json"
    if not report_path.is_file():
        raise CatalogueError(f"{graded}: not a grade-study output folder (no report.json)")
    report = json.loads(report_path.read_text())
    if study_dir is None:
        source = (report.get("source") or {}).get("study_dir")
        if not source or not Path(source).is_dir():
            raise CatalogueError(f"{graded}: report.json does not say where the study's images are "
                                 "(graded with --deidentify, or the study moved): name the study folder too")
        study_dir = Path(source)
    slices = from_studies([study_dir], series_uid=report["series"]["series_uid"])
    calls = pd.read_csv(graded / "slices.csv", keep_default_na=False, dtype=str).set_index("sop_uid")
    masks = {sop: mask for path in sorted(graded.glob("dural_sac_seg*.dcm")) for sop, mask in _seg_masks(path).items()}
    for s in slices:
        if s.header.sop_uid not in calls.index:
            continue
        row = calls.loc[s.header.sop_uid]
        display = s.header.display
        box = None
        if row["box_x0"]:
            stored = tuple(float(row[c]) for c in ("box_x0", "box_y0", "box_x1", "box_y1"))
            box = display.box_to_display(stored, s.stored_shape)
        mask = masks.get(s.header.sop_uid)
        s.call = Call(level=row["level"], grade=row["grade"], level_name=row.get("level_name", ""), box=box,
                      outline=None if mask is None else outline_of(display.apply(mask)),
                      dsca_mm2=float(row["dsca_mm2"]) if row["dsca_mm2"] else None)
    return slices


def _seg_masks(path: Path) -> dict[str, np.ndarray]:
    """The sac masks of grade-study's DICOM SEG, by the SOP instance they segment."""
    if not path.is_file():
        return {}
    seg = pydicom.dcmread(path)
    frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    return {str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID): frame > 0
            for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence)}


def outline_of(mask: np.ndarray) -> list[list[float]] | None:
    """A polygon around the largest region of a mask, in pixel-edge coordinates: the 0.5 level
    line of the mask (contourpy, matplotlib's contour tracer)."""
    if not mask.any():
        return None
    padded = np.pad(mask.astype(np.float32), 1)
    lines = contourpy.contour_generator(z=padded).lines(0.5)
    longest = max(lines, key=len)
    # Padded array indices are pixel centres shifted by one: index i -> edge coordinate i - 0.5.
    return [[round(float(x) - 0.5, 2), round(float(y) - 0.5, 2)] for x, y in longest[:-1]]
