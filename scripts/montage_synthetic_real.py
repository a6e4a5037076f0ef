"""Synthetic slices beside real ones, at the same physical field of view and display window.

    uv run python scripts/montage_synthetic_real.py -o docs/synthetic_vs_real.png
    uv run python scripts/montage_synthetic_real.py --pelvis -o docs/real/pelvis_level_gap.png
    uv run python scripts/montage_synthetic_real.py --canal -o docs/real/canal_dixon_water.png
    uv run python scripts/montage_synthetic_real.py --sacrum -o docs/real/sacrum_sagittal.png

Pairs each real contrast in ../shared/realdata (T2 TSE at a disc, Dixon water and fat, T2-SPIR,
sagittal T2) with a phantom slice rendered by the matching preset, and adds the phantom's T2 TSE
at a vertebral body, at the conus, at a Schizas D level, and its T1. ``--pelvis`` draws instead the
phantom's Dixon water from L4/L5 to the sacrum above the lowest slices of a volunteer's (where the
iliac wings come into view and detectors have boxed wrong); ``--canal`` the phantom's Dixon water
around the canal at a vertebral body and a disc beside a volunteer's (where a grade model called
healthy sacs D); ``--sacrum`` the phantom's sagittal T2 at the lumbosacral junction beside SPIDER
patients'. Real images are only looked at.
Without the real data, the synthetic panels are drawn alone.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from grading.phantom.anatomy import Anatomy, Plane, build_anatomy  # noqa: E402
from grading.phantom.patient import make_patient  # noqa: E402
from grading.phantom.protocol import _axial_axes, _plane  # noqa: E402
from grading.phantom.sequences import SeriesRenderer, draw_scanner, draw_sequence, draw_tissues  # noqa: E402

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


def _nifti_slice(path: Path, k: int) -> tuple[np.ndarray, float]:
    import nibabel as nib

    image = nib.load(str(path))
    return np.asarray(image.dataobj, np.float32)[:, :, k].T, float(image.header.get_zooms()[0])


def real_panels(root: Path) -> dict[str, tuple[np.ndarray, float]]:
    """Real slices by contrast, each (image in display orientation, mm per pixel)."""
    out = {}
    tse = sorted((root / "axial_t2_tse_disc_level").glob("*.png"))
    if tse:
        out["t2_tse_disc"] = (np.asarray(Image.open(tse[0]).convert("L"), np.float32), 0.6875)
    for key, name, k in (("dixon_water", "TUM01_water_img_img_L2-L5.nii.gz", 14),
                         ("dixon_fat", "TUM01_fat_img_img_L2-L5.nii.gz", 14)):
        if (root / name).is_file():
            out[key] = _nifti_slice(root / name, k)
    chaos = root / "chaos_axial_t2spir" / "CHAOS11_T2SPIR_full.nii.gz"
    if chaos.is_file():
        out["t2_spir"] = _nifti_slice(chaos, 6)
    sagittal = _spider_middle(root, "209", "6*")
    if sagittal is not None:
        out["sagittal"] = sagittal
    return out


def _spider_middle(root: Path, patient: str, slices: str = "*") -> tuple[np.ndarray, float] | None:
    """The middle of a SPIDER patient's sagittal T2 slices whose number matches ``slices`` (image,
    mm per pixel: not recorded, 0.6 assumed); None where there are none."""
    files = sorted((root / "spider_sagittal_t2" / "images").glob(f"{patient}_t2_SPACE_slice{slices}.png"))
    if not files:
        return None
    return np.asarray(Image.open(files[len(files) // 2]).convert("L"), np.float32), 0.6


def _axial(anatomy: Anatomy, s: float, fov: float, matrix: int, anterior_shift: float) -> Plane:
    c, _, _, w = anatomy.line.at(s)
    row, col = _axial_axes(w)
    return _plane(c - anterior_shift * col, row, col, (matrix, matrix), fov / matrix, 4.0)


def _sagittal(anatomy: Anatomy, matrix: int = 448, fov: float = 300.0, at: float | None = None) -> Plane:
    """The mid-sagittal plane, centred on the canal at arc length ``at`` (default: mid L3)."""
    lumbar = [v for v in anatomy.patient.vertebrae if v.region == "L"]
    c = anatomy.line.at((lumbar[2].start + lumbar[2].end) / 2 if at is None else at)[0]
    normal, col = np.array([1.0, 0, 0]), np.array([0, 0, -1.0])
    return _plane(c - 25 * np.cross(normal, col), np.cross(normal, col), col, (matrix, matrix), fov / matrix, 4.0)


def synthetic_panels(seed: int = 5) -> dict[str, tuple[np.ndarray, float]]:
    rng = np.random.default_rng(seed)
    patients = [make_patient(np.random.default_rng(seed + k)) for k in range(12)]
    anatomies = [build_anatomy(p) for p in patients[:1]]
    # A patient with a Schizas D level: the most compressed sac among the first twelve.
    worst = None
    for p in patients:
        anatomy = build_anatomy(p) if p is not patients[0] else anatomies[0]
        packing = anatomy.spine.packing() * (anatomy.spine.grid.a > p.conus_tip)
        k = int(np.argmax(packing * (anatomy.spine.dorsal_fat < 2)))
        if worst is None or packing[k] > worst[1]:
            worst = (anatomy, packing[k], float(anatomy.spine.grid.a[k]))
    anatomy, patient = anatomies[0], patients[0]
    tissues = draw_tissues(rng, patient.habitus.muscle_fat)
    disc = next(d for d in patient.discs if d.name.startswith("L4"))
    body = next(v for v in patient.vertebrae if v.name == "L3")
    planes = {
        "t2_tse_disc": (anatomy, _axial(anatomy, (disc.start + disc.end) / 2, 220, 320, 25), "t2_tse"),
        "t2_tse_body": (anatomy, _axial(anatomy, (body.start + body.end) / 2, 220, 320, 25), "t2_tse"),
        "conus": (anatomy, _axial(anatomy, patient.conus_tip - 6, 220, 320, 25), "t2_tse"),
        "grade_d": (worst[0], _axial(worst[0], worst[2], 220, 320, 25), "t2_tse"),
        "t1": (anatomy, _axial(anatomy, (disc.start + disc.end) / 2, 220, 320, 25), "t1_tse"),
        "dixon_water": (anatomy, _axial(anatomy, (body.start + body.end) / 2, 400, 400, 70), "dixon_water"),
        "dixon_fat": (anatomy, _axial(anatomy, (body.start + body.end) / 2, 400, 400, 70), "dixon_fat"),
        "t2_spir": (anatomy, _axial(anatomy, (body.start + body.end) / 2, 420, 256, 90), "t2_spir"),
        "sagittal": (anatomy, _sagittal(anatomy), "t2_tse"),
    }
    return {key: (_render(anat, plane, preset, tissues, rng, sagittal=key == "sagittal"), plane.spacing[0])
            for key, (anat, plane, preset) in planes.items()}


def _render(anatomy: Anatomy, plane: Plane, preset: str, tissues, rng: np.random.Generator,
            sagittal: bool = False) -> np.ndarray:
    seq = draw_sequence(preset, rng, "SAG" if sagittal else "AX")
    renderer = SeriesRenderer(seq, tissues, draw_scanner(rng), plane.shape, plane.spacing[0], rng,
                              muscle_fat=anatomy.patient.habitus.muscle_fat, sagittal=sagittal)
    maps, depth = anatomy.slab(plane, 2, rng)
    return renderer(maps, depth, rng).astype(np.float32)


def pelvis_montage(realdata: Path, seed: int, output: Path) -> None:
    """Phantom Dixon water at L4/L5, mid L5, L5/S1 and S1 + 12 mm (the lowest its series reach)
    above TUM02's slices #9, #5, #3 and #1 (the lowest of its L2-L5 stack)."""
    rng = np.random.default_rng(seed)
    patient = make_patient(np.random.default_rng(seed))
    anatomy = build_anatomy(patient)
    tissues = draw_tissues(rng, patient.habitus.muscle_fat)
    l4, l5 = [v for v in patient.vertebrae if v.region == "L"][-2:]  # the last two lumbar, however many
    l45 = next(d for d in patient.discs if d.name == f"{l4.name}/{l5.name}")
    l5s1 = next(d for d in patient.discs if d.name.endswith("/S1"))
    levels = [((l45.start + l45.end) / 2, "L4/L5 disc"), ((l5.start + l5.end) / 2, "mid L5 body"),
              ((l5s1.start + l5s1.end) / 2, "L5/S1 disc"),
              (patient.sacrum.start + 12, "S1 + 12 mm (the lowest it draws)")]
    phantom = []
    for s, title in levels:
        plane = _axial(anatomy, s, 400, 400, 70)
        phantom.append((_render(anatomy, plane, "dixon_water", tissues, rng), plane.spacing[0], f"phantom: {title}"))
    real = _volunteer(realdata / "TUM02_water_img_img_L2-L5.nii.gz", [(k, f"real TUM02 Dixon water #{k + 1}")
                                                                         for k in (8, 4, 2, 0)])
    _two_rows(phantom, real, 360, "Dixon water where the iliac wings come into view: phantom, L4/L5 to S1 (top); "
              "volunteer TUM02, lowest slices of L2-L5 (bottom); 360 mm field of view", output)


def canal_montage(realdata: Path, seed: int, output: Path) -> None:
    """Phantom Dixon water around the canal at a vertebral body (the pedicles) and at a disc, two
    patients, beside volunteer TUM01's slices #22 and #21 (pedicle level: stop 33's seed-1 grade
    model called their healthy sacs D) and #19 and #17 (disc level: called A)."""
    phantom = []
    for patient_seed in (seed, seed + 1):
        rng = np.random.default_rng(patient_seed)
        patient = make_patient(np.random.default_rng(patient_seed))
        anatomy = build_anatomy(patient)
        tissues = draw_tissues(rng, patient.habitus.muscle_fat)
        body = next(v for v in patient.vertebrae if v.name == "L3")
        disc = next(d for d in patient.discs if d.name == "L3/L4")
        for s, title in (((body.start + body.end) / 2, "mid L3 body"), ((disc.start + disc.end) / 2, "L3/L4 disc")):
            plane = _axial(anatomy, s, 140, 200, 0)
            phantom.append((_render(anatomy, plane, "dixon_water", tissues, rng), plane.spacing[0],
                            f"phantom {patient_seed}: {title}"))
    real = _volunteer(realdata / "TUM01_water_img_img_L2-L5.nii.gz",
                      [(21, "real TUM01 #22: pedicles"), (20, "real TUM01 #21: pedicles"),
                       (18, "real TUM01 #19: disc"), (16, "real TUM01 #17: disc")])
    _two_rows(phantom, real, 140, "Dixon water around the canal: phantom at a vertebral body and a disc (top); "
              "volunteer TUM01 at its pedicles and discs (bottom); 140 mm field of view", output)


def sacrum_montage(realdata: Path, seed: int, output: Path) -> None:
    """Phantom mid-sagittal T2 centred on the lumbosacral junction, four patients, above the middle
    sagittal slices of four SPIDER patients: the sacrum as five fused segments with a body-like S1
    (phantom v8), where a locator trained on a smooth wedge took the real S1 for a lumbar body."""
    phantom = []
    for patient_seed in range(seed, seed + 4):
        rng = np.random.default_rng(patient_seed)
        patient = make_patient(np.random.default_rng(patient_seed))
        anatomy = build_anatomy(patient)
        tissues = draw_tissues(rng, patient.habitus.muscle_fat)
        plane = _sagittal(anatomy, at=patient.sacrum.start + 10)
        phantom.append((_render(anatomy, plane, "t2_tse", tissues, rng, sagittal=True), plane.spacing[0],
                        f"phantom {patient_seed}: sagittal T2"))
    real = []
    for pid in ("61", "107", "5", "146"):
        panel = _spider_middle(realdata, pid)
        real.append(None if panel is None else (*panel, f"real SPIDER {pid}: middle slice"))
    _two_rows(phantom, real, 300, "Sagittal T2 at the lumbosacral junction: phantom v8 (top; S1 to S5 fused, "
              "rudimentary discs between); SPIDER patients (bottom); 300 mm field of view", output)


def _volunteer(path: Path, slices: list[tuple[int, str]]) -> list[tuple[np.ndarray, float, str] | None]:
    """Slices ``(index, title)`` of a real NIfTI volume; None each where the file is absent."""
    if not path.is_file():
        return [None] * len(slices)
    return [(*_nifti_slice(path, k), title) for k, title in slices]


def _two_rows(top: list, bottom: list, fov: float, title: str, output: Path) -> None:
    """Phantom panels above real ones, (image, mm per pixel, title) each, at one field of view."""
    fig, axes = plt.subplots(2, len(top), figsize=(4 * len(top), 9), constrained_layout=True)
    for row, panels in zip(axes, (top, bottom)):
        for ax, panel in zip(row, panels):
            if panel is None:
                ax.axis("off")
            else:
                _show(ax, *panel[:2], fov, panel[2])
    fig.suptitle(title, fontsize=12)
    fig.savefig(output, dpi=80)
    plt.close(fig)
    print(f"-> {output}")


def _show(ax, image: np.ndarray, mm: float, fov: float, title: str) -> None:
    """The central ``fov`` mm of the image, windowed on its own percentiles."""
    rows, cols = image.shape
    half = fov / mm / 2
    cy, cx = rows / 2, cols / 2
    ax.imshow(image, cmap="gray", vmin=0, vmax=float(np.percentile(image, 99.5)) or 1)
    ax.set_xlim(cx - half, cx + half)
    ax.set_ylim(cy + half, cy - half)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--realdata", type=Path, default=REALDATA)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--pelvis", action="store_true", help="the phantom's pelvis levels beside a volunteer's")
    p.add_argument("--canal", action="store_true", help="Dixon water around the canal at a body and a disc")
    p.add_argument("--sacrum", action="store_true", help="sagittal T2 at the lumbosacral junction")
    p.add_argument("-o", "--output", type=Path, default=Path("docs/synthetic_vs_real.png"))
    args = p.parse_args()
    special = {"pelvis": pelvis_montage, "canal": canal_montage, "sacrum": sacrum_montage}
    for name, montage in special.items():
        if getattr(args, name):
            montage(args.realdata, args.seed, args.output)
            return
    real = real_panels(args.realdata) if args.realdata.is_dir() else {}
    synthetic = synthetic_panels(args.seed)
    pairs = [("t2_tse_disc", "T2 TSE, disc", 200), ("dixon_water", "Dixon water", 380), ("dixon_fat", "Dixon fat", 380),
             ("t2_spir", "T2 SPIR", 400), ("sagittal", "sagittal T2", 300)]
    alone = [("t2_tse_body", "T2 TSE, vertebral body", 200), ("conus", "T2 TSE, conus", 200),
             ("grade_d", "T2 TSE, Schizas D", 200), ("t1", "T1 TSE, disc", 200)]
    fig, axes = plt.subplots(3, 5, figsize=(17, 10.5))
    for col, (key, title, fov) in enumerate(pairs):
        _show(axes[0, col], *synthetic[key], fov, f"synthetic: {title}")
        if key in real:
            _show(axes[1, col], *real[key], fov, f"real: {title}")
        else:
            axes[1, col].axis("off")
    for col, (key, title, fov) in enumerate(alone):
        _show(axes[2, col], *synthetic[key], fov, f"synthetic: {title}")
    axes[2, 4].axis("off")
    fig.suptitle("Phantom slices (rows 1 and 3) beside real MRI (row 2) at the same field of view", fontsize=13)
    fig.tight_layout()
    fig.savefig(args.output, dpi=70)
    print(f"-> {args.output}")


if __name__ == "__main__":
    main()
