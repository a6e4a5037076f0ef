"""Level names from the study's own sagittal series, the way a radiologist reads them.

The locator marks vertebral bodies, discs and the sacrum on the middle sagittal slices. Its
structures are placed in patient millimetres through the slices' geometry, ordered head to
foot, and named by counting up from the sacrum: the disc just above it is the lumbosacral disc, the
body above that the last lumbar vertebra, and so on. How many lumbar vertebrae there are (four
or six is a transitional lumbosacral vertebra) is weighed from the heights of the bodies and
discs in view: thoracic bodies and discs are shorter than lumbar ones, so each count puts the
thoracolumbar junction somewhere and predicts which heights look thoracic. With the junction out
of view the heights cannot tell, the usual five is assumed, and the report says so.
An axial slice is then named by the structure its plane crosses just in front of the canal,
as a radiologist reads the cross-reference line: where the line leaves the column's posterior
wall, a millimetre inside it, a disc ('L4/L5') or a vertebral body ('L4'). The locator's
probabilities are read there between pixels, so a slice a millimetre from a disc-body boundary
falls on its right side.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from grading.dicom.geometry import pixel_to_patient
from grading.dicom.series import Series, SliceHeader
from stages.vocabulary import COLUMN_CLASSES

BODY, DISC, SACRUM = (COLUMN_CLASSES.index(k) for k in ("body", "disc", "sacrum"))
MIN_AREA_MM2 = 40.0  # smaller components are noise
#: Heights along the spine relative to the median of the three lowest lumbar bodies (mean, sd),
#: by kind and region. Lumbar bodies shrink by ``BODY_STEP`` a level going up from L3 and thoracic
#: ones by as much again from T12: T12 about 0.8 of the reference, L1 0.92; thoracic discs (T12/L1
#: and above) about 0.23, lumbar ones 0.33. Set from what the locator measures on phantoms whose
#: T10-T12 have literature heights (T12 22.5-25.5 mm; the phantom's own 20-24 mm T12 measures 0.74,
#: real ones 0.90 on SPIDER), spreads widened: docs/LEVEL_NAMES.md. The thresholds below keep the
#: count at five unless the evidence is strong.
RELATIVE_HEIGHT = {("body", "thoracic"): (0.80, 0.07), ("body", "lumbar"): (1.0, 0.07),
                   ("disc", "thoracic"): (0.235, 0.05), ("disc", "lumbar"): (0.33, 0.05)}
BODY_STEP = 0.025  # per level, from L3 (lumbar) or from T12 (thoracic)
MAX_Z = 2.5  # one wild height (a locator fragment) weighs no more than this many standard deviations
LUMBAR_PRIOR = {4: 0.05, 5: 0.90, 6: 0.05}  # about one patient in ten has a transitional vertebra
SURE = 0.99  # posterior five lumbar vertebrae need before the report calls them counted
TRANSITIONAL_SURE = 0.9  # posterior four or six need before the levels are named from them
WALL_INSET_MM = 1.0  # a slice is named by what it crosses this far in front of the canal
STEP_PX = 0.25  # sampling along an axial slice's crossing line
NEAR_COLUMN_PX = 2  # crossing samples this close to a named structure count as the column
OFF_COLUMN_MM = 15.0  # a body centre is ~15 mm in front of the canal, a spinous process ~40 mm behind it
NEIGHBOURS_MM = 45.0  # about a vertebra and a disc either way
FROM_THE_SACRUM = "named on the sagittal series, counting up from the sacrum (five lumbar vertebrae assumed)"


@dataclass
class Structure:
    kind: str  # body | disc | sacrum
    points: np.ndarray  # (n, 3) patient mm of its pixels
    name: str = ""
    pixels: np.ndarray | None = field(default=None, repr=False)  # (n, 2) display-frame rows, columns
    pixel_area: float = 1.0  # mm² each point stands for

    @property
    def area_mm2(self) -> float:
        return len(self.points) * self.pixel_area

    @property
    def centre(self) -> np.ndarray:
        return self.points.mean(0)


@dataclass
class Localization:
    structures: list[Structure]  # head to foot
    method: str  # how the names were given, for the report
    sure: bool
    flags: list[str] = field(default_factory=list)
    lumbar_count: int | None = None
    lumbar_probabilities: dict[int, float] = field(default_factory=dict)  # P(4, 5, 6 lumbar vertebrae)
    mid_slice: SliceHeader | None = None  # the sagittal slice the localizer picture shows
    class_map: np.ndarray | None = field(default=None, repr=False)  # its classes, display frame
    probabilities: np.ndarray | None = field(default=None, repr=False)  # (classes, rows, cols), display frame
    near_column: np.ndarray | None = field(default=None, repr=False)  # pixels on or next to a named structure

    def name_of(self, header: SliceHeader) -> str | None:
        """The structure an axial slice's plane crosses a millimetre in front of the canal, on the
        middle sagittal slice; None where the plane misses the named column."""
        read = self.reading_point(header)
        if read is None:
            return None
        column_classes = [BODY, DISC, SACRUM]
        probabilities = [float(ndimage.map_coordinates(self.probabilities[k], read[:, None], order=1)[0])
                         for k in column_classes]
        kind = ("body", "disc", "sacrum")[int(np.argmax(probabilities))]
        return self._nearest(kind, read).name

    def reading_point(self, header: SliceHeader) -> np.ndarray | None:
        """Where a slice is read: its crossing line on the middle sagittal slice, ``WALL_INSET_MM``
        in front of the column's posterior wall (display-frame row, column); None where the line
        misses the named column."""
        line = plane_crossing(self.mid_slice, header, STEP_PX)
        if line is None:
            return None
        samples = np.stack(self.mid_slice.display.indices_to_display(*line, (self.mid_slice.rows,
                                                                            self.mid_slice.columns)))
        column = sum(ndimage.map_coordinates(self.probabilities[k], samples, order=1) for k in (BODY, DISC, SACRUM))
        pixel = tuple(np.clip(np.rint(samples).astype(int), 0, np.array(self.near_column.shape)[:, None] - 1))
        on_column = np.flatnonzero((column > 0.5) & self.near_column[pixel])
        if not len(on_column):
            return None
        points = pixel_to_patient(self.mid_slice.image_position, self.mid_slice.image_orientation,
                                  self.mid_slice.pixel_spacing, *line)
        # LPS y grows posteriorly: the wall is the column's most posterior sample; step in front of it.
        wall = on_column[np.argmax(points[on_column, 1])]
        step_mm = np.linalg.norm(points[1] - points[0])
        anterior = -1 if points[-1, 1] > points[0, 1] else 1  # the sample order's step forwards
        return samples[:, int(np.clip(wall + anterior * round(WALL_INSET_MM / step_mm), 0, len(points) - 1))]

    def _nearest(self, kind: str, pixel: np.ndarray) -> Structure:
        """The named structure of a kind nearest a display-frame point (any kind if none)."""
        pool = [s for s in self.structures if s.kind == kind] or self.structures
        return min(pool, key=lambda s: float(np.min(np.sum((s.pixels - pixel) ** 2, axis=1))))


def plane_crossing(sagittal: SliceHeader, axial: SliceHeader, step_px: float = 1.0
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """Where an axial slice's plane crosses a sagittal slice: stored (rows, columns), sub-pixel,
    every ``step_px`` along the axis the crossing runs along; None if the planes are parallel or
    the crossing misses the slice."""
    row_dir = np.asarray(sagittal.image_orientation[:3])
    col_dir = np.asarray(sagittal.image_orientation[3:])
    n = axial.normal
    # Pixel (r, c) lies on the axial plane where a + c * b_col + r * b_row = 0.
    a = (np.asarray(sagittal.image_position) - axial.centre) @ n
    b_col, b_row = sagittal.pixel_spacing[1] * (row_dir @ n), sagittal.pixel_spacing[0] * (col_dir @ n)
    if max(abs(b_row), abs(b_col)) < 1e-9:
        return None
    if abs(b_row) >= abs(b_col):  # the crossing runs along the rows: parametrise by column
        cols = np.arange(0, sagittal.columns - 1 + 1e-9, step_px)
        rows = -(a + b_col * cols) / b_row
    else:
        rows = np.arange(0, sagittal.rows - 1 + 1e-9, step_px)
        cols = -(a + b_row * rows) / b_col
    inside = (rows >= 0) & (rows <= sagittal.rows - 1) & (cols >= 0) & (cols <= sagittal.columns - 1)
    if inside.sum() < 2:
        return None
    return rows[inside], cols[inside]


def _structures(class_map: np.ndarray, header: SliceHeader) -> list[Structure]:
    """Connected components of each class, in patient coordinates (pixels of the display frame)."""
    area = header.pixel_spacing[0] * header.pixel_spacing[1]
    out = []
    for kind, value in (("body", BODY), ("disc", DISC), ("sacrum", SACRUM)):
        components, n = ndimage.label(class_map == value)
        for k in range(1, n + 1):
            rows, cols = np.nonzero(components == k)
            if len(rows) * area < MIN_AREA_MM2:
                continue
            stored = header.display.indices_to_stored(rows, cols, (header.rows, header.columns))
            points = pixel_to_patient(header.image_position, header.image_orientation, header.pixel_spacing, *stored)
            out.append(Structure(kind, points, pixels=np.column_stack([rows, cols]), pixel_area=area))
    return sorted(out, key=lambda s: -s.centre[2])  # head first


def _heights(column: list[Structure]) -> list[float]:
    """Each body's or disc's mean height along the spine: its area over its antero-posterior
    width, both taken across the local axis (the line between its neighbours' centres). A mean
    height is robust to the wedge of a disc or a body's rounded corners."""
    out = []
    for k, structure in enumerate(column):
        upper = column[k - 1].centre if k > 0 else structure.centre
        lower = column[k + 1].centre if k + 1 < len(column) else structure.centre
        axis = upper - lower
        axis = axis / np.linalg.norm(axis)
        across = np.array([0.0, 1.0, 0.0]) - axis[1] * axis  # antero-posterior (LPS y), square to the axis
        across /= np.linalg.norm(across)
        width = structure.points @ across
        depth = (np.percentile(width, 97.5) - np.percentile(width, 2.5)) / 0.95  # the full width of a uniform spread
        out.append(float(structure.area_mm2 / depth) if depth > 0 else 0.0)
    return out


def _on_the_column(structures: list[Structure]) -> list[Structure]:
    """Bodies and discs that lie on the column. The locator sometimes marks a spinous process, a
    facet or bowel as a body; counted, each would shift every name above it. The column moves
    smoothly forward and back with height, so a structure more than ``OFF_COLUMN_MM`` in front of
    or behind the median of its neighbours (within ``NEIGHBOURS_MM`` in height) is dropped."""
    column = [s for s in structures if s.kind != "sacrum"]
    if len(column) < 4:
        return structures
    z = np.array([s.centre[2] for s in column])
    y = np.array([s.centre[1] for s in column])
    dropped = set()
    for k, structure in enumerate(column):
        near = np.abs(z - z[k]) <= NEIGHBOURS_MM
        if near.sum() >= 3 and abs(y[k] - np.median(y[near])) > OFF_COLUMN_MM:
            dropped.add(id(structure))
    return [s for s in structures if id(s) not in dropped]


def _merge_disc_fragments(structures: list[Structure]) -> list[Structure]:
    """One disc per gap between bodies: a degenerate disc often comes out of the locator in
    pieces, and each piece would otherwise be counted (and measured) as a disc of its own."""
    out: list[Structure] = []
    for s in structures:  # head first
        if s.kind == "disc" and out and out[-1].kind == "disc":
            pixels = None if s.pixels is None else np.concatenate([out[-1].pixels, s.pixels])
            out[-1] = Structure("disc", np.concatenate([out[-1].points, s.points]), pixels=pixels,
                                pixel_area=s.pixel_area)
        else:
            out.append(s)
    return out


def lumbar_count_posterior(column: list[Structure]) -> dict[int, float]:
    """P(4, 5 or 6 lumbar vertebrae | the heights in view) for the bodies and discs above the
    sacrum (head first). Counting up from the sacrum, each count puts the thoracolumbar junction
    at a different place: the bodies above it, and the disc just under each of them, should be
    thoracic-short. Heights are taken relative to the three lowest bodies (lumbar whatever the
    count); the topmost structure, which the field of view may cut, does not vote."""
    heights = _heights(column)
    bodies_below = np.cumsum([s.kind == "body" for s in column[::-1]])[::-1]  # bodies at or below each
    lowest = [h for h, s, k in zip(heights, column, bodies_below) if s.kind == "body" and k <= 3]
    log_posterior = {n: float(np.log(p)) for n, p in LUMBAR_PRIOR.items()}
    if len(lowest) == 3:
        reference = float(np.median(lowest))
        for height, structure, below in list(zip(heights, column, bodies_below))[1:]:
            # A disc belongs with the body above it: T12/L1 is as thin as the thoracic discs.
            rank = below if structure.kind == "body" else below + 1  # 1: the last lumbar body
            for n in log_posterior:
                thoracic = rank > n
                mean, sd = RELATIVE_HEIGHT[(structure.kind, "thoracic" if thoracic else "lumbar")]
                if structure.kind == "body":
                    mean -= BODY_STEP * (rank - n - 1 if thoracic else rank - 2)
                z = min(abs(height / reference - mean) / sd, MAX_Z)
                log_posterior[n] += -0.5 * z * z - np.log(sd)
    top = max(log_posterior.values())
    weights = {n: np.exp(v - top) for n, v in log_posterior.items()}
    return {n: float(w / sum(weights.values())) for n, w in weights.items()}


class ColumnNaming(NamedTuple):
    method: str  # how the names were given, for the report
    sure: bool
    flags: list[str]
    lumbar_count: int | None  # lumbar vertebrae counted; None where the usual five is assumed
    lumbar_probabilities: dict[int, float]  # P(4, 5 or 6 lumbar vertebrae); empty where not weighed


def name_structures(structures: list[Structure]) -> ColumnNaming:
    """Give every structure its name. ``structures`` (head first) is updated in place:
    structures off the column are dropped and disc fragments merged."""
    structures[:] = _merge_disc_fragments(_on_the_column(structures))
    sacra = [s for s in structures if s.kind == "sacrum"]
    if not sacra:
        return ColumnNaming("no sacrum in the sagittal view: levels not named from it", False, ["sacrum not in view"],
                            None, {})
    sacrum = max(sacra, key=lambda s: len(s.points))
    sacrum.name = "S1"
    above = [s for s in structures if s.kind != "sacrum" and s.centre[2] > sacrum.centre[2]]  # head first
    bodies = [s for s in above if s.kind == "body"]
    discs = [s for s in above if s.kind == "disc"]
    if not bodies:
        return ColumnNaming("no vertebral body above the sacrum in view", False, ["no lumbar vertebra in view"],
                            None, {})
    posterior = lumbar_count_posterior(above)
    n_lumbar = max(posterior, key=posterior.get)
    if posterior[n_lumbar] < TRANSITIONAL_SURE:
        n_lumbar = 5  # a transitional spine is named as one only on strong evidence
    chance = posterior[n_lumbar]
    flags, sure, count = [], True, n_lumbar
    if n_lumbar != 5:
        flags.append(f"{n_lumbar} lumbar vertebrae (P = {chance:.2f} from the heights of the bodies and discs in "
                     "view): a transitional lumbosacral vertebra; levels named counting down from T12/L1")
        sure = False
        method = f"named on the sagittal series: {n_lumbar} lumbar vertebrae, the thoracolumbar junction told by " \
                 "the shorter thoracic bodies and discs above it"
    elif chance >= SURE:
        method = "named on the sagittal series: 5 lumbar vertebrae between the thoracolumbar junction (shorter " \
                 f"thoracic bodies and discs above it, P = {chance:.2f}) and the sacrum"
    else:
        flags.append(f"T12/L1 not clear in view (P = {chance:.2f} for five lumbar vertebrae, "
                     f"{1 - chance:.2f} for four or six): a transitional vertebra cannot be excluded; levels counted "
                     "up from the sacrum, assuming five lumbar vertebrae")
        method, count = FROM_THE_SACRUM, None
    # Name bodies bottom-up: the last lumbar first, then up through the thoracic spine.
    ordered = sorted(bodies, key=lambda b: b.centre[2])
    names = [f"L{n_lumbar - k}" if k < n_lumbar else f"T{12 - (k - n_lumbar)}" for k in range(len(ordered))]
    for body, name in zip(ordered, names):
        body.name = name
    # A disc is named by the bodies it parts; the lowest by the last lumbar and S1.
    for disc in discs:
        over = [b for b in ordered if b.centre[2] > disc.centre[2]]
        under = [b for b in ordered if b.centre[2] < disc.centre[2]]
        upper = over[0].name if over else None
        lower = under[-1].name if under else "S1"
        disc.name = f"{upper}/{lower}" if upper else f"?/{lower}"
    return ColumnNaming(method, sure, flags, count, posterior)


def middle_slices(localizer: Series, count: int) -> list[SliceHeader]:
    """The ``count`` slices at the middle of a sagittal series (across the canal)."""
    start = max(0, (len(localizer.slices) - count) // 2)
    return localizer.slices[start:start + count]


def locate(headers: list[SliceHeader], probabilities: list[np.ndarray]) -> Localization:
    """Name the column from the locator's class probabilities on the middle sagittal slices
    (display frame). Slices of one grid are averaged (a scoliotic spine leaves the midline
    plane), and the structures placed through the middle slice's geometry."""
    middle = len(headers) // 2
    same = [p for p in probabilities if p.shape == probabilities[middle].shape]
    mean = np.mean(same, axis=0)
    class_map = mean.argmax(0).astype(np.uint8)
    structures = _structures(class_map, headers[middle])
    naming = name_structures(structures)
    named = [s for s in structures if s.name]
    return Localization(named, naming.method, naming.sure, naming.flags, naming.lumbar_count,
                        naming.lumbar_probabilities, headers[middle], class_map, mean,
                        _near_column(named, class_map.shape))


def _near_column(structures: list[Structure], shape: tuple[int, int]) -> np.ndarray:
    """Pixels on or next to a named structure: the column an axial slice's crossing is read on
    (what the locator marked elsewhere, dropped or unnamed, is not)."""
    named = np.zeros(shape, bool)
    for structure in structures:
        named[tuple(structure.pixels.T)] = True
    return ndimage.binary_dilation(named, iterations=NEAR_COLUMN_PX)
