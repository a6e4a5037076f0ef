"""What a study scan found: slice headers grouped into series, and the files it skipped."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from grading.dicom.geometry import (
    canonical,
    classify_orientation,
    display_transform,
    mean_normal,
    slice_centre,
)
from stages.orientation import DisplayTransform


@dataclass(frozen=True)
class SliceHeader:
    """The header facts of one image file that grading needs; pixels are read later."""

    path: Path
    sop_uid: str
    series_uid: str
    study_uid: str
    instance_number: int | None
    image_position: tuple[float, float, float]
    image_orientation: tuple[float, float, float, float, float, float]
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing) in mm
    rows: int
    columns: int
    series_description: str = ""
    echo_time: float | None = None
    repetition_time: float | None = None
    slice_thickness: float | None = None
    transfer_syntax: str = ""
    read_with_force: bool = False
    frame_of_reference: str = ""
    image_type: tuple[str, ...] = ()  # ImageType values, upper case

    @property
    def normal(self) -> np.ndarray:
        """Unit normal in the canonical sense (axial: pointing to the head)."""
        row = np.asarray(self.image_orientation[:3])
        col = np.asarray(self.image_orientation[3:])
        n = np.cross(row, col)
        return canonical(n / np.linalg.norm(n))

    @property
    def centre(self) -> np.ndarray:
        return slice_centre(self.image_position, self.image_orientation, self.pixel_spacing, (self.rows, self.columns))

    @property
    def display(self) -> DisplayTransform:
        """How this slice is turned to the display frame the models see."""
        return display_transform(self.image_orientation)


@dataclass(frozen=True)
class SkippedFile:
    path: Path
    reason: str


_T2_WORDS = re.compile(r"(?<![a-z0-9])(t2|t2w|t2\*|stir|space|haste|ciss|fiesta|myelo)", re.I)
_T1_WORDS = re.compile(r"(?<![a-z0-9])(t1|t1w|mprage|vibe|flash)", re.I)


def classify_weighting(description: str, echo_time: float | None, repetition_time: float | None) -> str:
    """'T1', 'T2' or 'unknown'.

    The series description is what the technologist chose and wins when it names exactly one
    weighting ("AX T2 TSE", "t1_tse_tra"); otherwise long TR with long TE is T2 and short TR with
    short TE is T1, the textbook spin-echo contrast rule; very short TR (gradient echo) is left
    unknown because there the flip angle, not the timing, sets the contrast.
    """
    text = description.replace("_", " ")
    says_t2, says_t1 = bool(_T2_WORDS.search(text)), bool(_T1_WORDS.search(text))
    if says_t2 != says_t1:
        return "T2" if says_t2 else "T1"
    if echo_time is not None and repetition_time is not None:
        if repetition_time >= 1500 and echo_time >= 60:
            return "T2"
        if 250 <= repetition_time <= 1000 and echo_time <= 30:  # below ~250 ms: gradient echo, flip angle decides
            return "T1"
    return "unknown"


#: What one Dixon output shows, by the values scanners write into ImageType (Siemens "WATER",
#: "FAT", "IN_PHASE", "OPP_PHASE"; "W", "F", "IP", "OP" elsewhere) or, failing that, by the last
#: such word of a Dixon series' description ("AX T2 DIXON W", "t2_tse_dixon_tra_F"); spaces and
#: underscores dropped before the look-up.
_DIXON_KINDS = {"WATER": "water", "W": "water", "FAT": "fat", "F": "fat", "INPHASE": "in phase", "IP": "in phase",
                "OPPPHASE": "opposed phase", "OPPHASE": "opposed phase", "OUTPHASE": "opposed phase",
                "OPP": "opposed phase", "OP": "opposed phase"}
_DIXON_SERIES = re.compile(r"dixon|ideal|flex", re.I)
_DIXON_WORD = re.compile(r"(?<![a-z0-9])(water|w|fat|f|in ?phase|ip|opp? ?phase|out ?phase|opp|op)(?![a-z0-9])", re.I)
#: Which Dixon output is graded when a study has several: the water image (fat dark, the sac
#: bright, as on the water and T2-SPIR sets the models are checked on) or a plain series first, the
#: in-phase image (a T2 TSE look) next, the opposed-phase image (dark rims at every fat-water edge,
#: the sac's among them) then, the fat image (CSF dark: no sac to see) last.
DIXON_PREFERENCE = {"water": 3, "": 3, "in phase": 2, "opposed phase": 1, "fat": 0}


def dixon_image(image_type: tuple[str, ...], description: str) -> str:
    """'water', 'fat', 'in phase', 'opposed phase', or '' when the series is not one Dixon output.
    ImageType decides when it names one; a description only when it also says Dixon (so a
    fat-suppressed "T2 FS" is not a fat image)."""
    words = list(image_type)
    if _DIXON_SERIES.search(description):
        words += _DIXON_WORD.findall(description.replace("_", " "))[-1:]
    for word in words:
        kind = _DIXON_KINDS.get(re.sub(r"[ _]", "", word.upper()))
        if kind is not None:
            return kind
    return ""


@dataclass
class Series:
    """One series' slices, ordered along the mean slice normal: head to foot (axial), the
    patient's left to right (sagittal), back to front (coronal)."""

    uid: str
    slices: list[SliceHeader]
    normal: np.ndarray = field(repr=False)
    orientation: str
    weighting: str

    @classmethod
    def from_slices(cls, uid: str, slices: list[SliceHeader]) -> "Series":
        normal = mean_normal(np.array([s.normal for s in slices]))
        # Order along the normal (not by InstanceNumber, which scanners and PACS reshuffle);
        # ties (duplicate positions) fall back to instance number, then SOP UID, to stay stable.
        ordered = sorted(
            slices,
            key=lambda s: (
                -float(np.dot(s.centre, normal)),
                s.instance_number if s.instance_number is not None else 0,
                s.sop_uid,
            ),
        )
        first = ordered[0]
        return cls(
            uid=uid,
            slices=ordered,
            normal=normal,
            orientation=classify_orientation(normal),
            weighting=classify_weighting(first.series_description, first.echo_time, first.repetition_time),
        )

    @property
    def description(self) -> str:
        return self.slices[0].series_description

    @property
    def frame_of_reference(self) -> str:
        return self.slices[0].frame_of_reference

    @property
    def dixon_image(self) -> str:
        return dixon_image(self.slices[0].image_type, self.description)

    @property
    def pixel_spacing(self) -> tuple[float, float]:
        return self.slices[0].pixel_spacing

    def positions_mm(self) -> np.ndarray:
        """Each slice centre's position along the series normal (mm); decreasing head to foot."""
        return np.array([float(np.dot(s.centre, self.normal)) for s in self.slices])

    @property
    def gradable(self) -> bool:
        """Axial and not known to be T1: the paper grades axial T2 slices."""
        return self.orientation == "axial" and self.weighting != "T1"

    def to_json(self, selected: bool, role: str | None = None) -> dict:
        positions = self.positions_mm()
        return {
            "series_uid": self.uid,
            "role": role,
            "description": self.description,
            "orientation": self.orientation,
            "weighting": self.weighting,
            "n_slices": len(self.slices),
            "pixel_spacing_mm": [float(v) for v in self.pixel_spacing],
            "selected": selected,
            "slices": [
                {
                    "sop_uid": s.sop_uid,
                    "instance_number": s.instance_number,
                    "position_mm": round(float(p), 4),
                }
                for s, p in zip(self.slices, positions)
            ],
        }


def select_series(series: list[Series], series_uid: str | None = None) -> Series | None:
    """The series to grade: the one named, else the axial T2 with the most slices; of a Dixon
    acquisition's outputs, the water image (``DIXON_PREFERENCE``); a Dixon fat image only when no
    other axial series can be graded.

    An axial series whose weighting cannot be told is a fallback; axial T1 never is.
    """
    if series_uid is not None:
        return next((s for s in series if s.uid == series_uid), None)
    candidates = [s for s in series if s.gradable]
    if not candidates:
        return None
    return max(candidates, key=lambda s: (s.dixon_image != "fat", s.weighting == "T2", DIXON_PREFERENCE[s.dixon_image],
                                          len(s.slices), s.uid))


def select_localizer(series: list[Series], graded: Series | None, sagittal_uid: str | None = None) -> Series | None:
    """The sagittal series that names the graded series' levels: the one named, else the
    sagittal T2 (else T1, else any) with the most slices in the graded series' frame of
    reference (its coordinates are then the same patient's)."""
    if sagittal_uid is not None:
        return next((s for s in series if s.uid == sagittal_uid), None)
    if graded is None:
        return None
    candidates = [s for s in series if s.orientation == "sagittal" and s.frame_of_reference == graded.frame_of_reference]
    if not candidates:
        return None
    return max(candidates, key=lambda s: (s.weighting == "T2", s.weighting == "T1", len(s.slices), s.uid))


@dataclass
class StudyScan:
    root: Path
    series: list[Series]
    skipped: list[SkippedFile]
    selected: Series | None
    localizer: Series | None = None

    def role(self, series: Series) -> str | None:
        return "graded" if series is self.selected else "localizer" if series is self.localizer else None

    def to_json(self) -> dict:
        return {
            "series": [s.to_json(selected=s is self.selected, role=self.role(s)) for s in self.series],
            "skipped": [{"path": str(f.path), "reason": f.reason} for f in self.skipped],
        }
