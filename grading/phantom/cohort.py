"""Generate a phantom cohort: per patient, a study of three series cut from one 3-D anatomy, the
label maps beside every slice, sac masks, and a label table with the truth and two raters.

Layout under the output folder::

    dicom/PH0001/{ax_t2,ax_t2_angled,sag_t2}/IM0001.dcm   one study, one frame of reference
    labelmaps/PH0001/<series>/IM0001.png                   tissue labels (tissues.Label), uint8
    masks/PH0001/<series>/IM0001.png                       dural sac (axial series)
    columns/PH0001/sag_t2/IM0001.png                       vertebral body / disc / sacrum classes (sagittal)
    labels.csv                                             raters truth, A1, A2 (SPEC format)
    column.csv                                             per sagittal slice: its column map and the
                                                           bodies and discs it shows, named and boxed
    cohort.json                                            each patient's anatomy in numbers

The label table's ``label_map`` column points at each slice's label map, so training can render
new contrasts from it; ``spinal_level`` says which disc or vertebra the slice crosses, and
``level_boundary_mm`` how far that point lies from the nearest disc-body boundary (a slice within
about a millimetre of one shows both).
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from grading.dicom.writer import MRSliceSpec, mr_dataset, stable_uid, write_dataset
from grading.labels import LABEL_COLUMNS, write_label_table
from grading.phantom.anatomy import Anatomy, SliceTruth, build_anatomy
from grading.phantom.patient import Patient, make_patient
from grading.phantom.protocol import (
    SeriesPlan,
    angled_axial,
    contiguous_axial,
    sagittal,
)
from grading.phantom.raters import RATERS, rate_series
from grading.phantom.sequences import (
    Sequence,
    SeriesRenderer,
    draw_scanner,
    draw_sequence,
    draw_tissues,
)
from stages.atomic import write_atomic, write_json_atomic

#: The contiguous axial series' contrast: mostly T2 TSE, as the paper's; some fat-suppressed and
#: Dixon series so a cohort is not one sequence.
DEFAULT_AXIAL_PRESETS = {"t2_tse": 0.75, "t2_spir": 0.1, "stir": 0.05, "dixon_water": 0.1}
SLAB_SAMPLES = 2  # sub-planes averaged across a slice's thickness (the central one and one off it)


@dataclass(frozen=True)
class CohortConfig:
    patients: int = 50
    seed: int = 0
    workers: int = min(2, os.cpu_count() or 1)
    axial_presets: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_AXIAL_PRESETS))
    series: tuple[str, ...] = ("ax_t2", "ax_t2_angled", "sag_t2")


def patient_id(index: int) -> str:
    return f"PH{index:04d}"


def _png(path: Path, array: np.ndarray) -> None:
    write_atomic(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG", compress_level=1))


def _box_columns(box) -> dict:
    if box is None:
        return {f"box_{k}": "" for k in ("x0", "y0", "x1", "y1")}
    return {f"box_{k}": round(v, 2) for k, v in zip(("x0", "y0", "x1", "y1"), box)}


def _slice_spec(pid: str, index: int, seed: int, plan: SeriesPlan, i: int, seq: Sequence, plane) -> MRSliceSpec:
    return MRSliceSpec(
        patient_id=pid,
        patient_name=f"PHANTOM^{index:04d}",
        study_uid=stable_uid("phantom", seed, pid, "study"),
        series_uid=stable_uid("phantom", seed, pid, plan.key),
        sop_uid=stable_uid("phantom", seed, pid, plan.key, i),
        frame_of_reference_uid=stable_uid("phantom", seed, pid, "for"),
        series_number=plan.number,
        instance_number=i,
        image_position=tuple(float(v) for v in plane.origin),
        image_orientation=tuple(float(v) for v in (*plane.row_dir, *plane.col_dir)),
        pixel_spacing=plane.spacing,
        slice_thickness=plan.thickness,
        spacing_between=plan.spacing_between,
        series_description=seq.description,
        echo_time=round(seq.te, 1),
        repetition_time=round(seq.tr),
    )


def _plans(anatomy: Anatomy, rng: np.random.Generator, config: CohortConfig, n_slices, matrix) -> list[SeriesPlan]:
    makers = {"ax_t2": lambda: contiguous_axial(anatomy, rng, n_slices, matrix),
              "ax_t2_angled": lambda: angled_axial(anatomy, rng), "sag_t2": lambda: sagittal(anatomy, rng)}
    plans = {key: maker() for key, maker in makers.items()}  # all drawn, so a patient is the same whatever is written
    return [plans[key] for key in config.series if key in plans]


def _preset(plan: SeriesPlan, config: CohortConfig, rng: np.random.Generator) -> str:
    names = list(config.axial_presets)
    drawn = str(rng.choice(names, p=np.array(list(config.axial_presets.values())) / sum(config.axial_presets.values())))
    return drawn if plan.key == "ax_t2" else "t2_tse"


def generate_patient(out_dir: Path, index: int, seed: int, config: CohortConfig = CohortConfig(),
                     matrix: int | None = None, n_slices: int | None = None) -> tuple[list[dict], dict]:
    """Write one patient's study, label maps and masks; return their label rows and a summary
    (whose ``column_rows`` describe the sagittal slices).

    ``matrix`` and ``n_slices`` fix the contiguous axial series' size (benchmarks); by default
    both are drawn like the rest of the patient.
    """
    rng = np.random.default_rng([seed, index])
    pid = patient_id(index)
    patient = make_patient(rng)
    anchor = (float(rng.normal(0, 10)), float(rng.normal(0, 10)), float(rng.uniform(-80, 80)))
    anatomy = build_anatomy(patient, anchor)
    tissues = draw_tissues(rng, patient.habitus.muscle_fat, marrow_fat=float(rng.uniform(0.4, 0.75)))
    rows: list[dict] = []
    column_rows: list[dict] = []
    series_summary = []
    for plan in _plans(anatomy, rng, config, n_slices, matrix):
        preset = _preset(plan, config, rng)
        sagittal = plan.orientation == "sagittal"
        seq = draw_sequence(preset, rng, "SAG" if sagittal else "AX")
        renderer = SeriesRenderer(seq, tissues, draw_scanner(rng), plan.planes[0].shape, plan.planes[0].spacing[0], rng,
                                  muscle_fat=patient.habitus.muscle_fat, sagittal=sagittal)
        truths: list[SliceTruth] = []
        bases = []
        for i, plane in enumerate(plan.planes, start=1):
            maps, depth = anatomy.slab(plane, SLAB_SAMPLES, rng)
            pixels, label_map = renderer.render(maps, depth, rng)
            spec = _slice_spec(pid, index, seed, plan, i, seq, plane)
            rel = Path(pid) / plan.key / f"IM{i:04d}"
            write_dataset(mr_dataset(pixels, spec), out_dir / "dicom" / rel.with_suffix(".dcm"))
            _png(out_dir / "labelmaps" / rel.with_suffix(".png"), label_map)
            if plan.orientation == "sagittal":
                classes, structures = anatomy.column_targets(plane, maps[0])
                _png(out_dir / "columns" / rel.with_suffix(".png"), classes)
                column_rows.append({"case_id": f"{pid}-{plan.key}-{i:03d}", "study_id": pid,
                                    "series_uid": spec.series_uid, "sop_uid": spec.sop_uid,
                                    "classes": (Path("columns") / rel.with_suffix(".png")).as_posix(),
                                    "label_map": (Path("labelmaps") / rel.with_suffix(".png")).as_posix(),
                                    "from_middle": abs(i - 1 - (len(plan.planes) - 1) / 2),
                                    "lumbar_vertebrae": patient.lumbar_count,
                                    "structures": json.dumps(structures, separators=(",", ":"))})
            if plan.orientation != "axial":
                continue
            truth = anatomy.slice_truth(plane, maps[0])
            _png(out_dir / "masks" / rel.with_suffix(".png"), truth.sac_mask.astype(np.uint8) * 255)
            truths.append(truth)
            bases.append({"case_id": f"{pid}-{plan.key}-{i:03d}", "study_id": pid, "series_uid": spec.series_uid,
                          "sop_uid": spec.sop_uid, "mask": (Path("masks") / rel.with_suffix(".png")).as_posix(),
                          "label_map": (Path("labelmaps") / rel.with_suffix(".png")).as_posix()})
        for base, truth in zip(bases, truths):
            rows.append({**base, "rater": "truth", "level": truth.level, "grade": truth.grade,
                         **_box_columns(truth.box), "dsca_mm2": round(truth.dsca_mm2, 2),
                         "spinal_level": truth.segment, "level_boundary_mm": round(truth.boundary_mm, 2)})
        for rater in RATERS:
            for base, label in zip(bases, rate_series(rater, patient.conus_tip, truths, rng)):
                rows.append({**base, "rater": rater.name, "level": label.level, "grade": label.grade,
                             **_box_columns(label.box), "dsca_mm2": round(label.dsca_mm2, 2), "spinal_level": "",
                             "level_boundary_mm": ""})
        series_summary.append({"key": plan.key, "preset": preset, "description": seq.description,
                               "n_slices": len(plan.planes), "pixel_spacing_mm": round(plan.planes[0].spacing[0], 4),
                               "matrix": plan.planes[0].shape[0]})
    summary = _summary(pid, patient, series_summary)
    summary["column_rows"] = column_rows
    return rows, summary


def _summary(pid: str, patient: Patient, series: list[dict]) -> dict:
    return {
        "patient_id": pid,
        "lumbar_vertebrae": patient.lumbar_count,
        "conus_tip_level": patient.segment_at(patient.conus_tip)[0],
        "a_subtype": patient.a_subtype,
        "metal_levels": list(patient.metal_levels),
        "lordosis_deg": round(patient.curvature.lordosis_deg, 1),
        "discs": {d.name: {"bulge_mm": round(d.bulge, 1), "protrusion_mm": round(d.protrusion, 1),
                           "facet_mm": round(d.facet, 1), "flavum_mm": round(d.flavum, 1),
                           "lipomatosis_mm": round(d.lipomatosis, 1)} for d in patient.discs},
        "slips_mm": {v.name: round(v.slip, 1) for v in patient.vertebrae if v.slip},
        "habitus": {k: round(v, 2) for k, v in patient.habitus.__dict__.items()},
        "series": series,
    }


def _one_thread_each() -> None:
    """A worker process's BLAS on one thread: the workers already fill the cores."""
    threadpool_limits(1)


def generate_cohort(out_dir: Path | str, config: CohortConfig = CohortConfig(), progress: bool = True) -> Path:
    """Write the cohort under ``out_dir``; returns the path of its label table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    indices = range(1, config.patients + 1)
    bar = tqdm(total=config.patients, desc="phantom patients", unit="patient", disable=None if progress else True)
    results: list[tuple[list[dict], dict]] = []
    if config.workers > 1:
        with ProcessPoolExecutor(config.workers, initializer=_one_thread_each) as pool:
            for future in [pool.submit(generate_patient, out_dir, i, config.seed, config) for i in indices]:
                results.append(future.result())
                bar.update()
    else:
        for i in indices:
            results.append(generate_patient(out_dir, i, config.seed, config))
            bar.update()
    bar.close()
    rows = [row for patient_rows, _ in results for row in patient_rows]
    labels = out_dir / "labels.csv"
    write_label_table(rows, labels)
    column_rows = [row for _, summary in results for row in summary.pop("column_rows")]
    if column_rows:
        table = pd.DataFrame(column_rows)
        write_atomic(out_dir / "column.csv", lambda tmp: table.to_csv(tmp, index=False))
    cohort = {"seed": config.seed, "patients": [summary for _, summary in results],
              "raters": ["truth"] + [r.name for r in RATERS], "columns": list(LABEL_COLUMNS)}
    write_json_atomic(out_dir / "cohort.json", cohort)
    return labels
