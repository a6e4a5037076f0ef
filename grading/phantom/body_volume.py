"""The trunk around the spine as a label volume of axial sections (z, y', x').

Sections are horizontal (the table's axis), centred on the canal at each height and turned by the
patient's roll, so the body follows the spine's lordosis and lateral shift without tilting with
it. Everything the spine frame does not hold lives here: skin, subcutaneous fat, the abdominal
wall, paraspinal muscles, psoas and quadratus lumborum, kidneys, liver and spleen, the aorta and
inferior vena cava, bowel loops with their varied contents, the iliac wings and gluteal muscles.
The spine volume is laid over this one, so its structures win where both have a label.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grading.phantom.centreline import Centreline
from grading.phantom.patient import Patient
from grading.phantom.shapes import Box, Grid, curve_distance, ellipse, ramp
from grading.phantom.tissues import Label

#: Bowel loops per 100 mm of abdomen, for a patient with no visceral fat.
BOWEL_DENSITY = 90


@dataclass
class BodyVolume:
    grid: Grid  # axes (z, y', x')
    z_to_s: tuple[np.ndarray, np.ndarray]  # (z knots ascending, s at each)
    centre: tuple[np.ndarray, np.ndarray]  # canal centre (x, y) at each z knot
    back: np.ndarray  # canal centre to the skin of the back (mm) at each z knot
    roll: float  # rad

    @property
    def labels(self) -> np.ndarray:
        return self.grid.labels

    def to_body(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(z, y', x') of LPS points (..., 3)."""
        z = points[..., 2]
        zk, _ = self.z_to_s
        xc = np.interp(z, zk, self.centre[0])
        yc = np.interp(z, zk, self.centre[1])
        dx, dy = points[..., 0] - xc, points[..., 1] - yc
        c, s = np.cos(self.roll), np.sin(self.roll)
        return z, -s * dx + c * dy, c * dx + s * dy

    def depth_from_back(self, z: np.ndarray, y_body: np.ndarray) -> np.ndarray:
        """How far (mm) a point lies in front of the skin of the back: what the spine coil sees."""
        return np.interp(z, self.z_to_s[0], self.back) - y_body


class _BodyPainter:
    def __init__(self, patient: Patient, line: Centreline, h: float, dz: float):
        self.p, self.h = patient, h
        hab = patient.habitus
        z = line.points[:, 2]
        order = np.argsort(z)
        self.zk, self.sk = z[order], line.s[order]
        # The trunk does not follow every bend of the spine: its axis is the canal's path, mostly
        # straightened (a line fitted through it), so the belly stays convex whatever the lordosis.
        xk, yk = line.points[order, 0], line.points[order, 1]
        self.xk = 0.5 * xk + 0.5 * np.polyval(np.polyfit(self.zk, xk, 1), self.zk)
        self.yk = 0.35 * yk + 0.65 * np.polyval(np.polyfit(self.zk, yk, 1), self.zk)
        roll = np.deg2rad(hab.roll_deg)
        dx, dy = xk - self.xk, yk - self.yk  # the canal off the trunk's axis, turned into the sections' frame
        self.canal_xk = np.cos(roll) * dx + np.sin(roll) * dy
        self.canal_yk = -np.sin(roll) * dx + np.cos(roll) * dy
        z_axis = np.arange(self.zk[0] - 10, self.zk[-1] + 10 + dz / 2, dz)
        width = hab.half_width * 1.25 + 10
        y_axis = np.arange(-(hab.front_depth * 1.1 + 10), hab.back_depth * 1.1 + 10 + h / 2, h)
        x_axis = np.arange(-width, width + h / 2, h)
        self.grid = Grid(z_axis, y_axis, x_axis)
        self.rng = np.random.default_rng(patient.seed + 17)
        lumbar = [v for v in patient.vertebrae if v.region == "L"]
        self.l1, self.l_last = lumbar[0], lumbar[-1]
        self.l3 = lumbar[min(2, len(lumbar) - 1)]

    def s_of(self, z):
        return np.interp(z, self.zk, self.sk)

    def z_of(self, s: float) -> float:
        return float(np.interp(s, self.sk[::-1], self.zk[::-1]))

    def box(self, s_lo: float, s_hi: float, y=(-1e4, 1e4), x=(-1e4, 1e4)) -> Box | None:
        z0, z1 = sorted((self.z_of(s_lo), self.z_of(s_hi)))
        return self.grid.box((z0, z1), y, x)

    def canal_at(self, s) -> tuple[np.ndarray, np.ndarray]:
        """Where the canal lies in the sections (x', y'), which are centred on the trunk's axis."""
        return np.interp(s, self.sk[::-1], self.canal_xk[::-1]), np.interp(s, self.sk[::-1], self.canal_yk[::-1])

    def level(self, s, knots: list[tuple[float, float]]):
        """A profile along the spine given as (s, value) knots."""
        ks, kv = zip(*knots)
        return np.interp(s, ks, kv)

    # --- the outline and its layers --------------------------------------------------------------
    def extents(self, s):
        """Half-width, back depth and front depth of the trunk (mm from the canal) along the spine."""
        hab, sac = self.p.habitus, self.p.sacrum
        width = hab.half_width * self.level(s, [(0, 1.04), (self.l1.start, 1.0), (self.l3.end, 0.97),
                                                (self.l_last.start, 1.06), (sac.start + 30, 1.1), (sac.end, 1.05)])
        back = hab.back_depth * self.level(s, [(0, 1.0), (self.l_last.start, 0.98), (sac.start + 20, 0.75),
                                               (sac.end, 0.55)])
        front = hab.front_depth * self.level(s, [(0, 1.0), (self.l3.end, 1.0), (sac.start + 30, 0.85), (sac.end, 0.8)])
        return width, back, front

    def outline(self, box: Box, shrink_front, shrink_back, shrink_side):
        """Inside the trunk outline, each side pulled in by its own amount (mm)."""
        width, back, front = self.extents(self.s_of(box.a))
        a = np.maximum(width - shrink_side, 1)
        y = box.b
        depth = np.where(y > 0, np.maximum(back - shrink_back, 1), np.maximum(front - shrink_front, 1))
        rel2 = np.clip(np.abs(y) / depth, 0, 1) ** 2
        # A flatter back (power 4) than belly (power 2): integer powers, computed as squares.
        half = a * np.where(y > 0, np.sqrt(np.sqrt(np.clip(1 - rel2 * rel2, 0, 1))), np.sqrt(np.clip(1 - rel2, 0, 1)))
        half = np.where(np.abs(y) < depth, half, -1)
        return np.abs(box.c) <= half

    def layers(self) -> None:
        """Skin, subcutaneous fat, fascia, the abdominal wall, and inside it fat (peritoneal and
        retroperitoneal alike) for organs and bowel to fill."""
        hab = self.p.habitus
        box = self.grid.box((self.grid.a[0], self.grid.a[-1]), (-1e4, 1e4), (-1e4, 1e4))
        paint = self.grid.paint
        paint(box, self.outline(box, 0, 0, 0), Label.SKIN)
        paint(box, self.outline(box, 2, 2, 2), Label.SUBCUTANEOUS_FAT)
        paint(box, self.outline(box, hab.front_fat, hab.back_fat, hab.side_fat), Label.FASCIA)
        inner = self.outline(box, hab.front_fat + 1.5, hab.back_fat + 1.5, hab.side_fat + 1.5)
        paint(box, inner, Label.ABDOMINAL_WALL)
        wall = 9 + 5 * hab.muscle_bulk
        paint(box, self.outline(box, hab.front_fat + wall, hab.back_fat + 1.5, hab.side_fat + wall), Label.VISCERAL_FAT)
        # Behind the transverse processes, inside the thoracolumbar fascia: fat, then the erector
        # spinae on each side (multifidus follows in muscles()), so fat planes part the muscles.
        _, back, _ = self.extents(self.s_of(box.a))
        room = back - hab.back_fat - 1.5
        width = 26 + 12 * hab.muscle_bulk
        x, y = box.c, box.b
        compartment = inner & (y > 2.0 + 6.0 * (np.abs(x) / 60.0) ** 2) & (np.abs(x) < 2.1 * width + 12)
        paint(box, compartment, Label.INTERMUSCULAR_FAT)
        for sign in (-1, 1):
            erector = ellipse(x, y, sign * (width + 14), 3 + room * 0.5, width + 6, room * 0.52)
            paint(box, compartment & erector, Label.ERECTOR_SPINAE)

    # --- muscles ------------------------------------------------------------------------------
    def tube(self, s_lo: float, s_hi: float, profile, label: int, only=None, angle: float = 0.0,
             power: float = 2.0) -> None:
        """An elliptic tube along the body: ``profile(s)`` gives (cx, cy, ax, ay) per section
        (``power`` 4: a rounded rectangle); painted within its own bounding box only."""
        z0, z1 = sorted((self.z_of(s_lo), self.z_of(s_hi)))
        span = self.grid._span(self.grid.a, z0, z1)
        if span.start >= span.stop:
            return
        s = self.s_of(self.grid.a[span])
        cx, cy, ax, ay = (np.broadcast_to(np.asarray(v, float), s.shape) for v in profile(s))
        reach = np.maximum(ax, ay)
        box = self.grid.box((z0, z1), (float((cy - reach).min()), float((cy + reach).max())),
                            (float((cx - reach).min()), float((cx + reach).max())))
        if box is None:
            return
        k = slice(box.index[0].start - span.start, box.index[0].stop - span.start)
        col = (slice(None), None, None)
        mask = ellipse(box.c, box.b, cx[k][col], cy[k][col], np.maximum(ax[k], 0.01)[col],
                       np.maximum(ay[k], 0.01)[col], angle, power)
        self.grid.paint(box, mask, label, only=only)

    def muscles(self) -> None:
        p, hab = self.p, self.p.habitus
        bulk = hab.muscle_bulk
        sac = p.sacrum
        bottom = sac.end
        cd = 14.0
        back_room = hab.back_depth - hab.back_fat
        m_knots = [(0, 0.55), (self.l1.start, 0.65), (self.l_last.end, 1.0), (sac.start + 40, 0.8), (bottom, 0.3)]
        for sign in (-1, 1):
            # Multifidus beside the spinous processes (largest low down), parted from the erector
            # spinae by a thin plane of fat. A rounded rectangle, not an ellipse: it fills the
            # gutter between the spinous process and the facets, lying on the laminae and facet
            # capsules across its whole width (the bone, painted in the spine's own volume, wins),
            # and follows the canal where the trunk's straighter axis leaves it.
            def multifidus(s, sign=sign, grow=0.0):
                size = bulk * self.level(s, m_knots)
                x0, y0 = self.canal_at(s)
                return (x0 + sign * (6 + 8 * size), y0 + cd / 2 + back_room * 0.47 - 4, 8 * size + 5 + grow,
                        back_room * 0.44 + 4 + grow)

            self.tube(0, bottom, lambda s, sg=sign: multifidus(s, sg, 1.2), Label.INTERMUSCULAR_FAT,
                      only=(Label.ERECTOR_SPINAE, Label.VISCERAL_FAT), power=4.0)
            self.tube(0, bottom, multifidus, Label.MULTIFIDUS,
                      only=(Label.ERECTOR_SPINAE, Label.INTERMUSCULAR_FAT, Label.VISCERAL_FAT), power=4.0)
        # Quadratus lumborum: lateral to the transverse processes, T12 to the iliac crest.
        q_knots = [(p.vertebra("T12").start, 0.0), (self.l1.start, 0.6), (self.l3.end, 1.0),
                   (self.l_last.start, 0.7), (self.l_last.end, 0.0)]
        for sign in (-1, 1):
            def ql(s, sign=sign):
                size = bulk * self.level(s, q_knots)
                return sign * (58 + 8 * size), -2.0, 16 * size, 10 * size

            self.tube(p.vertebra("T12").start, self.l_last.end, ql, Label.QUADRATUS_LUMBORUM, angle=sign * 0.45)
        # Psoas: against the vertebral bodies from L1, growing to ~40 mm at L5, then forwards into the pelvis.
        ps_knots = [(self.l1.start - 10, 0.0), (self.l1.end, 0.35), (self.l_last.end, 1.0), (sac.start + 50, 1.0),
                    (bottom, 0.9)]
        widths = [v.width for v in p.vertebrae]
        tops = [v.start for v in p.vertebrae]
        for sign in (-1, 1):
            def psoas(s, sign=sign):
                size = bulk * self.level(s, ps_knots)
                half = np.interp(s, tops, widths) / 2
                depth = np.interp(s, tops, [v.depth for v in p.vertebrae])
                forward = self.level(s, [(0, 0.0), (sac.start, 0.0), (bottom, 55.0)])
                lateral = self.level(s, [(0, 0.0), (sac.start, 0.0), (bottom, 30.0)])
                ax, ay = 6 + 13 * size, 7 + 14 * size
                return sign * (half + ax * 0.75 + lateral), -(cd / 2 + depth * 0.45) - forward, ax, ay

            self.tube(self.l1.start - 10, bottom, psoas, Label.PSOAS, angle=sign * 0.3)

    # --- organs -------------------------------------------------------------------------------
    def kidneys(self) -> None:
        for sign, shift in ((-1, 8.0), (1, -5.0)):  # the right kidney sits lower
            centre_s = (self.l1.end + self.l1.start) / 2 + shift + self.rng.normal(0, 6)
            half_len = self.rng.uniform(48, 58)
            cx, cy = sign * self.rng.uniform(62, 74), -self.rng.uniform(5, 15)
            angle = sign * 0.6

            def shape(s, dx=0.0, dy=0.0, ax=29.0, ay=19.0):
                k = np.sqrt(np.clip(1 - ((s - centre_s) / half_len) ** 2, 0, 1))
                return cx + dx, cy + dy, ax * k, ay * k

            lo, hi = centre_s - half_len, centre_s + half_len
            self.tube(lo, hi, shape, Label.KIDNEY_CORTEX, only=(Label.VISCERAL_FAT, Label.INTERMUSCULAR_FAT),
                      angle=angle)
            for offset in (-9, 0, 9):
                self.tube(lo, hi, lambda s, o=offset: shape(s, -sign * 4 + o * 0.3, o, 8.0, 5.0),
                          Label.KIDNEY_MEDULLA, only=(Label.KIDNEY_CORTEX,), angle=angle)
            self.tube(lo, hi, lambda s: shape(s, -sign * 14, -4, 8.0, 6.0), Label.VISCERAL_FAT,
                      only=(Label.KIDNEY_CORTEX, Label.KIDNEY_MEDULLA))

    def liver_and_spleen(self) -> None:
        p, hab = self.p, self.p.habitus
        bottom = self.l1.end + self.rng.uniform(0, 35)

        def liver(s):
            k = np.sqrt(np.clip((bottom - s) / 60, 0, 1))
            return -hab.half_width * 0.45, -hab.front_depth * 0.4, hab.half_width * 0.5 * k, hab.front_depth * 0.42 * k

        self.tube(0, bottom, liver, Label.LIVER, only=(Label.VISCERAL_FAT,))
        bottom_spleen = p.vertebra("T12").end + self.rng.uniform(-10, 15)

        def spleen(s):
            k = np.sqrt(np.clip((bottom_spleen - s) / 40, 0, 1))
            return hab.half_width * 0.55, -10.0, 22 * k, 40 * k

        self.tube(0, bottom_spleen, spleen, Label.SPLEEN, only=(Label.VISCERAL_FAT,), angle=0.7)

    def lung_bases(self) -> None:
        """The lungs' posterior recesses reach down beside T11-T12 (to L1 in deep inspiration),
        behind the liver and spleen and parted from them by the diaphragm: an abdominal field of
        view's upper slices cut them as dark crescents, which a canal detector must not box."""
        hab = self.p.habitus
        base = self.rng.uniform(self.p.vertebra("T12").start, self.l1.start + 12)
        room = hab.half_width - hab.side_fat - 14
        for sign in (-1, 1):
            def lung(s, sign=sign, grow=0.0):
                k = np.sqrt(np.clip((base - s) / 80, 0, 1))  # the dome: the recess widens upwards
                return (sign * room * (0.62 - 0.12 * k), 18 - 45 * k, room * 0.4 * k + 6 * k + grow,
                        (22 + 40 * k) * k + grow)

            only = (Label.VISCERAL_FAT, Label.LIVER, Label.SPLEEN, Label.BOWEL_WALL, Label.BOWEL_FLUID,
                    Label.BOWEL_SOLID, Label.BOWEL_GAS, Label.QUADRATUS_LUMBORUM, Label.INTERMUSCULAR_FAT)
            self.tube(0, base, lambda s, sg=sign: lung(s, sg, 4.0), Label.ABDOMINAL_WALL, only=only,
                      angle=sign * 0.5)
            self.tube(0, base, lung, Label.LUNG, only=(Label.ABDOMINAL_WALL,), angle=sign * 0.5)

    def vessels(self) -> None:
        p = self.p
        end = p.sacrum.start + 40
        tops = [v.start for v in p.vertebrae]
        depths = [v.depth for v in p.vertebrae]
        split = self.l_last.start - 0.4 * (self.l_last.end - self.l_last.start)
        vein_split = split + 12
        only = (Label.VISCERAL_FAT, Label.INTERMUSCULAR_FAT, Label.PSOAS)

        def front(s):
            return -(7 + np.interp(s, tops, depths)) - 2

        self.tube(0, split, lambda s: (10.0, front(s) - 11, 10.5, 10.5), Label.AORTA, only=only)
        self.tube(0, vein_split, lambda s: (-14.0, front(s) - 8, 11.5, 8.0), Label.IVC, only=only)
        for sign in (-1, 1):
            self.tube(split, end, lambda s, sg=sign: (10 + sg * (s - split) * 0.45, front(s) - 11 + (s - split) * 0.045,
                                                      6.0, 6.0), Label.AORTA, only=only)
            self.tube(vein_split, end, lambda s, sg=sign: (-14 + sg * (s - vein_split) * 0.45, front(s) - 6, 7.0, 6.0),
                      Label.IVC, only=only)

    def bowel(self) -> None:
        """Loops of bowel packed into the abdomen, each an oblique tube with its wall and a content
        of its own (fluid, faeces, gas, sometimes a gas-fluid level)."""
        p, hab = self.p, self.p.habitus
        top, bottom = p.vertebra("T12").start, p.sacrum.end
        n = int(BOWEL_DENSITY * (bottom - top) / 100 * (1.2 - hab.visceral_fat))
        contents = (Label.BOWEL_FLUID, Label.BOWEL_SOLID, Label.BOWEL_GAS)
        room_x = hab.half_width - hab.side_fat - 20
        room_y = hab.front_depth - hab.front_fat - 18
        for _ in range(n):
            cs = self.rng.uniform(top, bottom)
            rx, ry = self.rng.uniform(8, 24), self.rng.uniform(7, 20)
            rs = self.rng.uniform(12, 45)
            cx, cy = self.rng.uniform(-room_x, room_x), -self.rng.uniform(40, room_y)
            drift = self.rng.normal(0, 0.6, 2)  # the loop runs obliquely through the sections
            wall = self.rng.uniform(1.5, 3.5)

            def loop(s, grow=0.0):
                k = np.sqrt(np.clip(1 - ((s - cs) / rs) ** 2, 0, 1))
                return (cx + drift[0] * (s - cs), cy + drift[1] * (s - cs), (rx + grow) * k, (ry + grow) * k)

            angle = float(self.rng.uniform(0, np.pi))
            self.tube(cs - rs, cs + rs, loop, Label.BOWEL_WALL, only=(Label.VISCERAL_FAT,), angle=angle)
            content = contents[self.rng.choice(3, p=(0.45, 0.4, 0.15))]
            self.tube(cs - rs, cs + rs, lambda s: loop(s, -wall), content, only=(Label.BOWEL_WALL,), angle=angle)

    def pelvis(self) -> None:
        """The iliac wings from the crest down: each a curved plate of bone running from the
        sacroiliac joint forwards and outwards, bowed towards the back, with the iliacus lining its
        inner face (the iliac fossa, painted as psoas: they join as the iliopsoas) and the gluteal
        muscles on its outer face. Thick at the crest and the joint, thin across the fossa. The
        crest's top lies between mid L4 and upper L5 (Tuffier's line), so the lowest lumbar
        slices already cut the wings, as on real scans."""
        p, hab, paint = self.p, self.p.habitus, self.grid.paint
        sac, bulk = p.sacrum, hab.muscle_bulk
        l4 = [v for v in p.vertebrae if v.region == "L"][-2]
        top = float(self.rng.uniform((l4.start + l4.end) / 2, self.l_last.start + 0.3 * (self.l_last.end
                                                                                         - self.l_last.start)))
        bottom = sac.start + 70
        span = self.box(top, bottom)
        if span is None:
            return
        s = self.s_of(span.a)
        t = np.clip((s - top) / (bottom - top), 0, 1)
        crest = 1 - ramp(t, 0, 0.12)  # the first centimetre or so: the crest's thick rim alone
        width = self.extents(s)[0]
        bow = self.rng.uniform(0.12, 0.28)
        gluteal_depth = (12 + 14 * bulk) * (0.6 + 0.4 * ramp(t, 0, 0.4))
        # Beyond the curve: half the thickest bone and the thickest muscle, with a margin.
        reach = 11 + max(float(gluteal_depth.max()), 8 + 12 * bulk) + 2
        for sign in (-1, 1):
            p0 = (sign * (sac.ala_reach + 4 + 28 * (1 - ramp(t, 0, 0.25))), 24 - 6 * t)
            short = (p0[0] + sign * 22, p0[1] - 12)
            full = (sign * (width - hab.side_fat - gluteal_depth - 8), -20 - 40 * t)
            grow = ramp(t, 0, 0.3)
            p1 = tuple(a + (b - a) * grow for a, b in zip(short, full))
            cx, cy = p1[0] - p0[0], p1[1] - p0[1]
            ctrl = ((p0[0] + p1[0]) / 2 - sign * cy * bow, (p0[1] + p1[1]) / 2 + sign * cx * bow)
            knots = [tuple((1 - u) ** 2 * a + 2 * u * (1 - u) * c + u * u * b for a, c, b in zip(p0, ctrl, p1))
                     for u in np.linspace(0, 1, 9)]
            # Paint within the curve's own bounds (the bow stays inside its control polygon).
            xs, ys = [np.asarray(q[0]) for q in (*knots, ctrl)], [np.asarray(q[1]) for q in (*knots, ctrl)]
            y_lo, y_hi = min(float(v.min()) for v in ys), max(float(v.max()) for v in ys)
            x_lo, x_hi = min(float(v.min()) for v in xs), max(float(v.max()) for v in xs)
            box = self.grid.narrow(span, (max(y_lo - reach, -130.0), min(y_hi + reach, 70.0)),
                                   (x_lo - reach, x_hi + reach))
            if box is None:
                continue
            x, y = box.c, box.b
            d, u, side = curve_distance(x, y, knots)
            half = (2.5 + 9 * np.exp(-(u / 0.22) ** 2) + 3 * ramp(u, 0.8, 1.0) + 7 * crest) / 2
            outer, inner = side == sign, side == -sign
            gluteal = gluteal_depth * (1 - ramp(u, 0.85, 1.0))
            paint(box, outer & (d <= half + gluteal), Label.GLUTEAL,
                  only=(Label.INTERMUSCULAR_FAT, Label.VISCERAL_FAT, Label.ABDOMINAL_WALL, Label.ERECTOR_SPINAE,
                        Label.QUADRATUS_LUMBORUM))
            iliacus = (8 + 12 * bulk) * ramp(u, 0.12, 0.35) * ramp(t, 0.05, 0.3)
            paint(box, inner & (d <= half + iliacus), Label.PSOAS,
                  only=(Label.VISCERAL_FAT, Label.INTERMUSCULAR_FAT, Label.QUADRATUS_LUMBORUM, Label.BOWEL_WALL,
                        Label.BOWEL_FLUID, Label.BOWEL_SOLID, Label.BOWEL_GAS))
            paint(box, d <= half, Label.CORTEX)
            paint(box, d <= half - 1.3, Label.ILIUM)


def build_body_volume(patient: Patient, line: Centreline, h: float = 1.25, dz: float = 3.0) -> BodyVolume:
    painter = _BodyPainter(patient, line, h, dz)
    painter.layers()
    painter.muscles()
    painter.kidneys()
    painter.liver_and_spleen()
    painter.lung_bases()
    painter.bowel()
    painter.vessels()
    painter.pelvis()
    return BodyVolume(painter.grid, (painter.zk, painter.sk), (painter.xk, painter.yk), painter.extents(painter.sk)[1],
                      np.deg2rad(patient.habitus.roll_deg))
