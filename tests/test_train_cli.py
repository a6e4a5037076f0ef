"""grade-train end to end on a tiny phantom cohort (smoke profile: plumbing, not accuracy)."""
from __future__ import annotations

import json

import pytest
from study_factory import phantom_config

from grading.cli.agreement import main as grade_agreement
from grading.cli.train import classifier_name
from grading.cli.train import main as grade_train
from grading.labels import TRAINING_COLUMNS, read_label_table
from grading.phantom.cohort import generate_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    return generate_cohort(root, phantom_config(4, 2), progress=False)


def test_classifier_names():
    assert (classifier_name("A1"), classifier_name("A2"), classifier_name("truth")) == ("C1", "C2", "C-truth")


def test_trains_folds_and_writes_oof_predictions(cohort, tmp_path, capsys):
    run = tmp_path / "run"
    code = grade_train(["--labels", str(cohort), "--images", str(cohort.parent / "dicom"), "--rater", "A1",
                        "--stages", "grade,segmenter", "--folds", "4", "--profile", "smoke", "-o", str(run),
                        "--splits", str(tmp_path / "splits.json")])
    assert code == 0
    oof = read_label_table(run / "oof_predictions.csv", required=TRAINING_COLUMNS)
    labels = read_label_table(cohort)
    a1 = labels[labels.rater == "A1"]
    assert set(oof.rater) == {"C1"} and sorted(oof.case_id) == sorted(a1.case_id)
    assert set(oof.fold.dropna().astype(int)) == {0, 1, 2, 3}
    # no level stage trained: where the rater boxed a canal the levels are the rater's (never scored);
    # a slice the rater left unboxed (below the sac's end) has no canal to classify
    a1_boxed = a1[a1.box_x0.notna()]
    boxed = oof.case_id.isin(a1_boxed.case_id)
    assert boxed.any() and (oof.level_source[boxed] == "labels").all() and (oof.status[boxed] == "not classified").all()
    assert (oof.status[~boxed] == "no canal").all() and (oof.level[~boxed] == "other").all()
    assert list(oof[boxed].set_index("case_id").level.loc[a1_boxed.case_id]) == list(a1_boxed.level)
    rootlet = oof[oof.level == "rootlet"]
    assert rootlet.dsca_mm2.notna().all() and rootlet.grade.isin(list("ABCD")).all()
    for fold in range(4):
        assert (run / f"fold_{fold:02d}" / "bundle" / "manifest.json").is_file()
    manifest = json.loads((run / "final" / "bundle" / "manifest.json").read_text())
    assert manifest["provenance"]["rater"] == "A1" and set(manifest["stages"]) == {"grade", "segmenter"}
    out = tmp_path / "agreement"
    assert grade_agreement([str(cohort), str(run / "oof_predictions.csv"), "--pair", "A1:A2", "--pair", "A1:C1",
                            "-o", str(out)]) == 0
    records = json.loads((out / "agreement.json").read_text())
    assert {(r["task"], r["rater_b"]) for r in records} >= {("grade", "C1"), ("dsca", "C1")}


def test_merge_only_and_bad_arguments(cohort, tmp_path, capsys):
    run = tmp_path / "run"
    base = ["--labels", str(cohort), "--images", str(cohort.parent / "dicom"), "--profile", "smoke", "-o", str(run),
            "--splits", str(tmp_path / "splits.json")]
    assert grade_train(base + ["--rater", "A2", "--stages", "level", "--folds", "3", "--only-folds", "1",
                               "--no-final"]) == 0
    assert grade_train(base + ["--rater", "A2", "--merge", "--as", "CNN"]) == 0
    oof = read_label_table(run / "oof_predictions.csv")
    assert set(oof.rater) == {"CNN"} and set(oof.fold.astype(int)) == {1}
    assert grade_train(base + ["--rater", "Z9"]) == 2
    assert "rater 'Z9' not in" in capsys.readouterr().err
    assert grade_train(base + ["--rater", "A1", "--stages", "levels"]) == 2


def test_every_rater_is_tested_on_the_same_patients(cohort, tmp_path):
    """Folds are planned once per cohort (splits_final.json beside the table): Classifier1 and
    Classifier2 see the same test patients, so the agreement study compares them case for case."""
    common = ["--labels", str(cohort), "--images", str(cohort.parent / "dicom"), "--profile", "smoke",
              "--stages", "level", "--folds", "3", "--no-final"]
    for rater in ("A1", "A2"):
        assert grade_train(common + ["--rater", rater, "-o", str(tmp_path / rater)]) == 0
    splits = json.loads((cohort.parent / "splits_final.json").read_text())
    assert splits["key"] == "study_id" and splits["n_folds"] == 3
    for rater in ("A1", "A2"):
        assert json.loads((tmp_path / rater / "splits_final.json").read_text()) == splits
    c1 = read_label_table(tmp_path / "A1" / "oof_predictions.csv").set_index("case_id").fold
    c2 = read_label_table(tmp_path / "A2" / "oof_predictions.csv").set_index("case_id").fold
    shared = c1.index.intersection(c2.index)
    assert len(shared) > 0 and (c1[shared] == c2[shared]).all()
    assert grade_train(common + ["--rater", "A1", "--folds", "4", "-o", str(tmp_path / "x")]) == 2  # plan says 3


def test_a_slice_without_a_patient_is_refused(tmp_path, capsys):
    import shutil

    import pandas as pd

    cohort = tmp_path / "c"
    generate_cohort(cohort, phantom_config(3, 8), progress=False)
    table = pd.read_csv(cohort / "labels.csv", keep_default_na=False)
    table.loc[3, "study_id"] = ""
    table.to_csv(cohort / "labels.csv", index=False)
    args = ["--labels", str(cohort / "labels.csv"), "--images", str(cohort / "dicom"), "--profile", "smoke",
            "--rater", "A1", "--stages", "level", "--folds", "3", "-o", str(tmp_path / "run")]
    assert grade_train(args) == 2
    assert "empty study_id" in capsys.readouterr().err
    shutil.rmtree(cohort)


def test_the_image_folder_is_scanned_once_for_slices_and_columns(tmp_path, monkeypatch):
    """The locator's sagittal slices come from the same scan as the axial ones (a cohort's few
    thousand headers take seconds to read)."""
    from dataclasses import replace

    import grading.cli.train as train_cli
    from grading.dicom import scan_study

    cohort = generate_cohort(tmp_path / "cohort", replace(phantom_config(3, 5), series=("ax_t2", "sag_t2")),
                             progress=False)

    scans = []
    monkeypatch.setattr(train_cli, "scan_study", lambda *a, **k: scans.append(a) or scan_study(*a, **k), raising=False)
    monkeypatch.setattr("grading.training_data.scan_study", lambda *a, **k: scans.append(a) or scan_study(*a, **k))
    def train(run, **kwargs):
        return grade_train(["--labels", str(cohort), "--images", str(cohort.parent / "dicom"), "--rater", "A1",
                            "--stages", "locator", "--final-only", "--profile", "smoke", "-o", str(tmp_path / run),
                            "--splits", str(tmp_path / "splits.json"), "--folds", "3"], **kwargs)

    assert train("run") == 0 and len(scans) == 1
    assert (tmp_path / "run" / "final" / "bundle" / "manifest.json").is_file()
    given = scan_study(cohort.parent / "dicom", verify_pixels=False)  # as grade-demo hands its scan on
    scans.clear()
    assert train("run2", scan=given) == 0 and scans == []
    assert (tmp_path / "run2" / "final" / "bundle" / "manifest.json").is_file()


def test_a_table_away_from_its_label_maps_is_reported_in_one_line(cohort, tmp_path, capsys):
    """A label table copied out of its cohort folder names masks and label maps that do not resolve:
    grade-train still trains, and says in one line how many files it could not use and where it looked."""
    elsewhere = tmp_path / "elsewhere" / "labels.csv"
    elsewhere.parent.mkdir()
    elsewhere.write_text(cohort.read_text())
    code = grade_train(["--labels", str(elsewhere), "--images", str(cohort.parent / "dicom"), "--rater", "A1",
                        "--stages", "grade", "--final-only", "--folds", "3", "--profile", "smoke",
                        "-o", str(tmp_path / "run"), "--splits", str(tmp_path / "splits.json")])
    assert code == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "label-map files" in line]
    assert len(lines) == 1 and f"relative to {elsewhere.parent}" in lines[0] and "First: case " in lines[0]
    assert int(lines[0].split("grade-train: ")[1].split()[0]) > 0
