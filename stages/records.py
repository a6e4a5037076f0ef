"""One labelled slice, as the stages see it: pixels, geometry and one rater's labels."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVEL_NAMES = ("rootlet", "cord")
GRADE_NAMES = ("A", "B", "C", "D")


@dataclass
class SliceRecord:
    case_id: str
    patient: str  # grouping key: no patient in two parts of a fold
    image: np.ndarray  # float32 (rows, columns), intensity-normalised
    spacing: tuple[float, float]  # (row, column) mm
    box: tuple[float, float, float, float] | None  # canal x0, y0, x1, y1 in image pixels
    level: str  # rootlet | cord | other
    grade: str  # A-D or ''
    mask: np.ndarray | None = None  # bool (rows, columns) dural sac
    dsca_mm2: float | None = None

    @property
    def level_index(self) -> int | None:
        return LEVEL_NAMES.index(self.level) if self.level in LEVEL_NAMES else None

    @property
    def grade_index(self) -> int | None:
        return GRADE_NAMES.index(self.grade) if self.level == "rootlet" and self.grade in GRADE_NAMES else None


def normalise_intensity(pixels: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.5) -> np.ndarray:
    """Scale to ~[0, 1] by robust percentiles: MR intensities have no absolute unit."""
    pixels = np.asarray(pixels, np.float32)
    sample = pixels[::4, ::4] if pixels.size > 65536 else pixels
    low, high = np.percentile(sample, [low_pct, high_pct])
    return np.clip((pixels - low) / max(float(high - low), 1e-6), 0.0, 1.5).astype(np.float32)
