"""Label table validation (one clear problem per bad cell) and the RSNA 2024 importer."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from study_factory import AXIAL, SAGITTAL, series_slices, write_plain

from grading.labels import (
    TRAINING_COLUMNS,
    LabelTableError,
    read_label_table,
    write_label_table,
)
from grading.rsna import import_rsna, nearest_axial_slice, sagittal_point_to_patient

GOOD = [
    {"case_id": "c1", "study_id": "s", "series_uid": "1.2", "sop_uid": "1.2.1", "rater": "A1", "level": "rootlet",
     "grade": "B", "box_x0": 1, "box_y0": 2, "box_x1": 10, "box_y1": 12, "mask": "m/c1.png", "dsca_mm2": 120.5},
    {"case_id": "c2", "study_id": "s", "series_uid": "1.2", "sop_uid": "1.2.2", "rater": "A1", "level": "cord",
     "grade": "", "box_x0": "", "box_y0": "", "box_x1": "", "box_y1": "", "mask": "", "dsca_mm2": ""},
]


def _write(tmp_path, rows):
    path = tmp_path / "labels.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_roundtrip_keeps_text_and_numbers(tmp_path):
    path = tmp_path / "t.csv"
    write_label_table(GOOD, path)
    table = read_label_table(path, required=TRAINING_COLUMNS)
    assert list(table.grade) == ["B", ""]
    assert table.dsca_mm2.iloc[0] == 120.5 and np.isnan(table.dsca_mm2.iloc[1])
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp file left behind


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"grade": "E"}, "line 2, column grade: 'E' is not one of A, B, C, D"),
        ({"level": "disc"}, "line 2, column level: 'disc' is not one of rootlet, cord, other"),
        ({"box_x1": 0}, "line 2, column box_x1: box"),
        ({"box_y0": "abc"}, "line 2, column box_y0: 'abc' is not a number"),
        ({"dsca_mm2": -3}, "line 2, column dsca_mm2"),
        ({"mask": "../../etc/passwd"}, "line 2, column mask"),
        ({"case_id": "c2"}, "line 3, column case_id: duplicate row for case 'c2', rater 'A1'"),
    ],
)
def test_each_bad_cell_named(tmp_path, change, expected):
    rows = [dict(GOOD[0], **change), GOOD[1]]
    with pytest.raises(LabelTableError) as err:
        read_label_table(_write(tmp_path, rows))
    assert expected in str(err.value) and str(tmp_path / "labels.csv") in str(err.value)
    assert "\n" not in str(err.value)


def test_grade_on_a_cord_slice_is_an_error(tmp_path):
    with pytest.raises(LabelTableError, match="line 3, column grade: 'A' given for a cord slice"):
        read_label_table(_write(tmp_path, [GOOD[0], dict(GOOD[1], grade="A")]))


def test_missing_columns_and_unreadable_files(tmp_path):
    with pytest.raises(LabelTableError, match="missing column"):
        read_label_table(_write(tmp_path, [{"case_id": "c1", "rater": "A1"}]))
    with pytest.raises(LabelTableError, match="no such file"):
        read_label_table(tmp_path / "absent.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(LabelTableError):
        read_label_table(tmp_path / "bin.csv")


@pytest.fixture
def rsna_tree(tmp_path):
    """Two studies in the RSNA layout: axial T2 slices every 4 mm from z=50 down, and sagittal T2."""
    root = tmp_path / "rsna"
    for study in ("1001", "1002"):
        for name, slices in (("11", series_slices(f"ax{study}", 12, orientation=AXIAL)),
                             ("22", series_slices(f"sag{study}", 5, orientation=SAGITTAL, description="SAG T2"))):
            for ds, _ in slices:
                write_plain(ds, root / "train_images" / study / name / f"{ds.InstanceNumber}.dcm")
    pd.DataFrame({
        "study_id": ["1001", "1002"],
        "spinal_canal_stenosis_l1_l2": ["Normal/Mild", "Normal/Mild"],
        "spinal_canal_stenosis_l2_l3": ["", "Moderate"],
        "spinal_canal_stenosis_l3_l4": ["Moderate", "Normal/Mild"],
        "spinal_canal_stenosis_l4_l5": ["Severe", "Severe"],
        "spinal_canal_stenosis_l5_s1": ["Normal/Mild", "Normal/Mild"],
    }).to_csv(root / "train.csv", index=False)
    pd.DataFrame({
        "study_id": ["1001", "1002"] * 2,
        "series_id": ["11", "11", "22", "22"],
        "series_description": ["Axial T2", "Axial T2", "Sagittal T2/STIR", "Sagittal T2/STIR"],
    }).to_csv(root / "train_series_descriptions.csv", index=False)
    # Study 1001, L4/L5: subarticular points on axial instances 7 (left) and 8 (right).
    # Study 1002, L4/L5: only the sagittal canal point. The factory's sagittal slices have their
    # first pixel at z=50 with rows running down at 0.6 mm: row 60 is z = 50 - 36 = 14 mm, which is
    # the plane of axial instance 10 (z = 50 - 4 * 9 = 14).
    pd.DataFrame([
        {"study_id": "1001", "series_id": "11", "instance_number": 7, "condition": "Left Subarticular Stenosis",
         "level": "L4/L5", "x": 10, "y": 10},
        {"study_id": "1001", "series_id": "11", "instance_number": 8, "condition": "Right Subarticular Stenosis",
         "level": "L4/L5", "x": 20, "y": 10},
        {"study_id": "1002", "series_id": "22", "instance_number": 3, "condition": "Spinal Canal Stenosis",
         "level": "L4/L5", "x": 16, "y": 60},
    ]).to_csv(root / "train_label_coordinates.csv", index=False)
    return root


def test_rsna_import_maps_levels_onto_axial_slices(rsna_tree, tmp_path):
    table = import_rsna(rsna_tree)
    by_case = table.set_index("case_id")
    assert list(table.case_id) == ["1001/11/7", "1001/11/8", "1002/11/10"]
    assert list(by_case.match_method) == ["subarticular", "subarticular", "sagittal-projection"]
    assert set(table.grade) == {"C"} and set(table.rsna_grade) == {"Severe"}
    assert (table.level == "rootlet").all() and (table.rater == "RSNA").all()
    write_label_table(table, tmp_path / "rsna.csv")
    assert len(read_label_table(tmp_path / "rsna.csv", required=TRAINING_COLUMNS)) == 3


def test_sagittal_projection_geometry():
    from grading.dicom.series import SliceHeader

    sag = SliceHeader(path=None, sop_uid="1", series_uid="s", study_uid="", instance_number=1,
                      image_position=(5.0, -100.0, 80.0), image_orientation=SAGITTAL,
                      pixel_spacing=(0.5, 0.8), rows=100, columns=100)
    point = sagittal_point_to_patient(sag, x=10, y=20)
    assert np.allclose(point, [5.0, -100.0 + 10 * 0.8, 80.0 - 20 * 0.5])
    axial = {i: SliceHeader(path=None, sop_uid=str(i), series_uid="a", study_uid="", instance_number=i,
                            image_position=(0.0, 0.0, 90.0 - 4 * i), image_orientation=AXIAL,
                            pixel_spacing=(0.5, 0.5), rows=10, columns=10, slice_thickness=4.0) for i in range(5)}
    assert nearest_axial_slice(point, axial) == 4  # z=70 lies 4 mm below the plane of instance 4 (z=74)
    assert nearest_axial_slice(np.array([0, 0, 200.0]), axial) is None
