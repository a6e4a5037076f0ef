"""MR sequence presets: label maps to images that look like T2 TSE, T1, Dixon water and fat,
and fat-suppressed T2 (SPIR) or STIR.

Signal comes from each tissue's proton density, T1, T2 and fat fraction (``tissues.py``) through
the sequence's equation, so one patient's series agree with each other. Then what a scanner
adds: partial volume over the slice thickness (sub-planes averaged, with in-plane jitter that
also anti-aliases), tissue texture and fat septa in muscle (marked in the slice's label map
too), flow voids, susceptibility around metal, the sensitivity of the posterior spine coil,
k-space truncation (blur and ringing of a smaller acquired matrix) and Rician noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy.ndimage import binary_dilation, gaussian_filter

from grading.phantom.resample import upsample_bilinear
from grading.phantom.tissues import N_LABELS, TISSUES, Label

FAT_T1 = 290.0


@dataclass(frozen=True)
class Sequence:
    name: str  # preset key
    kind: str  # 'se' | 'stir' | 'gre_water' | 'gre_fat'
    description: str  # SeriesDescription the scanner would write
    tr: float
    te: float
    ti: float = 0.0
    flip_deg: float = 90.0
    fat_residual: float = 1.0  # fat signal left after fat suppression
    fat_t2: float = 150.0  # fat's apparent T2: long on turbo spin echo (J-coupling), short otherwise

    @property
    def weighting(self) -> str:
        if self.kind == "se":
            return "T1" if self.tr < 1000 else "T2"
        if self.kind == "stir":
            return "T2"
        return "unknown"


def draw_sequence(name: str, rng: np.random.Generator, plane: str = "AX") -> Sequence:
    """A preset with its timing drawn from the range scanners use."""
    if name == "t2_tse":
        return Sequence(name, "se", f"{plane} T2 TSE", tr=float(rng.uniform(3000, 6000)), te=float(rng.uniform(85, 120)))
    if name == "t1_tse":
        return Sequence(name, "se", f"{plane} T1 TSE", tr=float(rng.uniform(450, 750)), te=float(rng.uniform(8, 15)),
                        fat_t2=60.0)
    if name == "t2_spir":
        return Sequence(name, "se", f"{plane} T2 SPIR", tr=float(rng.uniform(1500, 4500)), te=float(rng.uniform(70, 100)),
                        fat_residual=float(rng.uniform(0.03, 0.25)))
    if name == "stir":
        return Sequence(name, "stir", f"{plane} STIR", tr=float(rng.uniform(3000, 5000)), te=float(rng.uniform(40, 70)),
                        ti=float(rng.uniform(140, 170)))
    # Chemical-shift (Dixon) fat quantification: a low flip angle keeps T1 out of the image, so
    # water images are proton-density weighted (CSF brightest, muscle bright, fat dark).
    if name == "dixon_water":
        return Sequence(name, "gre_water", f"{plane} DIXON W", tr=float(rng.uniform(6, 10)), te=2.4,
                        flip_deg=float(rng.uniform(1.5, 3.0)), fat_t2=60.0)
    if name == "dixon_fat":
        return Sequence(name, "gre_fat", f"{plane} DIXON F", tr=float(rng.uniform(6, 10)), te=2.4,
                        flip_deg=float(rng.uniform(1.5, 3.0)), fat_t2=60.0)
    raise ValueError(f"unknown sequence preset {name!r}")


PRESETS = ("t2_tse", "t1_tse", "t2_spir", "stir", "dixon_water", "dixon_fat")


def _signal(seq: Sequence, pd, t1, t2):
    e1 = np.exp(-seq.tr / t1)
    if seq.kind == "se":
        return pd * (1 - e1) * np.exp(-seq.te / t2)
    if seq.kind == "stir":
        return pd * np.abs(1 - 2 * np.exp(-seq.ti / t1) + e1) * np.exp(-seq.te / t2)
    a = np.deg2rad(seq.flip_deg)
    return pd * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1) * np.exp(-seq.te / (0.6 * t2))


@dataclass(frozen=True)
class TissueDraw:
    """One patient's tissues: each label's properties scaled by its own factors."""

    pd: np.ndarray  # (N_LABELS,)
    t1: np.ndarray
    t2: np.ndarray
    fat: np.ndarray


def draw_tissues(rng: np.random.Generator, muscle_fat: float = 0.2, marrow_fat: float = 0.45) -> TissueDraw:
    props = [TISSUES[Label(i)] for i in range(N_LABELS)]
    pd = np.array([t.pd for t in props]) * rng.normal(1, 0.06, N_LABELS)
    t1 = np.array([t.t1 for t in props]) * rng.normal(1, 0.08, N_LABELS)
    t2 = np.array([t.t2 for t in props]) * rng.normal(1, 0.1, N_LABELS)
    fat = np.array([t.fat for t in props])
    for muscle in (Label.ERECTOR_SPINAE, Label.MULTIFIDUS, Label.PSOAS, Label.QUADRATUS_LUMBORUM, Label.GLUTEAL):
        fat[muscle] = np.clip(fat[muscle] + 0.25 * muscle_fat, 0, 0.6)
    for bone in (Label.MARROW, Label.PEDICLE, Label.LAMINA, Label.SPINOUS_PROCESS, Label.SACRUM, Label.ILIUM):
        fat[bone] = np.clip(marrow_fat + rng.normal(0, 0.05), 0.1, 0.8)
    # Bowel content varies most of all: each patient's is its own.
    for label in (Label.BOWEL_FLUID, Label.BOWEL_SOLID):
        t2[label] *= rng.uniform(0.4, 1.6)
    return TissueDraw(np.clip(pd, 0, None), np.clip(t1, 50, None), np.clip(t2, 1, None), fat)


def signal_table(seq: Sequence, tissues: TissueDraw) -> np.ndarray:
    """Signal of every label (N_LABELS,), before texture and scanner effects."""
    water = (1 - tissues.fat) * _signal(seq, tissues.pd, tissues.t1, tissues.t2)
    fat = tissues.fat * _signal(seq, tissues.pd, np.full(N_LABELS, FAT_T1), np.full(N_LABELS, seq.fat_t2))
    if seq.kind == "gre_water":
        table = water
    elif seq.kind == "gre_fat":
        table = fat
    else:
        table = water + seq.fat_residual * fat
    flow = np.array([TISSUES[Label(i)].flow for i in range(N_LABELS)])
    if seq.kind in ("se", "stir"):
        table = np.where(flow, table * 0.06, table)  # moving blood leaves the slice: a signal void
    return table.astype(np.float32)


@dataclass(frozen=True)
class Scanner:
    """How one series was acquired, beyond the sequence."""

    snr: float  # CSF-like signal over the noise SD
    acquired_fraction: tuple[float, float]  # acquired / reconstructed matrix, (rows, columns)
    coil_length_mm: float  # posterior coil sensitivity falls off over this distance
    anterior_coil: float  # relative weight of an anterior body array (0: none)
    bias: tuple[float, ...]  # smooth multiplicative field, low-order coefficients
    white_level: float  # 12-bit value of the brightest tissue
    # Share of the coil profile the scanner divides back out (Siemens Prescan Normalize, Philips
    # CLEAR; on by default in most clinical protocols): 0 leaves the fall-off from the back as
    # received, 1 removes it, leaving its trace in the noise, which grows with depth.
    normalise: float = 0.0


def draw_scanner(rng: np.random.Generator) -> Scanner:
    return Scanner(
        snr=float(rng.uniform(12, 45)),
        acquired_fraction=(float(rng.uniform(0.6, 1.0)), float(rng.uniform(0.75, 1.0))),
        coil_length_mm=float(rng.uniform(90, 260)),
        anterior_coil=float(rng.uniform(0, 0.6)),
        bias=tuple(float(x) for x in rng.normal(0, 0.1, 4)),
        white_level=float(rng.uniform(1300, 3600)),
        normalise=float(rng.uniform(0.6, 1.0)) if rng.random() < 0.7 else 0.0,
    )


def smooth_field(shape, sigma_px: float, rng: np.random.Generator, stretch: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Zero-mean, unit-SD smooth noise (anisotropic with ``stretch``), made at a resolution of
    about a third of its correlation length and enlarged: cheap at any matrix size."""
    step = max(1.0, sigma_px / 3)
    small_shape = (int(shape[0] / step) + 3, int(shape[1] / step) + 3)
    small = gaussian_filter(rng.standard_normal(small_shape, np.float32),
                            (sigma_px * stretch[0] / step, sigma_px * stretch[1] / step))
    small = (small - small.mean()) / (small.std() + 1e-6)
    return upsample_bilinear(small, shape)


def muscle_septa(shape, spacing: float, rng: np.random.Generator, sagittal: bool) -> np.ndarray:
    """Fat septa between muscle fascicles, 0 to 1: thin lines where a smooth random field crosses
    zero. An axial section cuts the fascicles across, so its septa form a network of curved
    lines (its grain, spacing and line width drawn per series); a sagittal one runs along them.
    Real paraspinal muscle at the lower discs is marbled this way; a detector trained without
    septa put its best box on multifidus septa on real T2 TSE slices."""
    sigma_mm = float(rng.uniform(1.0, 2.5))
    if sagittal:
        stretch = (float(rng.uniform(3.0, 5.0)), 1.0)
    else:
        grain = float(rng.uniform(1.0, 2.5))
        stretch = (grain, 1.0) if rng.random() < 0.5 else (1.0, grain)
    half_width_mm = float(rng.uniform(0.3, 0.7))
    field = smooth_field(shape, sigma_mm / spacing, rng, stretch)
    lines = np.exp(-(field * sigma_mm / half_width_mm) ** 2)
    return lines * (smooth_field(shape, 6.0 / spacing, rng) > rng.uniform(-1.5, -0.3))


class _Pool:
    """A field twice the image's size; each slice takes a random window of it, flipped at
    random. Textures and noise then cost a crop per slice instead of a filter."""

    def __init__(self, field: np.ndarray, shape: tuple[int, int]):
        self.field, self.shape = field, shape

    def take(self, rng: np.random.Generator) -> np.ndarray:
        rows, cols = self.shape
        r = int(rng.integers(0, self.field.shape[-2] - rows + 1))
        c = int(rng.integers(0, self.field.shape[-1] - cols + 1))
        out = self.field[..., r:r + rows, c:c + cols]
        if rng.random() < 0.5:
            out = out[..., ::-1, :]
        if rng.random() < 0.5:
            out = out[..., :, ::-1]
        return out


def _kspace_truncate(image: np.ndarray, fraction: tuple[float, float]) -> np.ndarray:
    """Keep the central part of k-space: the blur and ringing of a smaller acquired matrix."""
    if min(fraction) >= 0.999:
        return image
    rows, cols = image.shape
    spectrum = scipy.fft.rfft2(image, workers=1)
    kr = np.abs(scipy.fft.fftfreq(rows)) * 2  # 0 at the centre of k-space, 1 at its edge
    kc = scipy.fft.rfftfreq(cols) * 2

    def taper(k, f):
        return np.where(k <= f, 0.5 + 0.5 * np.cos(np.pi * np.clip((k - 0.8 * f) / (0.2 * f), 0, 1)), 0.0)

    window = (taper(kr, fraction[0])[:, None] * taper(kc, fraction[1])[None, :]).astype(np.float32)
    return scipy.fft.irfft2(spectrum * window, s=(rows, cols), workers=1).astype(np.float32)


def coil_sensitivity(posterior_mm: np.ndarray, scanner: Scanner) -> np.ndarray:
    """Receive sensitivity from the distance to the patient's back (the spine array under them)."""
    depth = np.clip(posterior_mm[::8, ::8], 0, None)  # smooth: computed on every 8th pixel
    yn, xn = np.meshgrid(np.linspace(-1, 1, depth.shape[0]), np.linspace(-1, 1, depth.shape[1]), indexing="ij")
    c1, c2, c3, c4 = scanner.bias
    smooth = np.exp(c1 * xn + c2 * yn + c3 * xn * yn + c4 * xn**2)
    back = np.exp(-depth / scanner.coil_length_mm)
    front = scanner.anterior_coil * np.exp(-np.clip(350 - depth, 0, None) / scanner.coil_length_mm)
    sens = (back + front) * smooth
    return upsample_bilinear(sens / np.percentile(sens, 95), posterior_mm.shape)


_TEXTURE = np.array([TISSUES[Label(i)].texture for i in range(N_LABELS)], np.float32)
_SEPTA = np.array([TISSUES[Label(i)].septa for i in range(N_LABELS)], np.float32)


class SeriesRenderer:
    """Renders every slice of one series: the sequence, the patient's tissues and the scanner
    are fixed; texture and noise fields are drawn once and cropped per slice."""

    def __init__(self, seq: Sequence, tissues: TissueDraw, scanner: Scanner, shape: tuple[int, int],
                 spacing: float, rng: np.random.Generator, muscle_fat: float = 0.3, sagittal: bool = False):
        self.seq, self.scanner, self.shape, self.spacing = seq, scanner, shape, spacing
        self.table = signal_table(seq, tissues)
        self.fat_signal = float(self.table[Label.SUBCUTANEOUS_FAT])
        # Septa carry most of a muscle's fat on T2 TSE: near fat's brightness in all but the leanest.
        self.septa_strength = 0.7 + muscle_fat
        big = (shape[0] + shape[0] // 2, shape[1] + shape[1] // 2)
        texture = 0.6 * smooth_field(big, 1.2 / spacing, rng) + 0.8 * smooth_field(big, 5.0 / spacing, rng)
        lines = muscle_septa(big, spacing, rng, sagittal)
        self.texture = _Pool(np.stack([texture, lines]).astype(np.float32), shape)
        self.noise = _Pool(rng.standard_normal((2, *big), np.float32), shape)

    def __call__(self, sub_labels: list[np.ndarray], depth_from_back_mm: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
        """A 12-bit image (uint16) from the label maps of sub-planes through one slice."""
        return self.render(sub_labels, depth_from_back_mm, rng)[0]

    def render(self, sub_labels: list[np.ndarray], depth_from_back_mm: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The image, and the central label map with the muscle septa it shows marked as
        intermuscular fat where a pixel is mostly fat: randomised renders of the label map
        then show the septa in every contrast, as the preset image does."""
        table, central = self.table, sub_labels[0]
        texture, lines = self.texture.take(rng)
        signal = table[central] if len(sub_labels) == 1 else np.mean([table[lab] for lab in sub_labels], axis=0)
        signal = signal * (1 + _TEXTURE[central] * texture)
        mix = np.clip(_SEPTA[central] * self.septa_strength * lines, 0, 0.9)
        labelled = np.where(mix > 0.5, np.uint8(Label.INTERMUSCULAR_FAT), central).astype(central.dtype)
        if mix.any():
            signal += mix * (self.fat_signal - table[central])
        metal = np.zeros(signal.shape, bool)
        for lab in sub_labels:
            metal |= lab == Label.METAL
        if metal.any():  # susceptibility: a void far larger than the screw, with a bright pile-up rim
            void = binary_dilation(metal, iterations=max(1, int(round(4 / self.spacing))))
            rim = binary_dilation(void, iterations=max(1, int(round(1.5 / self.spacing)))) & ~void
            signal = np.where(void, signal * 0.03, np.where(rim, signal * 1.4 + 0.3 * self.fat_signal, signal))
        sensitivity = coil_sensitivity(depth_from_back_mm, self.scanner)
        signal *= sensitivity
        signal = _kspace_truncate(signal.astype(np.float32), self.scanner.acquired_fraction)
        sigma = max(float(np.percentile(signal[::2, ::2], 99.5)), 1e-6) / self.scanner.snr
        n_real, n_imag = self.noise.take(rng)
        noisy = np.hypot(signal + sigma * n_real, sigma * n_imag)
        sample = signal[::2, ::2]
        if self.scanner.normalise > 0:
            gain = np.clip(sensitivity, 0.1, None) ** self.scanner.normalise
            noisy, sample = noisy / gain, sample / gain[::2, ::2]
        reference = max(float(np.percentile(sample, 99.5)), 1e-6)
        image = np.clip(np.rint(noisy * (self.scanner.white_level / reference)), 0, 4095).astype(np.uint16)
        return image, labelled
