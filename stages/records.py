"""One labelled slice, as the stages see it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.orientation import IDENTITY, DisplayTransform
from stages.vocabulary import GRADES, LEVELS


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
    classes: np.ndarray | None = None  # uint8 (rows, columns) column classes, on sagittal slices for the locator

    @property
    def level_index(self) -> int | None:
        return LEVELS.index(self.level) if self.level in LEVELS else None

    @property
    def grade_index(self) -> int | None:
        return GRADES.index(self.grade) if self.level == "rootlet" and self.grade in GRADES else None
