"""The localizer picture at the top of the report, as a PACS shows cross-reference lines: the
mid-sagittal slice, each graded axial slice's line across it in its grade's colour, and the
level names beside the structures the locator found."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from grading.dicom.series import SliceHeader
from grading.reports.overlays import GRADE_COLOURS, _font, _grey
from grading.sagittal_levels import Localization, plane_crossing
from stages.atomic import write_atomic

NOT_GRADED = (120, 170, 255)
HEIGHT = 640


def _to_display_pixels(header: SliceHeader, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Display-frame (row, column) of patient points projected into a slice."""
    row_dir = np.asarray(header.image_orientation[:3])
    col_dir = np.asarray(header.image_orientation[3:])
    offset = np.asarray(points, float) - np.asarray(header.image_position)
    cols = offset @ row_dir / header.pixel_spacing[1]
    rows = offset @ col_dir / header.pixel_spacing[0]
    return header.display.indices_to_display(rows, cols, (header.rows, header.columns))


def crossing_line(sagittal: SliceHeader, axial: SliceHeader) -> tuple[np.ndarray, np.ndarray] | None:
    """Where an axial slice's plane crosses a sagittal slice: (rows, columns) in the sagittal
    slice's display frame; None if the planes are parallel or the crossing misses the slice."""
    line = plane_crossing(sagittal, axial, step_px=8.0)
    return None if line is None else sagittal.display.indices_to_display(*line, (sagittal.rows, sagittal.columns))


def render_localizer(image: np.ndarray, localization: Localization, axial_headers: list[SliceHeader],
                     grades: list[str]) -> Image.Image:
    sagittal = localization.mid_slice
    grey = _grey(image)
    scale = HEIGHT / grey.shape[0]
    width = round(grey.shape[1] * scale)
    picture = Image.fromarray(grey).resize((width, HEIGHT), Image.BILINEAR).convert("RGB")
    draw = ImageDraw.Draw(picture)
    for header, grade in zip(axial_headers, grades):
        line = crossing_line(sagittal, header)
        if line is None:
            continue
        rows, cols = line
        points = [(float(c) * scale, float(r) * scale) for r, c in zip(rows, cols)]
        draw.line(points, fill=GRADE_COLOURS.get(grade, NOT_GRADED), width=1)
    for structure in localization.structures:
        rows, cols = _to_display_pixels(sagittal, structure.centre[None])
        x, y = float(cols[0]) * scale, float(rows[0]) * scale
        draw.text((x - 38, y - 7), structure.name, fill=(255, 255, 90), font=_font())
    return picture


def write_localizer(path: Path, image: np.ndarray, localization: Localization, axial_headers: list[SliceHeader],
                    grades: list[str]) -> Path:
    picture = render_localizer(image, localization, axial_headers, grades)
    return write_atomic(path, lambda tmp: picture.save(tmp, format="PNG", compress_level=1))
