"""One labelled slice, as the stages see it, and the intensity preprocessing every stage shares."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.orientation import IDENTITY, DisplayTransform

LEVEL_NAMES = ("rootlet", "cord")
GRADE_NAMES = ("A", "B", "C", "D")


@dataclass(frozen=True)
class Preprocessing:
    """How a slice's stored values become model input; recorded in every bundle's manifest so a
    bundle always sees its inputs the way it was trained. MR intensities have no absolute unit,
    so slices are scaled by robust percentiles."""

    low_percentile: float = 1.0
    high_percentile: float = 99.5
    clip: float = 1.5  # values above the high percentile are kept up to this (fat, fluid)
    orientation: str = "display"  # anterior up, the patient's right on the image's left


def normalise_intensity(pixels: np.ndarray, prep: Preprocessing = Preprocessing()) -> np.ndarray:
    """Scale to ~[0, 1] by robust percentiles."""
    pixels = np.asarray(pixels, np.float32)
    sample = pixels[::4, ::4] if pixels.size > 65536 else pixels
    low, high = np.percentile(sample, [prep.low_percentile, prep.high_percentile])
    return np.clip((pixels - low) / max(float(high - low), 1e-6), 0.0, prep.clip).astype(np.float32)


@dataclass
class SliceRecord:
    case_id: str
    patient: str  # grouping key: no patient in two parts of a fold
    image: np.ndarray  # float32 (rows, columns), intensity-normalised, display orientation
    spacing: tuple[float, float]  # (row, column) mm
    box: tuple[float, float, float, float] | None  # canal x0, y0, x1, y1 in image pixels
    level: str  # rootlet | cord | other
    grade: str  # A-D or ''
    mask: np.ndarray | None = None  # bool (rows, columns) dural sac
    dsca_mm2: float | None = None
    label_map: np.ndarray | None = None  # uint8 (rows, columns) tissue labels, when the slice is synthetic
    display: DisplayTransform = IDENTITY  # how the stored slice was turned to give ``image``

    @property
    def level_index(self) -> int | None:
        return LEVEL_NAMES.index(self.level) if self.level in LEVEL_NAMES else None

    @property
    def grade_index(self) -> int | None:
        return GRADE_NAMES.index(self.grade) if self.level == "rootlet" and self.grade in GRADE_NAMES else None
