"""What each phantom slice contains: level, rootlets or cord, Schizas grade, dural sac size.

Everything here is data drawn from a seeded generator; ``render.py`` turns it into pixels.
Craniocaudal positions ``s`` are in mm from the top of T11, increasing towards the sacrum.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

VERTEBRAE = ("T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1")
DISCS = tuple(f"{a}/{b}" for a, b in zip(VERTEBRAE[:-1], VERTEBRAE[1:]))
GRADES = ("A", "B", "C", "D")
A_SUBTYPES = ("A1", "A2", "A3", "A4")

#: Latent severity thresholds between Schizas grades; raters see the same scale with noise.
GRADE_THRESHOLDS = (0.35, 0.58, 0.78)
#: How far (mm, 1/e) disc-level narrowing reaches up and down the canal.
NARROWING_REACH_MM = 9.0


def grade_of(severity: float) -> str:
    return GRADES[int(np.searchsorted(GRADE_THRESHOLDS, severity, side="right"))]


@dataclass(frozen=True)
class Segment:
    name: str  # "L4" (vertebral body) or "L4/L5" (disc)
    kind: str  # "body" | "disc"
    start: float
    end: float

    @property
    def centre(self) -> float:
        return (self.start + self.end) / 2


@dataclass
class Spine:
    """One patient's spine along the craniocaudal axis."""

    segments: list[Segment]
    conus_tip: float  # where the spinal cord ends; rootlets below
    disc_severity: dict[str, float]  # latent stenosis severity 0..1 at each disc
    a_subtype: dict[str, str]  # Schizas A1-A4 rootlet pattern near each disc
    normal_dsca: dict[str, float]  # unstenosed sac area (mm²) at each vertebra
    metal_levels: tuple[str, ...] = ()  # pedicle screws: slices there are unusable ('other')

    @property
    def length(self) -> float:
        return self.segments[-1].end

    def segment_at(self, s: float) -> Segment:
        for seg in self.segments:
            if s < seg.end:
                return seg
        return self.segments[-1]

    def disc_centres(self) -> dict[str, float]:
        return {seg.name: seg.centre for seg in self.segments if seg.kind == "disc"}

    def severity_at(self, s: float) -> tuple[float, str]:
        """Stenosis severity at ``s`` and the disc it comes from (narrowing peaks at the disc)."""
        best, best_disc = 0.0, ""
        for disc, centre in self.disc_centres().items():
            sev = self.disc_severity[disc] * np.exp(-(((s - centre) / NARROWING_REACH_MM) ** 2))
            if sev > best or not best_disc:
                best, best_disc = float(sev), disc
        return best, best_disc

    def nearest_disc(self, s: float) -> str:
        centres = self.disc_centres()
        return min(centres, key=lambda d: abs(centres[d] - s))


def make_spine(rng: np.random.Generator) -> Spine:
    segments, s = [], 0.0
    for i, vertebra in enumerate(VERTEBRAE):
        height = rng.uniform(21, 25) if vertebra.startswith("T") else rng.uniform(25, 30)
        if vertebra == "S1":
            height = 30.0  # the series ends in the sacrum
        segments.append(Segment(vertebra, "body", s, s + height))
        s += height
        if i < len(DISCS):
            disc_h = rng.uniform(5, 7) if vertebra.startswith("T") else rng.uniform(8, 12)
            segments.append(Segment(DISCS[i], "disc", s, s + disc_h))
            s += disc_h
    by_name = {seg.name: seg for seg in segments}
    # Conus tip: usually at L1 or the L1/L2 disc (range T12 to L2).
    conus = float(np.clip(rng.normal(by_name["L1"].end, 9.0), by_name["T12"].centre, by_name["L2"].centre))
    degeneration = rng.beta(2.6, 1.2)
    weights = {"L4/L5": (0.7, 1.25), "L3/L4": (0.5, 1.15), "L5/S1": (0.35, 1.0), "L2/L3": (0.25, 0.95),
               "L1/L2": (0.05, 0.55)}
    disc_severity = {d: min(0.97, degeneration * rng.uniform(*weights.get(d, (0.0, 0.2)))) for d in DISCS}
    a_subtype = {d: str(rng.choice(A_SUBTYPES, p=[0.35, 0.25, 0.2, 0.2])) for d in DISCS}
    base = rng.normal(175, 18)
    normal_dsca = {v: float(np.clip(base + rng.normal(0, 8) + (25 if v.startswith("T") else 0), 140, 240))
                   for v in VERTEBRAE}
    metal = (str(rng.choice(["L3", "L4", "L5"])),) if rng.random() < 0.12 else ()
    return Spine(segments, conus, disc_severity, a_subtype, normal_dsca, metal)


@dataclass
class SliceAnatomy:
    """The truth for one axial slice."""

    s: float  # craniocaudal position (mm from top of T11)
    segment: Segment
    nearest_disc: str
    level: str  # 'rootlet' | 'cord' | 'other' (truth as a perfect rater would call it)
    content: str  # 'rootlet' | 'cord' | 'conus'
    severity: float
    grade: str  # A-D for rootlet slices, '' otherwise
    a_subtype: str
    dsca_mm2: float
    cord_scale: float  # 1 above the conus, tapering to 0 at its tip
    n_rootlets: int
    metal: bool
    seed: int = field(repr=False, default=0)


def slice_anatomy(spine: Spine, s: float, rng: np.random.Generator) -> SliceAnatomy:
    segment = spine.segment_at(s)
    disc = spine.nearest_disc(s)
    vertebra = segment.name.split("/")[0]
    severity, sev_disc = spine.severity_at(s)
    above_tip = spine.conus_tip - s
    if above_tip > 14:
        content, cord_scale = "cord", 1.0
    elif above_tip > 0:
        content, cord_scale = "conus", float(np.clip(above_tip / 14, 0.25, 1.0))
    else:
        content, cord_scale = "rootlet", 0.0
    # Above the conus the cord is not compressed in this cohort (thoracic stenosis is rare).
    if content != "rootlet":
        severity = 0.0
    dsca = spine.normal_dsca[vertebra] * (1 - 0.86 * severity) * rng.uniform(0.96, 1.04)
    metal = any(abs(s - seg.centre) < seg.end - seg.start for seg in spine.segments if seg.name in spine.metal_levels)
    below = max(0.0, -above_tip)
    n_rootlets = int(np.clip(round(30 - below / 9 + rng.normal(0, 2)), 10, 34))
    level = "other" if metal else ("cord" if content in ("cord", "conus") else "rootlet")
    return SliceAnatomy(
        s=s,
        segment=segment,
        nearest_disc=disc,
        level=level,
        content=content,
        severity=severity,
        grade=grade_of(severity) if level == "rootlet" else "",
        a_subtype=spine.a_subtype[sev_disc or disc],
        dsca_mm2=float(dsca),
        cord_scale=cord_scale,
        n_rootlets=n_rootlets,
        metal=metal,
        seed=int(rng.integers(2**31)),
    )


def series_positions(spine: Spine, rng: np.random.Generator, n_slices: int | None = None) -> np.ndarray:
    """Slice positions (s, mm) of one 4-mm axial series of 15-46 slices (or ``n_slices``) ending in
    the sacrum region. Longer series reach up past the conus into the cord, as in the paper's cohort.
    """
    drawn = int(rng.integers(15, 47))
    n = n_slices or drawn
    by_name = {seg.name: seg for seg in spine.segments}
    last = rng.uniform(by_name["L3/L4"].end, by_name["S1"].start + 12)
    first = max(1.0, last - 4.0 * (n - 1))
    return first + 4.0 * np.arange(n)
