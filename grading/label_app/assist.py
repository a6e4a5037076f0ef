"""--assist: the bundle's canal detector pre-places a box for the rater to accept or move.

Only the box: the level and grade models are never loaded, so an assisted rater stays blinded
to the models' calls. Boxes are computed once per slice, one at a time (a CPU detector pass
takes a few hundred milliseconds; the page asks for them after the slice is shown).
"""
from __future__ import annotations

import threading
from pathlib import Path

from grading.dicom.pixels import load_slice
from grading.label_app.catalogue import Slice, SliceGone
from stages.bundle import load_bundle
from stages.detector import detect
from stages.inference import InferenceSettings, prepare_models
from stages.preprocessing import normalise_intensity

Box = tuple[float, float, float, float]


class BoxAssist:
    def __init__(self, bundle: Path, min_score: float = 0.5):
        models, self.configs, _ = load_bundle(bundle, stages=["detector"])
        self.model = prepare_models(models, InferenceSettings())["detector"]
        self.min_score = min_score
        self._boxes: dict[int, Box | None] = {}
        self._lock = threading.Lock()

    def box(self, item: Slice) -> Box | None:
        """The detector's box on the slice (display frame), or None where it found no canal."""
        with self._lock:
            if item.id not in self._boxes:
                self._boxes[item.id] = self._detect(item)
            return self._boxes[item.id]

    def _detect(self, item: Slice) -> Box | None:
        try:
            image = load_slice(item.header)
        except Exception:  # noqa: BLE001 - any decoder failure: the slice is unreadable
            raise SliceGone(f"slice {item.id + 1}: its image can no longer be read") from None
        display = item.header.display
        found = detect(self.model, [display.apply(normalise_intensity(image, self.configs.preprocessing))],
                       [display.spacing(item.header.pixel_spacing)], self.configs.detector, batch_size=1)[0]
        return found.box if found is not None and found.score >= self.min_score else None
