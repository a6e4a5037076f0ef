"""The vertebral column and the canal as a label volume in the spine's own frame (s, v, u).

Sections are perpendicular to the centreline every ``ds`` mm, with ``h`` mm pixels; ``u`` is
towards the patient's left and ``v`` posterior, the canal centre at (0, 0). Structures are painted
in an order that lets stenosis emerge from anatomy rather than be drawn: epidural fat fills the
canal and foramina first; bone, discs, facets and ligamenta flava overwrite it; the dural sac is
then its unstenosed outline *intersected with the fat that is left* (minus any lipomatosis pad),
so a bulging disc flattens it, thick ligamenta and facets make it a trefoil, and a slipped
vertebra pinches it. Rootlets are placed inside the sac that results: their packing (nominal
rootlet area / sac area) is what a radiologist reads as the Schizas grade.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from grading.phantom.patient import Disc, Patient, Vertebra
from grading.phantom.shapes import Box, Grid, bump, capsule, capsule3, ellipse, label_mask, ramp
from grading.phantom.tissues import SAC_LABELS, Label

V_RANGE = (-64.0, 74.0)
U_HALF = 64.0


@dataclass
class SpineVolume:
    grid: Grid  # axes (s, v, u)
    ds: float
    h: float
    sac_area: np.ndarray  # (n_s,) mm², CSF + rootlets + cord as painted
    rootlet_area: np.ndarray  # (n_s,) nominal cross-section of the rootlets at each section
    cord_area: np.ndarray  # (n_s,) cord or conus, mm²
    dorsal_fat: np.ndarray  # (n_s,) epidural fat within 6 mm behind the sac's middle half, mm²

    @property
    def labels(self) -> np.ndarray:
        return self.grid.labels

    def voxel_s(self, s: float) -> float:
        """The section a point at arc length ``s`` is drawn from (labels are looked up at the
        nearest voxel), so that what a slice is said to cross is what its image shows."""
        axis = self.grid.a
        return float(axis[int(np.clip(np.floor((s - axis[0]) / self.ds + 0.5), 0, len(axis) - 1))])

    def voxel_edge(self, s: float) -> float:
        """Where a boundary at ``s`` is drawn: the edge below the first voxel at or past it."""
        axis = self.grid.a
        return float(axis[0] + (np.ceil((s - axis[0]) / self.ds) - 0.5) * self.ds)

    def packing(self) -> np.ndarray:
        return np.where(self.sac_area > 0, self.rootlet_area / np.maximum(self.sac_area, 1e-6), 0.0)


def _local(box: Box, v: Vertebra) -> tuple[np.ndarray, np.ndarray]:
    """Section coordinates in the vertebra's own frame (its rotation and anterior slip undone)."""
    vv = box.b + v.slip
    c, s = np.cos(v.rotation), np.sin(v.rotation)
    return c * box.c + s * vv, -s * box.c + c * vv


#: S1 to S5 as fractions of the sacrum's length to the coccyx's tip (S1 about as tall as L5; the
#: coccyx the rest).
SACRAL_SEGMENTS = (0.25, 0.21, 0.17, 0.13, 0.10)


def _within(box: Box, start: float, end: float) -> np.ndarray:
    """Voxels of a box whose section lies in [start, end): a box reaches a voxel past each end,
    and a body or disc painted there would take its neighbour's place at the boundary."""
    return (box.a >= start) & (box.a < end)


def _canal_profile(patient: Patient) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Knots (s, canal width, canal depth) along the whole column, sacral canal included."""
    s = [(v.start + v.end) / 2 for v in patient.vertebrae]
    w = [v.canal_width for v in patient.vertebrae]
    d = [v.canal_depth for v in patient.vertebrae]
    sac = patient.sacrum
    s += [sac.start + 12, sac.start + 45, sac.end]
    w += [w[-1] * 0.85, 14.0, 6.0]
    d += [d[-1] * 0.75, 8.0, 3.5]
    return np.array(s), np.array(w), np.array(d)


class _Painter:
    def __init__(self, patient: Patient, ds: float, h: float):
        self.p = patient
        s_axis = np.arange(0.0, patient.length + ds / 2, ds)
        v_axis = np.arange(V_RANGE[0], V_RANGE[1] + h / 2, h)
        u_axis = np.arange(-U_HALF, U_HALF + h / 2, h)
        self.grid = Grid(s_axis, v_axis, u_axis)
        self.ds, self.h = ds, h
        self.knots = _canal_profile(patient)
        self.rng = np.random.default_rng(patient.seed)

    def canal(self, s):
        ks, kw, kd = self.knots
        return np.interp(s, ks, kw), np.interp(s, ks, kd)

    def box(self, s_lo, s_hi, v_lo=V_RANGE[0], v_hi=V_RANGE[1], u_lo=-U_HALF, u_hi=U_HALF) -> Box | None:
        return self.grid.box((s_lo, s_hi), (v_lo, v_hi), (u_lo, u_hi))

    # --- canal space ---------------------------------------------------------------------------
    def epidural_space(self) -> None:
        box = self.box(0, self.p.length, -20, 22, -30, 30)
        cw, cd = self.canal(box.a)
        self.grid.paint(box, ellipse(box.c, box.b, 0, 0.8, cw / 2 + 1.2, cd / 2 + 1.5), Label.EPIDURAL_FAT)
        for vert, disc in zip(self.p.vertebrae, self.p.discs):
            lo, hi = vert.start + 0.45 * vert.height, disc.end + 1
            box = self.box(lo, hi, -25, 15)
            u, v = _local(box, vert)
            side = vert.canal_width / 2 + vert.pedicle_width / 2 + 2
            grow = bump(box.a, lo, hi)
            for sign in (-1, 1):
                fat = ellipse(u, v, sign * side, -vert.canal_depth / 2 + 2, (vert.pedicle_width / 2 + 4.5) * grow + 0.1,
                              6.5 * grow + 0.1)
                self.grid.paint(box, fat, Label.EPIDURAL_FAT)

    # --- vertebral bodies and discs -----------------------------------------------------------
    def body_outline(self, u, v, vert: Vertebra, scale, grow: float = 0.0):
        """The body's section: a rounded outline with a slightly concave posterior wall."""
        a = vert.width / 2 * scale + grow
        b = vert.depth / 2 * scale + grow
        back = -vert.canal_depth / 2 - 1.3 * (1 - np.clip((u / a) ** 2, 0, 1)) + grow
        centre = -vert.canal_depth / 2 - vert.depth / 2
        return ellipse(u, v, 0, centre, a, b, power=2.0) & (v <= back)

    def vertebral_body(self, vert: Vertebra) -> None:
        reach = max(vert.width, vert.depth) * 0.6 + vert.slip + 2
        box = self.box(vert.start, vert.end, -vert.canal_depth / 2 - vert.depth - reach * 0.2 - vert.slip - 3,
                       -vert.canal_depth / 2 + 4, -reach, reach)
        u, v = _local(box, vert)
        t = (box.a - vert.start) / vert.height
        flare = 1 + 0.07 * (2 * t - 1) ** 2  # a waist between the endplates
        inside = _within(box, vert.start, vert.end)
        self.grid.paint(box, self.body_outline(u, v, vert, flare) & inside, Label.CORTEX)
        self.grid.paint(box, self.body_outline(u, v, vert, flare, grow=-1.3) & inside, Label.MARROW)
        near_plate = (box.a - vert.start < 1.3) | (vert.end - box.a < 1.3)
        self.grid.paint(box, self.body_outline(u, v, vert, flare) & near_plate & inside, Label.ENDPLATE)

    def disc(self, disc: Disc, above: Vertebra, below: Vertebra | None) -> None:
        reach = max(above.width, above.depth) * 0.65 + above.slip + 3
        box = self.box(disc.start, disc.end, -above.canal_depth / 2 - above.depth - reach * 0.2 - above.slip - 4,
                       -above.canal_depth / 2 + disc.bulge + disc.protrusion + 4, -reach, reach)
        if box is None:
            return
        t = (box.a - disc.start) / max(disc.height, 1e-6)
        inside = _within(box, disc.start, disc.end)
        # Interpolate the outline between the two bodies it joins (the sacrum counts as a wider body).
        ref = above
        u, v = _local(box, ref)
        width = above.width if below is None else above.width * (1 - t) + below.width * t
        swell = 1.03 + 0.03 * np.sin(np.pi * t)
        outline = ellipse(u, v, 0, -ref.canal_depth / 2 - ref.depth / 2, width / 2 * swell, ref.depth / 2 * swell,
                          power=2.0)
        wall = -ref.canal_depth / 2 - 1.0 * (1 - np.clip((u / (width / 2)) ** 2, 0, 1))
        bulge = disc.bulge * np.sin(np.pi * t) * np.sqrt(np.clip(1 - (u / (0.5 * width)) ** 2, 0, 1))
        self.grid.paint(box, outline & (v <= wall + bulge + 0.5) & inside, Label.ANNULUS)
        if disc.protrusion > 0:
            size = disc.protrusion * np.sqrt(np.clip(np.sin(np.pi * t), 0, 1))
            knob = ellipse(u, v, disc.protrusion_u, -ref.canal_depth / 2 + size / 2 - 0.5, 3.5 + size / 2,
                           size / 2 + 0.8)
            self.grid.paint(box, knob & (size > 0.5) & inside, Label.ANNULUS)
        if disc.hydration > 0.12:
            k = np.sqrt(disc.hydration)
            nucleus = ellipse(u, v, 0, -ref.canal_depth / 2 - ref.depth * 0.45, width * 0.3 * k, ref.depth * 0.27 * k)
            core = np.abs(t - 0.5) < 0.42 * k
            self.grid.paint(box, nucleus & core, Label.NUCLEUS)

    # --- posterior elements ---------------------------------------------------------------------
    def posterior_elements(self, vert: Vertebra, disc_below: Disc) -> None:
        p = self.grid
        cw, cd, pw, H = vert.canal_width, vert.canal_depth, vert.pedicle_width, vert.height
        pillar_u = cw / 2 + pw / 2 + 1.5
        # Pedicles: from the body's posterolateral corner back to the articular pillars.
        lo, hi = vert.start + 0.06 * H, vert.start + 0.55 * H
        reach = pillar_u + pw + vert.slip + 2
        box = self.box(lo, hi, -cd / 2 - 8 - vert.slip - pw, cd / 2 + pw + 2, -reach, reach)
        u, v = _local(box, vert)
        r = pw / 2 * (0.35 + 0.65 * np.sqrt(bump(box.a, lo, hi)))
        for sign in (-1, 1):
            p.paint(box, capsule(u, v, (sign * (cw / 2 + pw / 2), -cd / 2 - 4), (sign * pillar_u, cd / 2 - 2.5), r),
                    Label.PEDICLE)
        # Transverse processes, angled slightly backwards.
        lo, hi = vert.start + 0.15 * H, vert.start + 0.52 * H
        reach = vert.transverse_reach + 6 + vert.slip
        box = self.box(lo, hi, -12 - vert.slip, 16, -reach, reach)
        u, v = _local(box, vert)
        thick = (3.0 if vert.region == "L" else 2.5) * np.sqrt(bump(box.a, lo, hi)) + 0.2
        for sign in (-1, 1):
            p.paint(box, capsule(u, v, (sign * (pillar_u - 1), 0.5), (sign * vert.transverse_reach, 5.5), thick),
                    Label.TRANSVERSE_PROCESS)
        # Laminae: the canal's posterior roof, meeting in the midline; a thin plane of fat separates
        # them (and the spinous process) from the muscles.
        lo, hi = vert.start + 0.3 * H, vert.end - 0.08 * H
        reach = pillar_u + 8 + vert.slip
        box = self.box(lo, hi, cd / 2 - 10 - vert.slip, cd / 2 + 12, -reach, reach)
        u, v = _local(box, vert)
        for sign in (-1, 1):
            lamina = ((sign * (pillar_u + 0.5), cd / 2 - 2.0), (-sign * 1.5, cd / 2 + 3.3))  # overlapping at the midline
            p.paint(box, capsule(u, v, *lamina, 3.3 + 1.6), Label.INTERMUSCULAR_FAT, only=(0,))
            p.paint(box, capsule(u, v, *lamina, 3.3), Label.LAMINA)
        p.paint(box, ellipse(u, v, 0.0, cd / 2 + 2.6, 4.5, 3.4), Label.LAMINA)  # a rounded junction, no notch
        # Spinous process: a paddle reaching further back lower down (it slopes caudally).
        lo, hi = vert.start + 0.42 * H, vert.end + 0.15 * disc_below.height
        box = self.box(lo, hi, cd / 2 - 2 - vert.slip, vert.spinous_length + 6, -8 - vert.slip, 8 + vert.slip)
        u, v = _local(box, vert)
        tip = cd / 2 + 6 + (vert.spinous_length - cd / 2 - 6) * np.clip(0.6 + 0.8 * ramp(box.a, lo, hi), 0, 1)
        width = 3.0 + 0.8 * ramp(box.a, lo, hi)
        within = box.a <= hi - 0.5
        p.paint(box, capsule(u, v, (0.0, cd / 2 + 4), (0.0, tip + 1.2), width + 1.4) & within, Label.INTERMUSCULAR_FAT,
                only=(0,))
        p.paint(box, capsule(u, v, (0.0, cd / 2 + 4), (0.0, tip), width) & within, Label.SPINOUS_PROCESS)

    def facet_joint(self, upper: Vertebra, lower: Vertebra | None, disc: Disc, level_from_bottom: int) -> None:
        """Inferior articular process of ``upper`` behind-medial, superior articular process of
        ``lower`` in front-lateral, the joint cleft between them, at the level of ``disc``."""
        p = self.grid
        lower = lower or upper
        cw = (upper.canal_width + lower.canal_width) / 2
        alpha = np.deg2rad({0: 38, 1: 47, 2: 55}.get(level_from_bottom, 65 if upper.region == "L" else 15))
        e = np.array([np.cos(alpha), np.sin(alpha)])  # along the cleft, anteromedial -> posterolateral
        n_al = np.array([e[1], -e[0]])  # anterolateral normal
        f = disc.facet
        lo, hi = disc.start - 0.38 * upper.height, disc.end + 0.18 * lower.height
        jx = cw / 2 + 4.0 - 0.45 * f
        jy = 2.0
        for process, vert, towards, s_range in (
                (Label.SUPERIOR_ARTICULAR, lower, n_al, (lo, disc.end + 0.42 * lower.height)),
                (Label.INFERIOR_ARTICULAR, upper, -n_al, (upper.start + 0.55 * upper.height, hi))):
            reach = cw / 2 + 22 + f + vert.slip
            box = self.box(*s_range, -14 - vert.slip, 22, -reach, reach)
            u, v = _local(box, vert)
            size = np.sqrt(bump(box.a, *s_range)) * 0.6 + 0.4
            for sign in (-1, 1):
                cx = sign * (jx + towards[0] * (3.6 + 0.5 * f))
                cy = jy + towards[1] * (3.6 + 0.5 * f)
                angle = sign * alpha if sign > 0 else np.pi - alpha
                p.paint(box, ellipse(u, v, cx, cy, (7.5 + f) * size + 1.5, (3.4 + 0.5 * f) * size + 1.5, angle),
                        Label.INTERMUSCULAR_FAT, only=(0,))
                p.paint(box, ellipse(u, v, cx, cy, (7.5 + f) * size, (3.4 + 0.5 * f) * size, angle), process)
        box = self.box(lo + 2, hi - 2, -12 - upper.slip, 16, -(cw / 2 + 16 + f), cw / 2 + 16 + f)
        if box is None:
            return
        u, v = _local(box, upper)
        for sign in (-1, 1):
            angle = sign * alpha if sign > 0 else np.pi - alpha
            p.paint(box, ellipse(u, v, sign * jx, jy, 6.5 + 0.5 * f, 0.55, angle), Label.FACET_JOINT)

    def ligamentum_flavum(self, upper: Vertebra, disc: Disc, lower: Vertebra | None) -> None:
        """A V of ligament from each facet capsule to the midline, lining the canal's back; it
        thickens inwards, towards the sac."""
        lo = upper.start + 0.55 * upper.height
        hi = disc.end + 0.22 * (lower.height if lower else 20.0)
        box = self.box(lo, hi, -10 - upper.slip, upper.canal_depth / 2 + 6, -(upper.canal_width / 2 + 8),
                       upper.canal_width / 2 + 8)
        u, v = _local(box, upper)
        t = disc.flavum * (0.55 + 0.45 * bump(box.a, lo, hi))
        cw, cd = upper.canal_width, upper.canal_depth
        outer_mid = cd / 2 + 2.0  # the ligament's posterior surface stays put: thickening narrows the canal
        for sign in (-1, 1):
            p0 = (sign * (cw / 2 - 0.5 - 0.3 * disc.facet), -0.5 + t / 2 * 0.3)
            p1 = (0.0, outer_mid - t / 2)
            self.grid.paint(box, capsule(u, v, p0, p1, t / 2), Label.LIGAMENTUM_FLAVUM)

    def interspinous(self) -> None:
        for upper, lower in zip(self.p.vertebrae[:-1], self.p.vertebrae[1:]):
            lo, hi = upper.end - 0.2 * upper.height, lower.start + 0.5 * lower.height
            box = self.box(lo, hi, 0, 70, -4, 4)
            cd = upper.canal_depth
            self.grid.paint(box, (box.b > cd / 2 + 3) & (box.b < upper.spinous_length - 4), Label.INTERSPINOUS_LIGAMENT,
                            only=(0,))

    # --- sacrum ---------------------------------------------------------------------------------
    def sacrum(self) -> None:
        """S1 to the coccyx: five fused segments narrowing caudally, each waisted like a vertebral
        body, parted by rudimentary discs (the S1/S2 one often still bright on T2); the alae out
        to the sacroiliac joints in its upper part, the dorsal wall and median crest behind the
        sacral canal. S1 is as deep as L5 over its whole height: a locator that has only seen a
        smooth wedge takes a real S1 for a sixth lumbar body and names every level one too low."""
        sac = self.p.sacrum
        upper_end = sac.start + 0.45 * (sac.end - sac.start)
        for lo, hi, reach in ((sac.start, upper_end, sac.ala_reach + 2), (upper_end, sac.end, sac.width / 2 + 8)):
            box = self.box(lo, hi, -sac.depth - 14, 30, -reach, reach)
            s = box.a
            t = (s - sac.start) / (sac.end - sac.start)
            u, v = box.c, box.b
            cw, cd = self.canal(s)
            centre, body_w, body_d = self._sacral_body(s)
            body = ellipse(u, v, 0, centre, body_w, body_d) & (v <= -cd / 2)
            ala_half = np.clip(1 - t / 0.42, 0, 1) ** 0.6
            ala_a, ala_b = sac.ala_reach * ala_half + 0.1, (body_d + 6) * ala_half + 0.1
            ala = ellipse(u, v, 0, centre * 0.6, ala_a, ala_b)
            dorsal = ellipse(u, v, 0, cd / 2 + 3, cw / 2 + 7, 4.5 * (1 - 0.4 * t)) | (
                (np.abs(u) < 3.5) & (v > cd / 2) & (v < cd / 2 + 14 * (1 - 0.5 * t)))
            inside = _within(box, sac.start, sac.end)
            body &= inside
            bone = (body | ala | dorsal) & inside
            self.grid.paint(box, bone, Label.CORTEX)
            inner = ellipse(u, v, 0, centre, body_w - 1.3, body_d - 1.3) | ellipse(
                u, v, 0, centre * 0.6, np.maximum(ala_a - 1.5, 0.1), np.maximum(ala_b - 1.5, 0.1))
            self.grid.paint(box, inner & bone, Label.SACRUM)
            self.grid.paint(box, (s - sac.start < 1.3) & body, Label.ENDPLATE)
        self._sacral_discs()

    def _sacral_joints(self) -> np.ndarray:
        """s of S1/S2 ... S5/coccyx."""
        sac = self.p.sacrum
        return sac.start + (sac.end - sac.start) * np.cumsum(SACRAL_SEGMENTS)

    def _sacral_body(self, s):
        """The fused bodies' section at ``s``: centre (v) and half-axes (u, v). Each segment keeps
        most of its depth down to a waist at the joint below it."""
        sac = self.p.sacrum
        t = (s - sac.start) / (sac.end - sac.start)
        knots = np.concatenate([[0.0], np.cumsum(SACRAL_SEGMENTS), [1.0]])
        waist = 1 - 0.12 * sum(np.exp(-((s - joint) / 3.0) ** 2) for joint in self._sacral_joints())
        half_w = sac.width / 2 * np.interp(t, knots, (1.0, 0.86, 0.7, 0.55, 0.44, 0.36, 0.25)) * waist
        half_d = sac.depth / 2 * np.interp(t, knots, (1.0, 0.93, 0.76, 0.63, 0.53, 0.46, 0.4)) * waist
        return -self.canal(s)[1] / 2 - half_d, half_w, half_d

    def _sacral_discs(self) -> None:
        """Rudimentary discs at the joints of S1 to S5, thinner caudally, each between two thin
        endplates, inside the bodies only (never the alae). Drawn from their own stream, so that
        every other draw of the patient stays as it was."""
        rng = np.random.default_rng([self.p.seed, Label.SACRUM])
        fused = (Label.CORTEX, Label.SACRUM, Label.ENDPLATE)
        thickness = ((1.5, 3.5), (1.0, 2.0), (1.0, 1.5), (1.0, 1.5))
        for k, (joint, (lo, hi)) in enumerate(zip(self._sacral_joints(), thickness)):
            half = float(rng.uniform(lo, hi)) / 2
            box = self.box(joint - half - 1, joint + half + 1, -self.p.sacrum.depth - 14, 0)
            if box is None:
                continue
            centre, half_w, half_d = self._sacral_body(box.a)
            body = ellipse(box.c, box.b, 0, centre, half_w - 1.3, half_d - 1.3)
            gap = np.abs(box.a - joint)
            self.grid.paint(box, body & (gap <= half + 1), Label.ENDPLATE, only=fused)
            self.grid.paint(box, body & (gap <= half), Label.ANNULUS, only=fused)
            if k == 0 and rng.random() < 0.5:  # a nucleus left in the S1/S2 disc: a bright line on T2
                core = ellipse(box.c, box.b, 0, centre, half_w / 2, half_d / 2)
                self.grid.paint(box, core & (gap <= half - 0.5), Label.NUCLEUS, only=(Label.ANNULUS,))

    # --- dural sac and contents -----------------------------------------------------------------
    def sac_shape(self, box: Box):
        """The unstenosed sac outline at each section: area from the patient, oval in the
        thoracic spine, triangular lower down (posterior half narrowing to the midline)."""
        p = self.p
        centres = [(v.start + v.end) / 2 for v in p.vertebrae] + [p.sacrum.start + 10, p.sacrum.sac_end]
        areas = [p.sac_area[v.name] for v in p.vertebrae] + [p.sac_area[p.vertebrae[-1].name] * 0.75, 25.0]
        s = box.a
        area = np.interp(s, centres, areas)
        lumbar = np.interp(s, [p.vertebrae[2].end, p.vertebrae[4].start], [0.0, 1.0])
        aspect = 1.15 + 0.4 * lumbar
        tri = p.sac_triangularity * lumbar
        # The triangular taper removes ~tri/3 of the area: grow the ellipse to keep the area.
        b = np.sqrt(area / (np.pi * aspect * (1 - tri / 3)))
        a = aspect * b
        _, cd = self.canal(s)
        vc = -cd / 2 + 1.3 + b
        v_rel = (box.b - vc) / b
        half = a * np.sqrt(np.clip(1 - v_rel**2, 0, 1)) * (1 - tri * np.clip(v_rel, 0, 1))
        inside = (np.abs(box.c) <= half) & (np.abs(v_rel) <= 1)
        return inside & (s <= p.sacrum.sac_end), a, b, vc

    def dural_sac(self) -> np.ndarray:
        box = self.box(0, self.p.sacrum.sac_end + 1, -22, 22, -22, 22)
        inside, a, b, vc = self.sac_shape(box)
        pad = np.zeros(inside.shape, bool)
        for disc in self.p.discs:
            if disc.lipomatosis > 0:
                lo, hi = disc.start - 25, disc.end + 10
                depth = disc.lipomatosis * bump(box.a, lo, hi)
                _, cd = self.canal(box.a)
                pad |= ellipse(box.c, box.b, 0, cd / 2 + 1, 6 + depth, depth + 0.01)
        self.grid.paint(box, inside, Label.CSF, only=(Label.EPIDURAL_FAT,), exclude=pad)
        return box

    def cord(self, box: Box) -> None:
        tip = self.p.conus_tip
        s = box.a
        taper = np.clip((tip - s) / 18.0, 0, 1)  # the conus narrows over its last ~18 mm
        a, b = 4.6 * np.sqrt(taper), 3.6 * np.sqrt(taper)
        _, cd = self.canal(s)
        sac_b = np.sqrt(self.p.sac_area[self.p.vertebrae[0].name] / (np.pi * 1.15))
        vc = -cd / 2 + 1.3 + sac_b - 0.4
        body = ellipse(box.c, box.b, 0.3, vc, a + 1e-3, b + 1e-3) & (s < tip)
        self.grid.paint(box, body & (s < tip - 18), Label.CORD, only=(Label.CSF,))
        self.grid.paint(box, body & (s >= tip - 18), Label.CONUS, only=(Label.CSF,))
        filum = ellipse(box.c, box.b, 0.3, vc, 0.6, 0.6) & (s >= tip)
        self.grid.paint(box, filum, Label.ROOTLETS, only=(Label.CSF,))

    def rootlets(self, box: Box) -> tuple[np.ndarray, np.ndarray]:
        """Cauda equina rootlets as tubes: each has a home position (the patient's Schizas A
        pattern, in sac-normalised coordinates) and a spread position; the more crowded the sac,
        the closer each rootlet moves to its spread position, until at high packing the sac is
        filled. Returns the nominal rootlet area and the sac area per section (whole grid)."""
        p, rng, h = self.p, self.rng, self.h
        labels = self.grid.labels[box.index]
        sac = label_mask(labels, (Label.CSF, Label.CORD, Label.CONUS))
        area = sac.sum(axis=(1, 2)) * h * h
        n_sections = len(self.grid.a)
        full_sac, full_roots = np.zeros(n_sections), np.zeros(n_sections)
        ks = np.arange(box.index[0].start, box.index[0].stop)
        full_sac[ks] = area
        s = self.grid.a[ks]
        # Roots leave the sac in pairs at every level: ~40 at the conus, ~20 at S1.
        lumbar = [v for v in p.vertebrae if v.region == "L"]
        exits = [v.start + 0.35 * v.height for v in lumbar] + [p.sacrum.start + 8 * k for k in range(1, 6)]
        n0 = 4 * len(exits)
        radii = rng.uniform(0.5, 0.85, n0)
        home = _pattern_positions(p.a_subtype, n0, rng)
        spread = _sunflower(n0, 0.86)
        rows, cols = linear_sum_assignment(((home[:, None, :] - spread[None, :, :]) ** 2).sum(-1))
        spread = spread[cols[np.argsort(rows)]]
        # Lateral rootlets exit first.
        order = np.argsort(-np.abs(home[:, 0]) + 0.2 * rng.normal(size=n0))
        exit_s = np.empty(n0)
        for rank, idx in enumerate(order):
            exit_s[idx] = exits[min(rank // 4, len(exits) - 1)]
        below_conus = s >= p.conus_tip - 16
        present = (s[:, None] < exit_s[None, :]) & below_conus[:, None]
        nominal = (present * (np.pi * radii**2)[None, :]).sum(1)
        full_roots[ks] = np.where(area > 0, nominal, 0.0)
        packing = np.where(area > 0, nominal / np.maximum(area, 1e-6), 0)
        # Centroid and half-extents of each section's sac (what the rootlets are placed within).
        vv, uu = self.grid.b[box.index[1]], self.grid.c[box.index[2]]
        count = np.maximum(sac.sum((1, 2)), 1)
        cu = (sac.sum(1) * uu).sum(1) / count
        cv = (sac.sum(2) * vv).sum(1) / count
        any_u, any_v = sac.any(1), sac.any(2)
        half_u = np.where(any_u.any(1), (np.where(any_u, uu, -1e9).max(1) - np.where(any_u, uu, 1e9).min(1)) / 2, 1)
        half_v = np.where(any_v.any(1), (np.where(any_v, vv, -1e9).max(1) - np.where(any_v, vv, 1e9).min(1)) / 2, 1)
        wiggle = 0.06 * np.sin(s[:, None] / rng.uniform(25, 60, n0)[None, :] + rng.uniform(0, 6.3, n0)[None, :])
        t = np.clip((packing - 0.3) / 0.35, 0, 1)[:, None, None]
        pos = (1 - t) * home[None] + t * spread[None] + wiggle[..., None]
        around_conus = (s < p.conus_tip)[:, None, None]  # rootlets surround the conus, not cross it
        radius_norm = np.linalg.norm(pos, axis=-1, keepdims=True)
        pos = np.where(around_conus, pos / np.maximum(radius_norm, 1e-6) * np.maximum(radius_norm, 0.7), pos)
        centre_u = cu[:, None] + pos[..., 0] * half_u[:, None]
        centre_v = cv[:, None] + pos[..., 1] * half_v[:, None]
        _stamp_discs(labels, vv, uu, centre_v, centre_u, radii, present & (area[:, None] > 0), h)
        # Crowded beyond recognition (Schizas C/D): the sac is one grey mass of rootlets.
        packed = (packing >= 0.8) & (s >= p.conus_tip)
        fill = sac & packed[:, None, None] & (labels == Label.CSF)
        labels[fill] = Label.ROOTLETS
        return full_roots, full_sac

    def exiting_roots(self) -> None:
        for vert, disc in zip(self.p.vertebrae, self.p.discs):
            if vert.region != "L":
                continue
            cw, cd, pw = vert.canal_width, vert.canal_depth, vert.pedicle_width
            for sign in (-1, 1):
                path = [(vert.start + 0.3 * vert.height, -1.5, sign * (cw / 2 - 2.5)),
                        (vert.start + 0.72 * vert.height, -cd / 2 + 1.5 - vert.slip, sign * (cw / 2 + pw / 2 + 2.5)),
                        (disc.end + 2, -cd / 2 - 6 - vert.slip, sign * (cw / 2 + pw + 14))]
                for (p0, p1), radius in zip(zip(path[:-1], path[1:]), (1.9, 2.6)):
                    lo, hi = min(p0[0], p1[0]) - 3, max(p0[0], p1[0]) + 3
                    box = self.box(lo, hi, min(p0[1], p1[1]) - 4, max(p0[1], p1[1]) + 4,
                                   min(p0[2], p1[2]) - 4, max(p0[2], p1[2]) + 4)
                    self.grid.paint(box, capsule3(box.a, box.b, box.c, p0, p1, radius), Label.NERVE_ROOT,
                                    only=(Label.EPIDURAL_FAT, 0))

    def metal(self) -> None:
        for name in self.p.metal_levels:
            vert = self.p.vertebra(name)
            lo, hi = vert.start + 0.2 * vert.height, vert.start + 0.5 * vert.height
            box = self.box(lo - 2, hi + 2)
            u, v = _local(box, vert)
            mid = (lo + hi) / 2
            for sign in (-1, 1):
                entry = (sign * (vert.canal_width / 2 + vert.pedicle_width / 2 + 5), vert.canal_depth / 2 + 8)
                target = (sign * 5.0, -vert.canal_depth / 2 - vert.depth * 0.6)
                self.grid.paint(box, capsule(u, v, entry, target, 3.0) & (np.abs(box.a - mid) < 3.2), Label.METAL)
        names = [v.name for v in self.p.vertebrae]
        if len(self.p.metal_levels) == 2:  # rods joining the screw heads
            a, b = (self.p.vertebra(n) for n in self.p.metal_levels)
            if names.index(b.name) == names.index(a.name) + 1:
                lo, hi = a.start + 0.35 * a.height, b.start + 0.35 * b.height
                box = self.box(lo, hi)
                u, v = _local(box, a)
                for sign in (-1, 1):
                    rod = ellipse(u, v, sign * (a.canal_width / 2 + a.pedicle_width / 2 + 5), a.canal_depth / 2 + 11,
                                  3.0, 3.0)
                    self.grid.paint(box, rod, Label.METAL)


def _stamp_discs(labels, vv, uu, centre_v, centre_u, radii, present, h) -> None:
    """Set ROOTLETS in discs of ``radii`` (mm) around each centre, where the sac's CSF is."""
    r_max = radii.max()
    k = int(np.ceil(r_max / h))
    off = np.arange(-k, k + 1)
    dv, du = np.meshgrid(off, off, indexing="ij")
    dv, du = dv.ravel(), du.ravel()
    dist2 = (dv * h) ** 2 + (du * h) ** 2
    n_s, n_r = centre_v.shape
    iv = np.rint((centre_v - vv[0]) / h).astype(int)
    iu = np.rint((centre_u - uu[0]) / h).astype(int)
    keep = present[..., None] & (dist2[None, None, :] <= (radii ** 2)[None, :, None])
    s_idx = np.broadcast_to(np.arange(n_s)[:, None, None], keep.shape)[keep]
    v_idx = (iv[..., None] + dv[None, None, :])[keep]
    u_idx = (iu[..., None] + du[None, None, :])[keep]
    ok = (v_idx >= 0) & (v_idx < labels.shape[1]) & (u_idx >= 0) & (u_idx < labels.shape[2])
    s_idx, v_idx, u_idx = s_idx[ok], v_idx[ok], u_idx[ok]
    target = labels[s_idx, v_idx, u_idx] == Label.CSF
    labels[s_idx[target], v_idx[target], u_idx[target]] = Label.ROOTLETS


def _sunflower(n: int, radius: float) -> np.ndarray:
    """``n`` points spread evenly over a disc (Vogel's spiral)."""
    k = np.arange(n) + 0.5
    r = radius * np.sqrt(k / n)
    theta = k * np.pi * (3 - np.sqrt(5))
    return np.stack([r * np.cos(theta), r * np.sin(theta)], 1)


def _pattern_positions(pattern: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Rootlet home positions (p lateral, q posterior; unit-disc sac coordinates) for the supine
    Schizas A patterns: A1 dorsal under half the sac, A2 a dorsal horseshoe on the dura, A3
    dorsal over half, A4 central."""
    points: list[tuple[float, float]] = []
    min_gap = 0.16 if pattern == "A4" else 0.14
    for _ in range(n * 200):
        if len(points) >= n:
            break
        if pattern == "A2":
            angle = np.pi / 2 + rng.uniform(-1.5, 1.5)
            radius = rng.uniform(0.6, 0.86)
            p, q = radius * np.cos(angle), radius * np.sin(angle)
        else:
            centre, spread = {"A1": ((0.0, 0.45), 0.45), "A3": ((0.0, 0.2), 0.7), "A4": ((0.0, 0.0), 0.55)}[pattern]
            r, t = spread * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
            p, q = centre[0] + r * np.cos(t), centre[1] + r * np.sin(t)
        if p * p + q * q > 0.86**2:
            continue
        if all((p - x) ** 2 + (q - y) ** 2 > min_gap**2 for x, y in points):
            points.append((p, q))
    while len(points) < n:  # a crowded pattern: the rest go anywhere in the sac
        r, t = 0.85 * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
        points.append((r * np.cos(t), r * np.sin(t)))
    return np.array(points)


def build_spine_volume(patient: Patient, ds: float = 1.0, h: float = 0.5) -> SpineVolume:
    painter = _Painter(patient, ds, h)
    painter.epidural_space()
    painter.interspinous()
    verts, discs = patient.vertebrae, patient.discs
    for i, (vert, disc) in enumerate(zip(verts, discs)):
        below = verts[i + 1] if i + 1 < len(verts) else None
        painter.vertebral_body(vert)
        painter.disc(disc, vert, below)
    painter.sacrum()
    for i, (vert, disc) in enumerate(zip(verts, discs)):
        below = verts[i + 1] if i + 1 < len(verts) else None
        painter.posterior_elements(vert, disc)
        painter.facet_joint(vert, below, disc, len(verts) - 1 - i)
        painter.ligamentum_flavum(vert, disc, below)
    painter.metal()
    box = painter.dural_sac()
    painter.cord(box)
    roots, sac = painter.rootlets(box)
    painter.exiting_roots()
    labels = painter.grid.labels
    cord = label_mask(labels, (Label.CORD, Label.CONUS)).sum(axis=(1, 2)) * h * h
    return SpineVolume(painter.grid, ds, h, sac, roots, cord, _dorsal_fat(labels, box, h))


def _dorsal_fat(labels: np.ndarray, box: Box, h: float, reach_mm: float = 6.0) -> np.ndarray:
    """Epidural fat behind the sac, per section: Schizas D is a C without it."""
    view = labels[box.index]
    sac = label_mask(view, SAC_LABELS)
    fat = view == Label.EPIDURAL_FAT
    n_v = view.shape[1]
    has = sac.any(1)  # (s, u)
    edge = n_v - 1 - np.argmax(sac[:, ::-1, :], axis=1)  # last sac row per column
    reach = int(round(reach_mm / h))
    cum = np.concatenate([np.zeros_like(fat[:, :1]), np.cumsum(fat, axis=1)], axis=1)
    hi = np.clip(edge + 1 + reach, 0, n_v)
    behind = np.take_along_axis(cum, hi[:, None, :], 1)[:, 0] - np.take_along_axis(cum, edge[:, None, :] + 1, 1)[:, 0]
    # The middle half of the sac's width: the lateral recesses do not count.
    cols = np.arange(view.shape[2])[None, :]
    first = np.where(has.any(1), np.argmax(has, axis=1), 0)[:, None]
    last = np.where(has.any(1), view.shape[2] - 1 - np.argmax(has[:, ::-1], axis=1), 0)[:, None]
    quarter = (last - first) / 4
    middle = has & (cols >= first + quarter) & (cols <= last - quarter)
    out = np.zeros(labels.shape[0])
    out[box.index[0]] = (behind * middle).sum(1) * h * h
    return out
