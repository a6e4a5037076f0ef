"""One synthetic patient's anatomy as numbers: vertebrae, discs, canal, degeneration, habitus.

Everything is drawn from a seeded generator; ``spine_volume.py`` and ``body_volume.py`` turn it
into label volumes. Positions ``s`` are millimetres along the canal's centreline from the top of
the highest vertebra modelled (T10), increasing towards the sacrum.

Sizes follow the literature the issue cites: lumbar bodies 40-50 mm wide, mid-sagittal bony canal
13-15 mm, interpedicular distance 18-22 mm (growing to ~24 mm at L5), dural sac ~150 mm² at L4-L5
in controls, lordosis 20-60 degrees, conus tip between T12 and L2, posterior subcutaneous fat
10-50 mm. Stenosis is not drawn as a grade: it comes from disc bulges and protrusions, facet
hypertrophy, ligamentum flavum thickening, epidural lipomatosis and spondylolisthesis, and the
Schizas grade is read off the sac that results (``anatomy.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

THORACIC = ("T10", "T11", "T12")
A_SUBTYPES = ("A1", "A2", "A3", "A4")


@dataclass(frozen=True)
class Vertebra:
    name: str  # "T12", "L4", "L6"
    region: str  # "T" | "L"
    start: float  # s of the superior endplate
    end: float  # s of the inferior endplate
    width: float  # body, transverse (mm)
    depth: float  # body, antero-posterior (mm)
    canal_width: float  # interpedicular distance (mm)
    canal_depth: float  # bony mid-sagittal canal diameter (mm)
    pedicle_width: float
    transverse_reach: float  # tip of the transverse process from the midline (mm)
    spinous_length: float  # canal centre to the spinous tip (mm)
    slip: float = 0.0  # anterior translation over the vertebra below (spondylolisthesis, mm)
    rotation: float = 0.0  # axial rotation (rad)

    @property
    def height(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Disc:
    name: str  # "L4/L5"
    start: float
    end: float
    hydration: float  # 1 healthy (large bright nucleus) ... 0 (no nucleus left)
    bulge: float  # broad posterior bulge of the annulus (mm)
    protrusion: float  # focal posterior protrusion (mm); 0 for none
    protrusion_u: float  # its lateral position (mm, + patient left)
    facet: float  # facet hypertrophy (mm of overgrowth towards the canal)
    flavum: float  # ligamentum flavum thickness (mm)
    lipomatosis: float  # dorsal epidural fat pad that compresses the sac (mm); 0 for none

    @property
    def height(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Sacrum:
    start: float  # s of the S1 superior endplate
    end: float  # tip of the coccyx
    width: float  # S1 body width
    depth: float
    ala_reach: float  # lateral reach of the alae from the midline (mm)
    sac_end: float  # where the dural sac ends (about S2)


@dataclass(frozen=True)
class Habitus:
    """The trunk around the spine: thin to obese."""

    half_width: float  # body outline at L3 (mm)
    back_depth: float  # canal centre to the skin of the back
    front_depth: float  # canal centre to the skin of the belly
    back_fat: float  # posterior subcutaneous fat (mm)
    side_fat: float
    front_fat: float
    muscle_bulk: float  # scales the paraspinal and psoas muscles
    muscle_fat: float  # fatty infiltration of the paraspinal muscles (0..1)
    visceral_fat: float  # 0..1: how much of the abdomen is fat rather than bowel
    roll_deg: float  # the patient lies slightly rotated about the long axis


@dataclass(frozen=True)
class Curvature:
    lordosis_deg: float  # L1 to S1
    sacral_slope_deg: float
    sacral_kyphosis_deg: float  # curvature along the sacrum and coccyx
    scoliosis_deg: float  # Cobb-like lateral curve (signed)
    scoliosis_apex: float  # s of the apex


@dataclass(frozen=True)
class Patient:
    vertebrae: tuple[Vertebra, ...]  # mobile vertebrae, T10 downwards
    discs: tuple[Disc, ...]  # between consecutive mobile vertebrae and above the sacrum
    sacrum: Sacrum
    curvature: Curvature
    habitus: Habitus
    lumbar_count: int  # 5 usually; 6 (lumbarised S1) or 4 (sacralised L5)
    conus_tip: float  # s where the spinal cord ends
    sac_area: dict[str, float]  # unstenosed dural sac area (mm²) at each vertebra
    sac_triangularity: float  # 0 oval ... 0.5 triangular (lower lumbar sacs are triangular)
    a_subtype: str  # supine rootlet arrangement (Schizas A1-A4), the patient's usual one
    metal_levels: tuple[str, ...] = ()  # vertebrae with pedicle screws
    seed: int = field(default=0, repr=False)

    @property
    def length(self) -> float:
        return self.sacrum.end

    def vertebra(self, name: str) -> Vertebra:
        return next(v for v in self.vertebrae if v.name == name)

    def segment_at(self, s: float) -> tuple[str, str]:
        """(name, kind) of what the centreline crosses at ``s``: a body ('L4', 'body'), a disc
        ('L4/L5', 'disc') or the sacrum ('S1', 'sacrum')."""
        for v in self.vertebrae:
            if v.start <= s < v.end:
                return v.name, "body"
        for d in self.discs:
            if d.start <= s < d.end:
                return d.name, "disc"
        if s >= self.sacrum.start:
            return "S1", "sacrum"
        return self.vertebrae[0].name, "body"  # above the modelled spine

    def boundaries(self) -> list[float]:
        """Arc lengths where one body, disc or the sacrum meets the next."""
        return sorted({d.start for d in self.discs} | {d.end for d in self.discs})

    def disc_centres(self) -> dict[str, float]:
        return {d.name: (d.start + d.end) / 2 for d in self.discs}


def _lumbar_count(rng: np.random.Generator) -> int:
    """About 1 in 10 patients has a transitional lumbosacral vertebra."""
    draw = rng.random()
    return 6 if draw < 0.05 else 4 if draw < 0.10 else 5


def _size_along(names: list[str], first: float, last: float, rng: np.random.Generator, spread: float) -> list[float]:
    """A size growing linearly from the first lumbar vertebra to the last, with per-level noise."""
    n = len(names)
    return [float((first + (last - first) * i / max(n - 1, 1)) * (1 + rng.normal(0, spread))) for i in range(n)]


def _disc(name: str, start: float, height: float, degeneration: float, rng: np.random.Generator,
          lipomatosis: bool) -> Disc:
    d = float(np.clip(degeneration, 0, 1))
    protrusion = float(rng.uniform(2.0, 7.0)) if rng.random() < 0.45 * d else 0.0
    return Disc(
        name=name,
        start=start,
        end=start + height * (1 - 0.35 * d),
        hydration=float(np.clip(1 - d + rng.normal(0, 0.1), 0, 1)),
        bulge=float(d * rng.uniform(1.0, 6.0)),
        protrusion=protrusion,
        protrusion_u=float(rng.uniform(-7, 7)),
        facet=float(d * rng.uniform(0.5, 6.0)),
        flavum=float(2.2 + d * rng.uniform(0.5, 7.5) + rng.uniform(0, 0.8)),
        lipomatosis=float(rng.uniform(3, 7)) if lipomatosis else 0.0,
    )


#: How much of a patient's degeneration each lumbar disc carries (range of a uniform factor),
#: counted from the lowest mobile disc: L5/S1, L4/L5, L3/L4, ... (L4/L5 is the usual culprit).
_LEVEL_LOAD = ((0.35, 0.95), (0.6, 1.2), (0.45, 1.05), (0.2, 0.8), (0.05, 0.5), (0.0, 0.3))


def make_patient(rng: np.random.Generator) -> Patient:
    lumbar = _lumbar_count(rng)
    names = list(THORACIC) + [f"L{i}" for i in range(1, lumbar + 1)]
    n_l = lumbar
    l_names = names[3:]
    widths = _size_along(l_names, rng.uniform(39, 44), rng.uniform(47, 53), rng, 0.03)
    depths = _size_along(l_names, rng.uniform(26, 30), rng.uniform(30, 34), rng, 0.03)
    canal_w = _size_along(l_names, rng.uniform(19, 22), rng.uniform(22, 26), rng, 0.04)
    narrow = rng.uniform(0.78, 0.92) if rng.random() < 0.15 else 1.0  # congenitally narrow canal
    canal_d = [float(rng.uniform(13, 15.5) * narrow * (1 + rng.normal(0, 0.03))) for _ in l_names]
    ped_w = _size_along(l_names, rng.uniform(6.5, 8.5), rng.uniform(13, 17), rng, 0.05)
    reach = [40.0, 45.0, 50.0, 47.0, 43.0, 42.0]
    degeneration = float(rng.beta(2.2, 1.6))
    lipomatosis = rng.random() < 0.05
    slip_at = int(rng.integers(1, 3)) if rng.random() < 0.08 else 0  # 1: lowest vertebra slips, 2: the one above
    curvature = Curvature(
        lordosis_deg=float(rng.uniform(20, 60)),
        sacral_slope_deg=float(rng.uniform(25, 48)),
        sacral_kyphosis_deg=float(rng.uniform(35, 65)),
        scoliosis_deg=float(rng.normal(0, 6)) if rng.random() < 0.3 else float(rng.normal(0, 1.5)),
        scoliosis_apex=0.0,  # set below, once the lumbar spine's extent is known
    )
    vertebrae, discs, s = [], [], 0.0
    for i, name in enumerate(names):
        thoracic = name.startswith("T")
        height = rng.uniform(20, 24) if thoracic else rng.uniform(25, 30)
        if thoracic:
            t = i  # T10, T11, T12
            vertebra = Vertebra(name, "T", s, s + height, width=float(rng.uniform(32, 37) + 1.5 * t),
                                depth=float(rng.uniform(25, 29) + t), canal_width=float(rng.uniform(17, 19)),
                                canal_depth=float(rng.uniform(14.5, 17)), pedicle_width=float(rng.uniform(6, 8)),
                                transverse_reach=float(30 - 5 * t + rng.uniform(0, 5)),
                                spinous_length=float(rng.uniform(42, 52)))
        else:
            k = i - 3
            slip = float(rng.uniform(3, 9)) if slip_at and k == n_l - slip_at else 0.0
            vertebra = Vertebra(name, "L", s, s + height, width=widths[k], depth=depths[k], canal_width=canal_w[k],
                                canal_depth=canal_d[k], pedicle_width=ped_w[k],
                                transverse_reach=float(reach[min(k, 5)] * rng.uniform(0.85, 1.1)),
                                spinous_length=float(rng.uniform(42, 56)), slip=slip)
        vertebrae.append(vertebra)
        s += height
        below = names[i + 1] if i + 1 < len(names) else "S1"
        from_bottom = n_l - 1 - (i - 3) if not thoracic else 9
        load = _LEVEL_LOAD[from_bottom] if from_bottom < len(_LEVEL_LOAD) else (0.0, 0.15)
        disc_h = rng.uniform(4.5, 6.5) if thoracic else rng.uniform(8.5, 12.0)
        disc = _disc(f"{name}/{below}", s, disc_h, degeneration * rng.uniform(*load), rng,
                     lipomatosis and from_bottom <= 2)
        discs.append(disc)
        s = disc.end
    # Scoliosis: a gentle C curve with its apex in the upper or mid lumbar spine; vertebrae rotate
    # towards its convexity.
    apex = vertebrae[3 + int(rng.integers(0, max(1, n_l - 2)))]
    curvature = Curvature(**{**curvature.__dict__, "scoliosis_apex": (apex.start + apex.end) / 2})
    vertebrae = [_rotated(v, curvature, rng) for v in vertebrae]
    sacrum_start = s
    sacrum = Sacrum(start=sacrum_start, end=sacrum_start + rng.uniform(105, 125),
                    width=float(widths[-1] * rng.uniform(1.0, 1.1)), depth=float(depths[-1] * rng.uniform(0.95, 1.05)),
                    ala_reach=float(rng.uniform(48, 58)), sac_end=sacrum_start + rng.uniform(30, 45))
    by_name = {v.name: v for v in vertebrae}
    # Conus tip: mean at the L1/L2 disc, range T12 to L2 (Saifuddin et al. 1998).
    conus = float(np.clip(rng.normal(by_name["L1"].end + 3, 9.0), by_name["T12"].start + 8, by_name["L2"].end - 5))
    base = float(rng.normal(170, 22))
    sac_area = {}
    for v in vertebrae:
        if v.region == "T":
            area = base * 1.1
        else:
            k = int(v.name[1:])
            area = base * (1.08 - 0.05 * (k - 1))  # the sac narrows towards the sacrum
        sac_area[v.name] = float(np.clip(area * (1 + rng.normal(0, 0.05)) * (narrow ** 0.7), 105, 260))
    metal = ()
    if rng.random() < 0.08:
        lower = l_names[-2] if rng.random() < 0.7 else l_names[-3]
        metal = (lower, l_names[l_names.index(lower) + 1])
    habitus = _habitus(rng)
    return Patient(
        vertebrae=tuple(vertebrae), discs=tuple(discs), sacrum=sacrum, curvature=curvature, habitus=habitus,
        lumbar_count=lumbar, conus_tip=conus, sac_area=sac_area, sac_triangularity=float(rng.uniform(0.05, 0.45)),
        a_subtype=str(rng.choice(A_SUBTYPES, p=[0.35, 0.25, 0.2, 0.2])), metal_levels=metal,
        seed=int(rng.integers(2**31)),
    )


def _rotated(v: Vertebra, curvature: Curvature, rng: np.random.Generator) -> Vertebra:
    centre = (v.start + v.end) / 2
    weight = np.exp(-(((centre - curvature.scoliosis_apex) / 70.0) ** 2))
    rotation = np.deg2rad(0.5 * curvature.scoliosis_deg * weight + rng.normal(0, 1.0))
    return Vertebra(**{**v.__dict__, "rotation": float(rotation)})


def _habitus(rng: np.random.Generator) -> Habitus:
    fat = float(rng.beta(1.6, 2.4))  # 0 thin ... 1 obese
    back_fat = 10 + 40 * fat + rng.normal(0, 3)
    return Habitus(
        half_width=float(rng.uniform(135, 165) + 55 * fat),
        back_depth=float(rng.uniform(58, 70) + back_fat),
        front_depth=float(rng.uniform(95, 125) + 85 * fat),
        back_fat=float(np.clip(back_fat, 8, 55)),
        side_fat=float(np.clip(8 + 45 * fat + rng.normal(0, 4), 5, 60)),
        front_fat=float(np.clip(10 + 55 * fat + rng.normal(0, 5), 6, 70)),
        muscle_bulk=float(rng.uniform(0.75, 1.25)),
        muscle_fat=float(rng.beta(1.5, 3.0)),
        visceral_fat=float(np.clip(0.15 + 0.6 * fat + rng.normal(0, 0.1), 0.05, 0.85)),
        roll_deg=float(rng.normal(0, 2.5)),
    )
