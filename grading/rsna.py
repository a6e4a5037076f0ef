"""Import RSNA 2024 Lumbar Spine Degenerative Classification labels as a second-opinion rater.

Layout read (as the challenge distributes it)::

    train.csv                       study_id, spinal_canal_stenosis_l1_l2 ... _l5_s1 (Normal/Mild, Moderate, Severe)
    train_label_coordinates.csv     study_id, series_id, instance_number, condition, level, x, y
    train_series_descriptions.csv   study_id, series_id, series_description
    train_images/<study>/<series>/<instance>.dcm

The spinal-canal points are marked on the sagittal T2/STIR series, but grading works on axial T2
slices. Each level's axial slices are found, in order of preference,

1. through the left/right subarticular-stenosis points of that level, which are marked on the axial
   T2 series (their instance numbers are the level's axial slices), or
2. by projecting the sagittal spinal-canal point into patient space with the sagittal slice's
   geometry and taking the axial slice whose plane lies nearest, if within one slice thickness.

Grade mapping. RSNA grades spinal canal stenosis on a three-point scale (Normal/Mild, Moderate,
Severe) by the narrowing of the canal; Schizas grades the dural sac's content (rootlets, CSF, fat).
They are not the same scale. We map Normal/Mild -> A, Moderate -> B, Severe -> C and keep the
original in ``rsna_grade``. Severe covers Schizas C *and* D (RSNA does not look at posterior
epidural fat), so agreement against this rater is meaningful on A / B / C-or-D only: merge C and D
on the other side before comparing. Some Normal/Mild levels would be Schizas B. Every imported slice
is labelled ``rootlet``; at L1/L2 the conus may still be present, so treat that level with care.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from grading.dicom.reader import SkipFile, read_slice_header
from grading.dicom.series import SliceHeader

RSNA_LEVELS = ("L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1")
RSNA_TO_SCHIZAS = {"Normal/Mild": "A", "Moderate": "B", "Severe": "C"}
SUBARTICULAR = ("Left Subarticular Stenosis", "Right Subarticular Stenosis")


@dataclass(frozen=True)
class AxialMatch:
    instance_number: int
    method: str  # 'subarticular' | 'sagittal-projection'


def _series_headers(folder: Path) -> dict[int, SliceHeader]:
    headers = {}
    for path in sorted(folder.glob("*.dcm")):
        try:
            header = read_slice_header(path, verify_pixels=False)
        except (SkipFile, OSError):
            continue
        number = header.instance_number if header.instance_number is not None else int(path.stem)
        headers[number] = header
    return headers


def sagittal_point_to_patient(header: SliceHeader, x: float, y: float) -> np.ndarray:
    """Patient (LPS) coordinates of pixel column ``x``, row ``y`` of a slice."""
    row_dir = np.asarray(header.image_orientation[:3])
    col_dir = np.asarray(header.image_orientation[3:])
    row_spacing, col_spacing = header.pixel_spacing
    return np.asarray(header.image_position) + x * col_spacing * row_dir + y * row_spacing * col_dir


def nearest_axial_slice(point: np.ndarray, axial: dict[int, SliceHeader]) -> int | None:
    """Instance number of the axial slice whose plane is nearest ``point``, within its thickness."""
    best, best_distance = None, np.inf
    for number, header in axial.items():
        distance = abs(float(np.dot(point - np.asarray(header.image_position), header.normal)))
        if distance < best_distance:
            best, best_distance = number, distance
    if best is None:
        return None
    thickness = axial[best].slice_thickness or 4.0
    return best if best_distance <= thickness else None


def import_rsna(root: Path | str, rater: str = "RSNA") -> pd.DataFrame:
    """Label-table rows (SPEC columns plus ``rsna_grade``, ``rsna_level``, ``match_method``)."""
    root = Path(root)
    grades = pd.read_csv(root / "train.csv", dtype={"study_id": str})
    coords = pd.read_csv(root / "train_label_coordinates.csv", dtype={"study_id": str, "series_id": str})
    descriptions = pd.read_csv(root / "train_series_descriptions.csv", dtype={"study_id": str, "series_id": str})
    rows = []
    for study in grades.itertuples(index=False):
        study_id = str(study.study_id)
        series = descriptions[descriptions.study_id == study_id]
        axial_ids = list(series[series.series_description.str.contains("Axial T2", case=False)].series_id)
        if not axial_ids:
            continue
        axial_id = axial_ids[0]
        axial = _series_headers(root / "train_images" / study_id / axial_id)
        if not axial:
            continue
        study_coords = coords[coords.study_id == study_id]
        sagittal_cache: dict[str, dict[int, SliceHeader]] = {}
        for level in RSNA_LEVELS:
            column = "spinal_canal_stenosis_" + level.lower().replace("/", "_")
            rsna_grade = getattr(study, column, None)
            if not isinstance(rsna_grade, str) or rsna_grade not in RSNA_TO_SCHIZAS:
                continue
            for match in _axial_matches(root, study_id, level, study_coords, axial_id, axial, sagittal_cache):
                header = axial[match.instance_number]
                rows.append({
                    "case_id": f"{study_id}/{axial_id}/{match.instance_number}",
                    "study_id": study_id,
                    "series_uid": header.series_uid,
                    "sop_uid": header.sop_uid,
                    "rater": rater,
                    "level": "rootlet",
                    "grade": RSNA_TO_SCHIZAS[rsna_grade],
                    "rsna_grade": rsna_grade,
                    "rsna_level": level,
                    "match_method": match.method,
                })
    return pd.DataFrame(rows).drop_duplicates(["case_id", "rater"], keep="first").reset_index(drop=True)


def _axial_matches(root, study_id, level, coords, axial_id, axial, sagittal_cache) -> list[AxialMatch]:
    at_level = coords[coords.level == level]
    sub = at_level[at_level.condition.isin(SUBARTICULAR) & (at_level.series_id == axial_id)]
    numbers = sorted({int(n) for n in sub.instance_number if int(n) in axial})
    if numbers:
        return [AxialMatch(n, "subarticular") for n in numbers]
    canal = at_level[at_level.condition == "Spinal Canal Stenosis"]
    for point in canal.itertuples(index=False):
        series_id = str(point.series_id)
        if series_id not in sagittal_cache:
            sagittal_cache[series_id] = _series_headers(root / "train_images" / study_id / series_id)
        header = sagittal_cache[series_id].get(int(point.instance_number))
        if header is None:
            continue
        number = nearest_axial_slice(sagittal_point_to_patient(header, point.x, point.y), axial)
        if number is not None:
            return [AxialMatch(number, "sagittal-projection")]
    return []


def main(argv: list[str] | None = None) -> int:
    """``python -m grading.rsna RSNA_ROOT -o labels.csv [--rater RSNA]``"""
    import argparse

    from grading.labels import write_label_table

    p = argparse.ArgumentParser(prog="python -m grading.rsna", description="Import RSNA 2024 canal labels.")
    p.add_argument("root")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--rater", default="RSNA")
    args = p.parse_args(argv)
    table = import_rsna(args.root, args.rater)
    write_label_table(table, args.output)
    print(f"{len(table)} axial slices from {table.study_id.nunique() if len(table) else 0} studies -> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
