"""grade-study's pipeline: study -> axial series -> stages -> per-slice rows and per-level summary."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from grading.canal_track import TrackConfig, head_to_foot, with_neighbours
from grading.dicom import SkippedFile, StudyScan, load_series_pixels, scan_study
from grading.dicom.pixels import SeriesPixels
from grading.dicom.series import Series, SliceHeader
from grading.levels import LevelAssignment, assign_levels, summarise_levels
from grading.sagittal_levels import Localization, locate, middle_slices
from stages.configs import StageConfigs
from stages.inference import InferenceSettings, SlicePrediction, predict_slices
from stages.locator import column_probabilities
from stages.preprocessing import Preprocessing, normalise_intensity
from stages.vocabulary import GRADES

#: Below this detector score a slice is reported as 'no canal', never graded (grade-study --box-threshold).
MIN_BOX_SCORE = 0.5
#: SPEC's sac-area context: relative stenosis below 100 mm², absolute below 75 mm².
RELATIVE_STENOSIS_MM2, ABSOLUTE_STENOSIS_MM2 = 100.0, 75.0


@dataclass
class StudyGrading:
    """A graded series; boxes and masks are on each slice's stored pixel grid (what the outputs
    reference), the models having worked in the display frame."""

    study_dir: Path
    scan: StudyScan
    series: Series
    headers: list[SliceHeader]
    images: list[np.ndarray]  # normalised, stored orientation, for overlays
    predictions: list[SlicePrediction]  # in the display frame
    sac_masks: list[np.ndarray | None]  # bool, stored grid
    slices: list[dict]
    levels: list[dict]
    level_method: str
    skipped: list[SkippedFile]
    timings: dict[str, float] = field(default_factory=dict)
    localization: Localization | None = None
    assignment: LevelAssignment | None = None
    localizer_image: np.ndarray | None = None  # the middle sagittal slice the levels were named on
    box_rule: str = "slice by slice"  # how each slice's canal box and rootlet/cord call were made


def _diameters(mask: np.ndarray | None, spacing: tuple[float, float]) -> tuple[float | None, float | None]:
    """Antero-posterior (display rows) and medio-lateral (display columns) extent of the sac, mm,
    from the display-frame mask and spacing."""
    if mask is None or not mask.any():
        return None, None
    rows, cols = np.nonzero(mask)
    return (float(rows.max() - rows.min() + 1) * spacing[0], float(cols.max() - cols.min() + 1) * spacing[1])


def grade_area_check(grade: str, dsca_mm2: float | None) -> str:
    """Where the Schizas grade and the measured sac area disagree, what a reader should look at;
    '' where they agree or either is missing. A flag for review, never an override: the grade
    reads the sac's contents, the area its size, and they part mostly when one of them is wrong."""
    if dsca_mm2 is None or not grade:
        return ""
    if grade in ("C", "D") and dsca_mm2 >= RELATIVE_STENOSIS_MM2:
        return f"grade {grade} but the sac area is not stenotic (>= {RELATIVE_STENOSIS_MM2:.0f} mm²)"
    if grade == "A" and dsca_mm2 < ABSOLUTE_STENOSIS_MM2:
        return f"grade A but the sac area is absolutely stenotic (< {ABSOLUTE_STENOSIS_MM2:.0f} mm²)"
    return ""


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def _slice_row(header: SliceHeader, position: float, pred: SlicePrediction, level_name: str) -> dict:
    """One slices.csv row: the box mapped back to the stored pixel grid, the measures from the
    prediction's one sac mask."""
    transform = header.display
    ap, ml = _diameters(pred.sac_mask, transform.spacing(header.pixel_spacing))
    probs = pred.grade_probabilities or [None] * len(GRADES)
    stored = (header.rows, header.columns)
    box = transform.box_to_stored(pred.box, stored) if pred.box is not None else (None,) * 4
    return {
        "instance_number": header.instance_number,
        "sop_uid": header.sop_uid,
        "position_mm": round(float(position), 3),
        "level_name": level_name,
        **{k: _rounded(v, 2) for k, v in zip(("box_x0", "box_y0", "box_x1", "box_y1"), box)},
        "detector_score": _rounded(pred.box_score, 4),
        "box_choice": pred.box_choice,
        "level": pred.level,
        "level_probability": _rounded(pred.level_probability, 4),
        "grade": pred.grade,
        "grade_probability": _rounded(max(pred.grade_probabilities), 4) if pred.grade_probabilities else None,
        **{f"p_{g}": _rounded(p, 4) for g, p in zip(GRADES, probs)},
        "dsca_mm2": _rounded(pred.dsca_mm2, 2),
        "ap_diameter_mm": _rounded(ap, 2),
        "ml_diameter_mm": _rounded(ml, 2),
        "grade_area_check": grade_area_check(pred.grade, pred.dsca_mm2),
    }


@dataclass
class LoadedSeries:
    """A study's selected series, decoded, normalised and turned to the display frame:
    everything grading needs before the models (and the sagittal localizer's middle slices)."""
    study_dir: Path
    scan: StudyScan
    pixels: SeriesPixels
    images: list[np.ndarray]  # display frame
    spacings: list[tuple[float, float]]  # display frame (row, column) mm
    timings: dict[str, float]
    localizer: SeriesPixels | None = None
    localizer_images: list[np.ndarray] = field(default_factory=list)  # display frame, normalised


def load_study(study_dir: Path | str, series_uid: str | None = None, progress: bool = False,
               decode_workers: int = 2, preprocessing: Preprocessing = Preprocessing(),
               sagittal_uid: str | None = None, localizer_slices: int = 0) -> LoadedSeries | None:
    """Scan a study folder and decode its selected series; None when it has no gradable series."""
    start = time.perf_counter()
    scan = scan_study(study_dir, series_uid=series_uid, sagittal_uid=sagittal_uid, progress=progress,
                      verify_pixels=False)
    timings = {"scan_s": time.perf_counter() - start}
    if scan.selected is None:
        return None
    start = time.perf_counter()
    pixels = load_series_pixels(scan.selected, workers=decode_workers)
    images = [h.display.apply(normalise_intensity(img, preprocessing)) for h, img in zip(pixels.headers, pixels.images)]
    spacings = [h.display.spacing(h.pixel_spacing) for h in pixels.headers]
    localizer, localizer_images = None, []
    if localizer_slices and scan.localizer is not None:
        middle = replace(scan.localizer, slices=middle_slices(scan.localizer, localizer_slices))
        localizer = load_series_pixels(middle, workers=decode_workers)
        localizer_images = [h.display.apply(normalise_intensity(img, preprocessing))
                            for h, img in zip(localizer.headers, localizer.images)]
    timings["decode_s"] = time.perf_counter() - start
    return LoadedSeries(Path(study_dir), scan, pixels, images, spacings, timings, localizer, localizer_images)


def localize(model: torch.nn.Module, configs: StageConfigs, headers: list[SliceHeader], images: list[np.ndarray],
             device: str | torch.device = "cpu") -> Localization:
    """The locator on the middle sagittal slices (display frame), and the names it gives."""
    spacings = [h.display.spacing(h.pixel_spacing) for h in headers]
    return locate(headers, column_probabilities(model, configs.locator, images, spacings, device))


def grade_loaded(loaded: LoadedSeries, models: dict, configs: StageConfigs, device: str | torch.device = "cpu",
                 settings: InferenceSettings = InferenceSettings(),
                 min_box_score: float = MIN_BOX_SCORE, track: bool = True) -> StudyGrading:
    """Run the stages on a decoded series and build its per-slice rows and per-level summary.

    ``track``: each slice's canal box is chosen with its neighbours (``grading.canal_track``) and
    the rootlet/cord calls are made together, with one conus (``stages.inference.one_conus``);
    otherwise slice by slice, the best box scoring at least ``min_box_score``."""
    timings = dict(loaded.timings)
    pixels, series = loaded.pixels, loaded.scan.selected
    start = time.perf_counter()
    choose = with_neighbours(pixels.headers, TrackConfig(threshold=min_box_score)) if track else None
    predictions = predict_slices(models, configs, loaded.images, loaded.spacings, min_box_score=min_box_score,
                                 device=device, settings=settings, timings=timings, choose=choose,
                                 head_to_foot=head_to_foot(pixels.headers) if track else None)
    timings["models_s"] = time.perf_counter() - start
    by_sop = dict(zip((s.sop_uid for s in series.slices), series.positions_mm()))
    positions = np.array([by_sop[h.sop_uid] for h in pixels.headers])
    masks = [None if p.sac_mask is None else h.display.invert(p.sac_mask) for h, p in zip(pixels.headers, predictions)]
    images = [h.display.invert(img) for h, img in zip(pixels.headers, loaded.images)]
    localization, localizer_image = None, None
    if "locator" in models and loaded.localizer is not None and loaded.localizer.headers:
        start = time.perf_counter()
        headers = loaded.localizer.headers
        localization = localize(models["locator"], configs, headers, loaded.localizer_images, device)
        localizer_image = loaded.localizer_images[len(headers) // 2]
        timings["locator_s"] = time.perf_counter() - start
    assignment = assign_levels(pixels.headers, positions, localization)
    slices = [_slice_row(h, pos, p, name) for h, pos, p, name in zip(pixels.headers, positions, predictions,
                                                                      assignment.names)]
    return StudyGrading(loaded.study_dir, loaded.scan, series, pixels.headers, images, predictions, masks, slices,
                        summarise_levels(slices, assignment.names), assignment.method,
                        loaded.scan.skipped + pixels.skipped, timings, localization, assignment, localizer_image,
                        ("with the slices around it (one conus)" if track else "slice by slice")
                        + f"; a box needs a score of {min_box_score:.2f} on its own")
