"""Generate a phantom cohort: one axial T2 DICOM series per patient, masks and a label table."""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from grading.dicom.writer import MRSliceSpec, mr_dataset, stable_uid, write_dataset
from grading.labels import LABEL_COLUMNS, write_label_table
from grading.phantom.anatomy import make_spine, series_positions, slice_anatomy
from grading.phantom.raters import RATERS, rate_series
from grading.phantom.render import Habitus, Scanner, render_slice
from stages.atomic import write_json_atomic

MATRICES = (256, 320, 384, 448, 512)


@dataclass(frozen=True)
class CohortConfig:
    patients: int = 50
    seed: int = 0
    workers: int = min(2, os.cpu_count() or 1)


def patient_id(index: int) -> str:
    return f"PH{index:04d}"


def _habitus(rng: np.random.Generator) -> Habitus:
    return Habitus(
        half_width=rng.uniform(135, 180),
        back_depth=rng.uniform(55, 85),
        front_depth=rng.uniform(150, 210),
        fat_thickness=rng.uniform(8, 26),
        body_half_width=rng.uniform(20, 25),
        body_half_depth=rng.uniform(14, 17),
        rotation_deg=rng.normal(0, 3.5),
        centre_x=rng.normal(0, 6),
        centre_y=rng.normal(0, 6),
    )


def _scanner(rng: np.random.Generator, habitus: Habitus, matrix: int | None = None) -> Scanner:
    drawn = int(rng.choice(MATRICES))  # drawn even when overridden, so the rest of the patient stays the same
    matrix = matrix or drawn
    spacing = float(np.clip(rng.uniform(170, 330) / matrix, 0.3, 0.9))
    fov = matrix * spacing
    # Field of view centred a little in front of the canal, with a lateral offset.
    centre = (habitus.centre_x + rng.normal(0, 10), habitus.centre_y - rng.uniform(5, 30))
    origin = (centre[0] - spacing * (matrix - 1) / 2, centre[1] - spacing * (matrix - 1) / 2)
    return Scanner(
        rows=matrix,
        columns=matrix,
        spacing=spacing,
        origin=origin,
        signal_scale=rng.uniform(1400, 3600),
        noise_fraction=rng.uniform(0.015, 0.05),
        bias=(rng.normal(0, 0.12), rng.uniform(0.1, 0.35) + rng.normal(0, 0.05), rng.normal(0, 0.08),
              rng.normal(0, 0.1) - 0.1 * fov / 300),
        blur_px=rng.uniform(0.4, 0.8),
        gamma=rng.uniform(0.8, 1.25),
    )


def generate_patient(out_dir: Path, index: int, seed: int, matrix: int | None = None,
                     n_slices: int | None = None) -> tuple[list[dict], dict]:
    """Write one patient's series and masks; return their label rows and a summary.

    ``matrix`` and ``n_slices`` fix the image size and series length (benchmarks); by default
    both are drawn like the rest of the patient.
    """
    rng = np.random.default_rng([seed, index])
    pid = patient_id(index)
    spine = make_spine(rng)
    habitus = _habitus(rng)
    scanner = _scanner(rng, habitus, matrix)
    positions = series_positions(spine, rng, n_slices)
    anatomy = [slice_anatomy(spine, s, rng) for s in positions]
    study_uid = stable_uid("phantom", seed, pid, "study")
    series_uid = stable_uid("phantom", seed, pid, "series")
    table_z = rng.uniform(-60, 60)
    te, tr = rng.uniform(85, 120), rng.uniform(3000, 5500)
    rows: list[dict] = []
    boxes = []
    truth = []
    for i, anat in enumerate(anatomy, start=1):
        rendered = render_slice(anat, habitus, scanner)
        sop_uid = stable_uid("phantom", seed, pid, "sop", i)
        spec = MRSliceSpec(
            patient_id=pid,
            patient_name=f"PHANTOM^{index:04d}",
            study_uid=study_uid,
            series_uid=series_uid,
            sop_uid=sop_uid,
            frame_of_reference_uid=stable_uid("phantom", seed, pid, "for"),
            series_number=3,
            instance_number=i,
            image_position=(scanner.origin[0], scanner.origin[1], table_z - anat.s),
            pixel_spacing=(scanner.spacing, scanner.spacing),
            slice_thickness=4.0,
            series_description="AX T2 TSE",
            echo_time=round(te, 1),
            repetition_time=round(tr),
        )
        write_dataset(mr_dataset(rendered.pixels, spec), out_dir / "dicom" / pid / f"IM{i:04d}.dcm")
        mask_rel = Path("masks") / pid / f"IM{i:04d}.png"
        (out_dir / mask_rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rendered.sac_mask.astype(np.uint8) * 255).save(out_dir / mask_rel)
        boxes.append(rendered.box)
        base = {"case_id": f"{pid}-{i:03d}", "study_id": pid, "series_uid": series_uid, "sop_uid": sop_uid,
                "mask": mask_rel.as_posix()}
        truth.append(base)
        rows.append({**base, "rater": "truth", "level": anat.level, "grade": anat.grade,
                     **_box_columns(rendered.box), "dsca_mm2": round(anat.dsca_mm2, 2)})
    for rater in RATERS:
        for base, label in zip(truth, rate_series(rater, spine, anatomy, boxes, rng)):
            rows.append({**base, "rater": rater.name, "level": label.level, "grade": label.grade,
                         **_box_columns(label.box), "dsca_mm2": round(label.dsca_mm2, 2)})
    summary = {
        "patient_id": pid,
        "n_slices": len(anatomy),
        "conus_tip_s_mm": round(spine.conus_tip, 1),
        "disc_severity": {k: round(v, 3) for k, v in spine.disc_severity.items()},
        "metal_levels": list(spine.metal_levels),
        "matrix": scanner.rows,
        "pixel_spacing_mm": round(scanner.spacing, 4),
        "habitus": {k: round(v, 2) for k, v in asdict(habitus).items()},
    }
    return rows, summary


def _box_columns(box) -> dict:
    return {f"box_{k}": round(v, 2) for k, v in zip(("x0", "y0", "x1", "y1"), box)}


def generate_cohort(out_dir: Path | str, config: CohortConfig = CohortConfig(), progress: bool = True) -> Path:
    """Write the cohort under ``out_dir``; returns the path of its label table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    indices = range(1, config.patients + 1)
    results: list[tuple[list[dict], dict]]
    bar = tqdm(total=config.patients, desc="phantom patients", unit="patient", disable=None if progress else True)
    if config.workers > 1:
        with ProcessPoolExecutor(config.workers) as pool:
            futures = [pool.submit(generate_patient, out_dir, i, config.seed) for i in indices]
            results = []
            for future in futures:
                results.append(future.result())
                bar.update()
    else:
        results = []
        for i in indices:
            results.append(generate_patient(out_dir, i, config.seed))
            bar.update()
    bar.close()
    rows = [row for patient_rows, _ in results for row in patient_rows]
    labels = out_dir / "labels.csv"
    write_label_table(rows, labels)
    cohort = {"seed": config.seed, "patients": [summary for _, summary in results],
              "raters": ["truth"] + [r.name for r in RATERS], "columns": list(LABEL_COLUMNS)}
    write_json_atomic(out_dir / "cohort.json", cohort)
    return labels
