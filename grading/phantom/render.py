"""Draw one phantom axial T2 slice: anatomy in patient millimetres, then scanner effects.

Shapes are ellipses with partial-volume edges (coverage from an approximate signed distance), so
areas stay exact at any pixel spacing. Local anatomical axes: ``u`` towards the patient's left,
``v`` posterior, origin at the centre of the dural sac.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter, zoom

from grading.phantom.anatomy import SliceAnatomy

# T2-weighted turbo spin echo signal, relative to CSF.
CSF, FAT, MUSCLE, MARROW, CORTEX, LIGAMENT, ROOTLET, CORD = 1.0, 0.78, 0.22, 0.42, 0.07, 0.1, 0.17, 0.4
NUCLEUS, ANNULUS, ABDOMEN, VESSEL_VOID, COMPRESSED_SAC = 0.62, 0.13, 0.3, 0.04, 0.43


@dataclass(frozen=True)
class Habitus:
    """A patient's body shape, fixed for the whole series."""

    half_width: float  # body outline, mm
    back_depth: float  # canal centre to the skin of the back, mm
    front_depth: float  # canal centre to the skin of the belly, mm
    fat_thickness: float
    body_half_width: float  # vertebral body
    body_half_depth: float
    rotation_deg: float  # the patient lies slightly rotated
    centre_x: float  # canal centre in patient coordinates (lateral shift)
    centre_y: float


@dataclass(frozen=True)
class Scanner:
    """How one series was acquired."""

    rows: int
    columns: int
    spacing: float  # mm, square pixels
    origin: tuple[float, float]  # patient x, y of the centre of pixel (0, 0)
    signal_scale: float  # 12-bit value of CSF
    noise_fraction: float  # Rician sigma / CSF signal
    bias: tuple[float, float, float, float]  # low-order multiplicative field coefficients
    blur_px: float
    gamma: float = 1.0  # tissue contrast differs between sequences and vendors


@dataclass
class RenderedSlice:
    pixels: np.ndarray  # uint16 (rows, columns), 12-bit
    sac_mask: np.ndarray  # bool (rows, columns)
    box: tuple[float, float, float, float]  # canal x0, y0, x1, y1 in pixel coordinates


def _coverage(u, v, cu, cv, a, b, px, angle=0.0):
    """Fraction of each pixel inside the ellipse centred (cu, cv) with half-axes a, b."""
    du, dv = u - cu, v - cv
    if angle:
        c, s = np.cos(angle), np.sin(angle)
        du, dv = c * du + s * dv, -s * du + c * dv
    k = np.sqrt((du / a) ** 2 + (dv / b) ** 2)
    grad = np.sqrt((du / a**2) ** 2 + (dv / b**2) ** 2) + 1e-9
    dist = (k - 1.0) * k / grad  # ~ signed distance to the outline, mm
    dist = np.where(k < 0.5, -1e3, dist)
    return np.clip(0.5 - dist / px, 0.0, 1.0)


class _Canvas:
    """Pixels being painted; each shape blends its value in by its coverage.

    A shape is evaluated only inside its own pixel window, so a 2-mm rootlet costs a few hundred
    pixels rather than the whole matrix.
    """

    def __init__(self, u: np.ndarray, v: np.ndarray, px: float, to_pixel):
        self.u, self.v, self.px, self.to_pixel = u, v, px, to_pixel
        self.img = np.zeros(u.shape, np.float32)

    def window(self, cu, cv, radius) -> tuple[slice, slice]:
        col, row = self.to_pixel(cu, cv)
        half = radius / self.px + 2
        rows, cols = self.img.shape
        return (slice(int(np.clip(row - half, 0, rows)), int(np.clip(row + half + 1, 0, rows))),
                slice(int(np.clip(col - half, 0, cols)), int(np.clip(col + half + 1, 0, cols))))

    def ellipse(self, value, cu, cv, a, b, angle=0.0) -> tuple[tuple[slice, slice], np.ndarray]:
        win = self.window(cu, cv, max(a, b))
        alpha = _coverage(self.u[win], self.v[win], cu, cv, a, b, self.px, angle)
        patch = self.img[win]
        patch += alpha * (value - patch)
        return win, alpha

    def bone(self, cu, cv, a, b, angle=0.0, marrow=MARROW - 0.07):
        self.ellipse(CORTEX, cu, cv, a, b, angle)
        self.ellipse(marrow, cu, cv, max(a - 1.3, 0.5), max(b - 1.3, 0.5), angle)


def _rootlet_positions(anat: SliceAnatomy, rng: np.random.Generator) -> np.ndarray:
    """Rootlet centres in unit-disc sac coordinates (p lateral, q posterior), per Schizas A1-A4 / B."""
    pattern = anat.grade if anat.grade == "B" else anat.a_subtype
    n = anat.n_rootlets
    if anat.content == "conus":
        n = int(n * (1 - anat.cord_scale) * 0.6)
        pattern = "conus"
    region = {
        "A1": ((0.0, 0.5), 0.33),  # dorsal, under half the sac
        "A3": ((0.0, 0.22), 0.68),  # dorsal, over half
        "A4": ((0.0, 0.0), 0.55),  # central, most of the sac
        "B": ((0.0, 0.0), 0.86),  # whole sac
        "conus": ((0.0, 0.0), 0.85),
    }
    min_gap = 0.2 if pattern in ("B", "A4") else 0.24
    points: list[tuple[float, float]] = []
    for _ in range(n * 60):
        if len(points) >= n:
            break
        if pattern == "A2":  # dorsal horseshoe along the dura
            angle = np.pi / 2 + rng.uniform(-1.35, 1.35)
            radius = rng.uniform(0.62, 0.8)
            p, q = radius * np.cos(angle), radius * np.sin(angle)
        else:
            (cp, cq), radius = region[pattern]
            r, t = radius * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
            p, q = cp + r * np.cos(t), cq + r * np.sin(t)
            if pattern == "conus" and p * p + q * q < (0.55 * anat.cord_scale + 0.25) ** 2:
                continue  # around the conus, not on it
        if p * p + q * q > 0.8**2:
            continue
        if all((p - x) ** 2 + (q - y) ** 2 > min_gap**2 for x, y in points):
            points.append((p, q))
    return np.array(points).reshape(-1, 2)


def render_slice(anat: SliceAnatomy, habitus: Habitus, scanner: Scanner) -> RenderedSlice:
    rng = np.random.default_rng(anat.seed)
    px = scanner.spacing
    rows, cols = scanner.rows, scanner.columns
    x = scanner.origin[0] + px * np.arange(cols, dtype=np.float32)
    y = scanner.origin[1] + px * np.arange(rows, dtype=np.float32)
    dx, dy = np.meshgrid(x - habitus.centre_x, y - habitus.centre_y)
    theta = np.deg2rad(habitus.rotation_deg)
    u = (np.cos(theta) * dx + np.sin(theta) * dy).astype(np.float32)
    v = (-np.sin(theta) * dx + np.cos(theta) * dy).astype(np.float32)
    def to_pixel(cu, cv):
        x_mm = habitus.centre_x + np.cos(theta) * cu - np.sin(theta) * cv
        y_mm = habitus.centre_y + np.sin(theta) * cu + np.cos(theta) * cv
        return (x_mm - scanner.origin[0]) / px, (y_mm - scanner.origin[1]) / px

    canvas = _Canvas(u, v, px, to_pixel)

    sev = anat.severity
    grade = anat.grade
    lumbar = not anat.segment.name.startswith("T")
    disc = anat.segment.kind == "disc"
    # Dural sac: area = DSCA, flattening as the disc and the ligaments press on it.
    aspect = 1.2 + 1.1 * sev if anat.content == "rootlet" else 1.08
    b_s = np.sqrt(anat.dsca_mm2 / (np.pi * aspect))
    a_s = aspect * b_s
    post_fat = 0.0 if grade == "D" else 0.9 + 2.6 * (1 - sev) + rng.uniform(0, 0.8)
    ant_gap = 0.8 + rng.uniform(0, 0.8)
    lamina_v = b_s + post_fat
    body_back = -b_s - ant_gap
    bw, bd = habitus.body_half_width * (1 if lumbar else 0.82), habitus.body_half_depth * (1 if lumbar else 0.85)
    body_cv = body_back - bd

    # Body outline, subcutaneous fat, abdomen, muscles.
    outline_cv = (habitus.back_depth - habitus.front_depth) / 2
    outline_b = (habitus.back_depth + habitus.front_depth) / 2
    canvas.ellipse(FAT, 0, outline_cv, habitus.half_width, outline_b)
    f = habitus.fat_thickness
    canvas.ellipse(ABDOMEN, 0, outline_cv, habitus.half_width - f, outline_b - f)
    _bowel_and_kidneys(canvas, anat, bw, bd, body_cv, habitus, rng)
    for side in (-1, 1):
        canvas.ellipse(MUSCLE + 0.03, side * 24, lamina_v + 26, 22, min(21, habitus.back_depth - f - lamina_v - 6) / 1.0)
        if lumbar:
            canvas.ellipse(MUSCLE, side * (bw + 10), body_cv + 4, 9 + 0.2 * (anat.s / 20), 13)
    canvas.ellipse(VESSEL_VOID, 14, body_cv - bd - 11, 10, 10)  # aorta
    canvas.ellipse(0.18, -16, body_cv - bd - 9, 12, 8)  # inferior vena cava

    # Vertebral body or disc.
    if disc:
        canvas.ellipse(ANNULUS, 0, body_cv, bw, bd)
        canvas.ellipse(NUCLEUS * (1 - 0.55 * sev) + 0.08, 0, body_cv + 1, bw * 0.58, bd * 0.55)
        canvas.ellipse(ANNULUS + 0.03, 0, body_back + 0.3, a_s + 2 + 4 * sev, 1.5 + 3.5 * sev)  # bulge
    else:
        canvas.bone(0, body_cv, bw, bd, marrow=MARROW)
        mid_body = abs(anat.s - anat.segment.centre) < (anat.segment.end - anat.segment.start) * 0.3
        if mid_body:  # pedicles close the bony ring
            for side in (-1, 1):
                canvas.bone(side * (a_s + 5), body_back + 3, 4.5, b_s + 6, side * 0.25)

    # Posterior elements: laminae, spinous process, facet joints.
    for side in (-1, 1):
        canvas.bone(side * (a_s * 0.7 + 6), lamina_v + 5, 12, 3.6, side * -0.55)
    canvas.bone(0, lamina_v + 26, 4, 20)
    if disc:
        for side in (-1, 1):
            r = 6 + 3.5 * sev
            canvas.bone(side * (a_s + 5 + r * 0.6 - 2.5 * sev), b_s * 0.4 + 2, r, r * 1.25, side * 0.4)
            canvas.ellipse(0.55, side * (a_s + 5 + r * 0.6 - 2.5 * sev), b_s * 0.4 + 2, 0.45, r * 0.7, side * 0.4)

    # Canal contents: epidural fat, ligamentum flavum, the sac.
    canvas.ellipse(FAT, 0, (lamina_v + body_back) / 2 + 0.3, a_s + 2.6, (lamina_v - body_back) / 2 + 0.4)
    if grade == "D":
        canvas.ellipse(LIGAMENT, 0, b_s + 2.5, a_s + 1.5, 3.2)  # no posterior epidural fat left
    for side in (-1, 1):
        canvas.ellipse(LIGAMENT, side * (a_s * 0.62 + 2.2), lamina_v * 0.8 + 1, 6.5, 1.4 + 3.0 * sev, side * -0.7)
    sac_win, sac_alpha = canvas.ellipse(COMPRESSED_SAC if grade in ("C", "D") else CSF, 0, 0, a_s, b_s)
    if grade in ("C", "D"):
        canvas.img[sac_win] += (sac_alpha * rng.normal(0, 0.03, sac_alpha.shape)).astype(np.float32)

    # Contents of the sac.
    if anat.content in ("cord", "conus"):
        scale = anat.cord_scale
        canvas.ellipse(CORD, 0, -0.12 * b_s, 5.3 * scale, 4.1 * scale)
    if anat.content in ("rootlet", "conus") and grade not in ("C", "D"):
        for p, q in _rootlet_positions(anat, rng):
            canvas.ellipse(ROOTLET, p * a_s, q * b_s, 0.95, 0.85)

    if anat.metal:
        _metal_artefact(canvas, a_s, b_s, lamina_v, body_cv, rng)
    canvas.img *= _texture(canvas.img.shape, rng)

    sac_mask = np.zeros(u.shape, bool)
    sac_mask[sac_win] = sac_alpha >= 0.5
    image = _scanner_effects(canvas.img, scanner, rng)
    half_w, back, front = a_s + 2.6, lamina_v + 0.4, body_back - 0.4
    corners = np.array([(su, sv) for su in (-half_w, half_w) for sv in (front, back)])
    col, row = to_pixel(corners[:, 0], corners[:, 1])
    box = (float(col.min()), float(row.min()), float(col.max()), float(row.max()))
    return RenderedSlice(pixels=image, sac_mask=sac_mask, box=box)


def _texture(shape: tuple[int, int], rng: np.random.Generator, strength: float = 0.12) -> np.ndarray:
    """Smooth multiplicative tissue texture (heterogeneous marrow, muscle, fat)."""
    coarse = rng.normal(0, strength, (10, 10))
    field = zoom(coarse, (shape[0] / 10, shape[1] / 10), order=1, grid_mode=True, mode="nearest")
    return (1 + field[: shape[0], : shape[1]]).astype(np.float32)


def _bowel_and_kidneys(canvas: _Canvas, anat: SliceAnatomy, bw, bd, body_cv, habitus: Habitus, rng) -> None:
    """Bowel loops in front of the spine; kidneys beside it from T12 to L3."""
    front = habitus.front_depth - habitus.fat_thickness
    for _ in range(int(rng.integers(6, 14))):
        cu = rng.uniform(-habitus.half_width * 0.7, habitus.half_width * 0.7)
        cv = rng.uniform(-front + 15, body_cv - bd - 15)
        r = rng.uniform(7, 22)
        canvas.ellipse(rng.choice([0.12, 0.55, 0.9]), cu, cv, r, r * rng.uniform(0.6, 1.0), rng.uniform(0, np.pi))
    if anat.segment.name.split("/")[0] in ("T12", "L1", "L2", "L3"):
        for side in (-1, 1):
            cu, cv = side * (bw + 45), body_cv + 5
            canvas.ellipse(0.5, cu, cv, 26, 17, side * 0.5)
            canvas.ellipse(0.75, cu, cv, 17, 10, side * 0.5)


def _metal_artefact(canvas: _Canvas, a_s, b_s, lamina_v, body_cv, rng) -> None:
    """Pedicle screws: signal voids with bright pile-up rims and streaks through the canal."""
    for side in (-1, 1):
        cu, cv = side * (a_s + 4), (lamina_v + body_cv) / 2
        angle = side * (np.pi / 2 - 0.35)
        canvas.ellipse(1.25, cu, cv, 26, 7.5, angle)
        canvas.ellipse(0.0, cu, cv, 24, 5.5, angle)
    for _ in range(6):
        angle = rng.uniform(0, np.pi)
        canvas.ellipse(rng.choice([0.0, 1.3]), 0, rng.uniform(-5, 5), 45, 0.7, angle)


def _scanner_effects(img: np.ndarray, scanner: Scanner, rng: np.random.Generator) -> np.ndarray:
    rows, cols = img.shape
    yn, xn = np.meshgrid(np.linspace(-1, 1, rows), np.linspace(-1, 1, cols), indexing="ij")
    c1, c2, c3, c4 = scanner.bias
    bias = np.exp(c1 * xn + c2 * yn + c3 * xn * yn + c4 * xn**2).astype(np.float32)
    signal = gaussian_filter(np.clip(img, 0, None) ** scanner.gamma, scanner.blur_px) * bias * scanner.signal_scale
    sigma = scanner.noise_fraction * scanner.signal_scale
    noisy = np.hypot(signal + rng.normal(0, sigma, img.shape), rng.normal(0, sigma, img.shape))
    return np.clip(np.rint(noisy), 0, 4095).astype(np.uint16)
