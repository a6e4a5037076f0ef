"""One synthetic patient's 3-D anatomy, from which any plane can be cut, and the truth of a slice.

:class:`Anatomy` joins the spine-frame volume (bone, discs, canal, sac, rootlets) and the
body-frame volume (everything around it) in patient millimetres. :meth:`Anatomy.labels` cuts a
label map for any plane: axial stacks angled to a disc, a contiguous axial stack and sagittal
slices all come from the same anatomy, so their geometry agrees. :meth:`Anatomy.slice_truth`
says what a perfect rater would record for an axial slice: canal box, sac mask and area, rootlet
or cord level, and the Schizas grade read from the rootlet packing of the sac it crosses.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grading.phantom.body_volume import BodyVolume, build_body_volume
from grading.phantom.centreline import Centreline, build_centreline
from grading.phantom.patient import Patient
from grading.phantom.resample import upsample_bilinear
from grading.phantom.shapes import label_mask
from grading.phantom.spine_volume import SpineVolume, build_spine_volume
from grading.phantom.tissues import SAC_LABELS, Label
from stages.vocabulary import COLUMN_CLASSES

#: Rootlet packing (nominal rootlet area / sac area) where Schizas B and C begin: below 0.5 the
#: CSF between rootlets is plain (A); up to 0.8 rootlets fill the sac but can be told apart (B);
#: beyond, the sac is a grey mass (C, or D without dorsal epidural fat).
PACKING_B, PACKING_C = 0.5, 0.8
MIN_DORSAL_FAT_MM2 = 2.0
MIN_CORD_MM2 = 8.0
#: Coordinates are computed exactly every this many pixels and interpolated between (smooth maps).
COARSE_STEP = 16


def grade_of(packing: float, dorsal_fat_mm2: float) -> str:
    if packing < PACKING_B:
        return "A"
    if packing < PACKING_C:
        return "B"
    return "C" if dorsal_fat_mm2 >= MIN_DORSAL_FAT_MM2 else "D"


@dataclass(frozen=True)
class Plane:
    """A slice: pixel (r, c) centre = origin + c * spacing[1] * row_dir + r * spacing[0] * col_dir."""

    origin: np.ndarray  # LPS mm (DICOM ImagePositionPatient)
    row_dir: np.ndarray  # direction of increasing column index (IOP[:3])
    col_dir: np.ndarray  # direction of increasing row index (IOP[3:])
    spacing: tuple[float, float]  # (between rows, between columns) mm
    shape: tuple[int, int]  # rows, columns
    thickness: float = 4.0

    @property
    def normal(self) -> np.ndarray:
        n = np.cross(self.row_dir, self.col_dir)
        return n / np.linalg.norm(n)

    def points(self, rows: np.ndarray, cols: np.ndarray, offset: float = 0.0) -> np.ndarray:
        """LPS points (len(rows), len(cols), 3) at fractional pixel indices, ``offset`` mm along the normal."""
        r, c = np.meshgrid(np.asarray(rows, float), np.asarray(cols, float), indexing="ij")
        return (self.origin + offset * self.normal + c[..., None] * self.spacing[1] * self.row_dir
                + r[..., None] * self.spacing[0] * self.col_dir)

    def to_pixel(self, point: np.ndarray) -> tuple[float, float]:
        """(column, row) of an LPS point projected into the plane."""
        d = np.asarray(point, float) - self.origin
        return float(d @ self.row_dir / self.spacing[1]), float(d @ self.col_dir / self.spacing[0])


@dataclass
class SliceTruth:
    level: str  # rootlet | cord | other
    grade: str  # A-D on rootlet slices, else ''
    sac_mask: np.ndarray  # bool (rows, columns)
    dsca_mm2: float
    box: tuple[float, float, float, float] | None  # canal x0, y0, x1, y1 in pixels
    segment: str  # what the plane crosses at the column's back, in front of the canal: 'L4/L5', 'L4', 'S1'
    segment_kind: str  # disc | body | sacrum
    boundary_mm: float  # from the point named to the nearest disc-body boundary, along the spine
    packing: float
    dorsal_fat_mm2: float
    a_subtype: str
    metal: bool
    s_mm: float  # where the plane crosses the centreline


class Anatomy:
    def __init__(self, patient: Patient, line: Centreline, spine: SpineVolume, body: BodyVolume):
        self.patient, self.line, self.spine, self.body = patient, line, spine, body
        # Each volume with a one-voxel border of background: a lookup clips its indices into the
        # border instead of testing every pixel against the grid's bounds.
        self._bordered = {id(grid): np.pad(grid.labels, 1) for grid in (spine.grid, body.grid)}
        self._centre: tuple[Plane | None, np.ndarray | None] = (None, None)

    def _coordinates(self, plane: Plane, offset: float, shift: tuple[float, float],
                     spine_only: bool = False) -> np.ndarray:
        """(6, rows, columns): spine-frame (s, v, u) and body-frame (z, y', x') of every pixel
        (only the first three with ``spine_only``).

        Computed exactly on a uniform grid about every COARSE_STEP pixels and interpolated
        bilinearly between: within a plane all six are smooth functions of the pixel position.
        """
        if offset == 0.0 and shift == (0.0, 0.0) and self._centre[0] is plane:  # the slab's, again
            return self._centre[1][:3] if spine_only else self._centre[1]
        rows, cols = plane.shape
        rc = np.linspace(0, rows - 1, int(np.ceil((rows - 1) / COARSE_STEP)) + 1)
        cc = np.linspace(0, cols - 1, int(np.ceil((cols - 1) / COARSE_STEP)) + 1)
        points = plane.points(rc + shift[0], cc + shift[1], offset)
        crossing = self.crossing(plane)
        across = abs(float(plane.normal @ self.line.at(crossing)[3])) > 0.5  # roughly perpendicular to the spine
        s, u, v = self.line.locate(points, guess=crossing if across else None, iterations=3 if across else 4)
        maps = [s, v, u] if spine_only else [s, v, u, *self.body.to_body(points)]
        coords = upsample_bilinear(np.stack(maps), (rows, cols))
        if offset == 0.0 and shift == (0.0, 0.0) and not spine_only:
            self._centre = (plane, coords)  # column_targets reads the same plane next
        return coords

    def _lookup(self, grid, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Nearest-voxel labels at coordinates (a, b, c); 0 outside the grid."""
        bordered = self._bordered[id(grid)]
        flat = None
        for coords, axis, n in ((a, grid.a, bordered.shape[0]), (b, grid.b, bordered.shape[1]),
                                (c, grid.c, bordered.shape[2])):
            # + 0.5 rounds to the nearest voxel centre, + 1 steps over the border.
            position = (coords - axis[0]) * np.float32(1.0 / (axis[1] - axis[0])) + np.float32(1.5)
            k = np.clip(position, 0, n - 1, out=position).astype(np.int32)  # truncation: nearest voxel
            if flat is None:
                flat = k
            else:
                flat *= n
                flat += k
        return np.take(bordered, flat)

    def labels(self, plane: Plane, offset: float = 0.0, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        """The label map of ``plane`` (uint8, rows x columns), ``offset`` mm along its normal and
        ``shift`` pixels within it (sub-samples for partial volume)."""
        return self._labels(self._coordinates(plane, offset, shift))

    def _labels(self, coords: np.ndarray) -> np.ndarray:
        return self._combine(self._lookup(self.spine.grid, *coords[:3]), self._lookup(self.body.grid, *coords[3:]))

    def slab(self, plane: Plane, samples: int, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
        """Label maps of ``samples`` sub-planes spread over the slice thickness (each shifted by
        up to half a pixel: partial volume in and across the plane), the central plane first,
        and each pixel's depth in front of the skin of the back (mm).

        Off-centre sub-planes cut only the spine volume anew: partial volume matters at the
        canal's millimetre structures, and the body's smooth organs barely change over 2 mm.
        """
        centre = self._coordinates(plane, 0.0, (0.0, 0.0))
        body = self._lookup(self.body.grid, *centre[3:])
        maps = [self._combine(self._lookup(self.spine.grid, *centre[:3]), body)]
        offsets = np.linspace(-0.42, 0.42, samples - 1) * plane.thickness if samples > 2 else \
            [rng.choice([-0.3, 0.3]) * plane.thickness] * (samples - 1)
        for offset in offsets:
            s, v, u = self._coordinates(plane, float(offset), tuple(rng.uniform(-0.5, 0.5, 2)), spine_only=True)
            maps.append(self._combine(self._lookup(self.spine.grid, s, v, u), body))
        return maps, self.body.depth_from_back(centre[3], centre[4])

    @staticmethod
    def _combine(spine: np.ndarray, body: np.ndarray) -> np.ndarray:
        return np.where(spine != 0, spine, body)

    def crossing(self, plane: Plane) -> float:
        """Arc length where the plane crosses the centreline (the canal centre it shows)."""
        along = (self.line.points - plane.origin) @ plane.normal
        k = int(np.argmin(np.abs(along)))
        if 0 < k < len(along) - 1 and along[k - 1] * along[k + 1] < 0:
            lo, hi = (k - 1, k + 1)
            frac = along[lo] / (along[lo] - along[hi])
            return float(self.line.s[lo] + frac * (self.line.s[hi] - self.line.s[lo]))
        return float(self.line.s[k])

    def section_index(self, s: float) -> int:
        return int(np.clip(round(s / self.spine.ds), 0, len(self.spine.sac_area) - 1))

    def wall_segment(self, plane: Plane, s: float) -> tuple[str, str, float]:
        """What the slice crosses at the column's posterior margin, just in front of the canal:
        the disc or vertebral body a radiologist names the slice by, and how far (mm along the
        spine) that point lies from the nearest disc-body boundary as drawn. Within a millimetre
        of one, the slab of a 3-4 mm slice holds both."""
        centre, _, v, _ = self.line.at(s)
        towards = -(v - (v @ plane.normal) * plane.normal)  # anterior, within the plane
        depth = float(np.interp(s, [x.start for x in self.patient.vertebrae], [x.canal_depth for x in self.patient.vertebrae]))
        wall = centre + (depth / 2 + 1.0) * towards / np.linalg.norm(towards)
        s_wall = float(self.line.locate(wall[None])[0][0])
        drawn = [self.spine.voxel_edge(b) for b in self.patient.boundaries()]
        return (*self.patient.segment_at(self.spine.voxel_s(s_wall)), float(np.min(np.abs(np.subtract(drawn, s_wall)))))

    def slice_truth(self, plane: Plane, labels: np.ndarray) -> SliceTruth:
        s = self.crossing(plane)
        k = self.section_index(s)
        segment, kind, boundary = self.wall_segment(plane, s)
        sac = label_mask(labels, SAC_LABELS)
        centre = self.line.at(s)[0]
        col, row = plane.to_pixel(centre)
        # Only the sac around the canal centre (never a stray label elsewhere).
        near = self._near(plane, (col, row), 25.0)
        sac &= near
        area = float(sac.sum() * plane.spacing[0] * plane.spacing[1])
        packing = float(self.spine.packing()[k])
        fat = float(self.spine.dorsal_fat[k])
        cord = float(label_mask(labels[near], (Label.CORD, Label.CONUS)).sum() * plane.spacing[0] * plane.spacing[1])
        metal = bool((labels[self._near(plane, (col, row), 40.0)] == Label.METAL).any())
        box = None
        if sac.any():
            rows_, cols_ = np.nonzero(sac)
            mx, my = 2.5 / plane.spacing[1], 2.5 / plane.spacing[0]
            # Pixel-edge coordinates, as torchvision's boxes: pixel (r, c) covers [c, c + 1) x [r, r + 1).
            box = (float(cols_.min() - mx), float(rows_.min() - my), float(cols_.max() + 1 + mx),
                   float(rows_.max() + 1 + my))
        if metal or box is None:
            level = "other"
        else:
            level = "cord" if cord >= MIN_CORD_MM2 else "rootlet"
        return SliceTruth(level=level, grade=grade_of(packing, fat) if level == "rootlet" else "", sac_mask=sac,
                          dsca_mm2=area, box=box, segment=segment, segment_kind=kind, boundary_mm=boundary,
                          packing=packing, dorsal_fat_mm2=fat, a_subtype=self.patient.a_subtype, metal=metal, s_mm=s)

    def column_targets(self, plane: Plane, labels: np.ndarray) -> tuple[np.ndarray, list[dict]]:
        """The vertebral column in a sagittal slice: a class map (``COLUMN_CLASSES``: vertebral
        body, disc, sacrum) and each structure the slice shows, named, with its pixel box.

        Bone counts as a body only in front of the canal and near the midline of the spine's own
        frame, so posterior elements and the iliac wings never do; the sacrum's rudimentary discs
        count as sacrum.
        """
        s, v, u = self._coordinates(plane, 0.0, (0.0, 0.0), spine_only=True)
        p = self.patient
        column = (np.abs(u) < 32) & (v < -2)
        bone = label_mask(labels, (Label.CORTEX, Label.MARROW, Label.ENDPLATE)) & column
        disc_tissue = label_mask(labels, (Label.ANNULUS, Label.NUCLEUS)) & column
        disc = disc_tissue & (s < p.sacrum.start + 20)
        # The sacrum's rudimentary discs are part of it: one bone to count up from.
        fused = label_mask(labels, (Label.SACRUM, Label.CORTEX, Label.ENDPLATE)) & column & (s >= p.sacrum.start - 0.5)
        sacrum = fused | disc_tissue & (s >= p.sacrum.start + 20)
        classes = np.zeros(labels.shape, np.uint8)
        classes[bone & (s < p.sacrum.start - 0.5)] = COLUMN_CLASSES.index("body")
        classes[disc] = COLUMN_CLASSES.index("disc")
        classes[sacrum] = COLUMN_CLASSES.index("sacrum")
        structures = []
        spans = [(v_.name, "body", v_.start, v_.end) for v_ in p.vertebrae]
        spans += [(d.name, "disc", d.start, d.end) for d in p.discs]
        spans.append(("S1", "sacrum", p.sacrum.start, p.sacrum.end))
        for name, kind, lo, hi in spans:
            rows, cols = np.nonzero((classes == COLUMN_CLASSES.index(kind)) & (s >= lo - 0.5) & (s < hi + 0.5))
            if len(rows) * plane.spacing[0] * plane.spacing[1] < 20:  # a sliver at the edge of the view
                continue
            structures.append({"structure": name, "kind": kind, "x0": int(cols.min()), "y0": int(rows.min()),
                               "x1": int(cols.max()) + 1, "y1": int(rows.max()) + 1})
        return classes, structures

    @staticmethod
    def _near(plane: Plane, centre: tuple[float, float], radius_mm: float) -> np.ndarray:
        rows, cols = plane.shape
        r = (np.arange(rows) - centre[1]) * plane.spacing[0]
        c = (np.arange(cols) - centre[0]) * plane.spacing[1]
        return (r[:, None] ** 2 + c[None, :] ** 2) <= radius_mm**2


def build_anatomy(patient: Patient, anchor: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Anatomy:
    line = build_centreline(patient, anchor)
    return Anatomy(patient, line, build_spine_volume(patient), build_body_volume(patient, line))
