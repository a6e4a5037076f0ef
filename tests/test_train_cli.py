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
                        "--stages", "grade,segmenter", "--folds", "4", "--profile", "smoke", "-o", str(run)])
    assert code == 0
    oof = read_label_table(run / "oof_predictions.csv", required=TRAINING_COLUMNS)
    labels = read_label_table(cohort)
    a1 = labels[labels.rater == "A1"]
    assert set(oof.rater) == {"C1"} and sorted(oof.case_id) == sorted(a1.case_id)
    assert set(oof.fold.dropna().astype(int)) == {0, 1, 2, 3}
    # no level stage trained: levels are the rater's, and every rootlet slice is graded and measured
    assert (oof.level_source == "labels").all()
    assert list(oof.set_index("case_id").level.loc[a1.case_id]) == list(a1.level)
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
    base = ["--labels", str(cohort), "--images", str(cohort.parent / "dicom"), "--profile", "smoke", "-o", str(run)]
    assert grade_train(base + ["--rater", "A2", "--stages", "level", "--folds", "3", "--only-folds", "1",
                               "--no-final"]) == 0
    assert grade_train(base + ["--rater", "A2", "--merge", "--as", "CNN"]) == 0
    oof = read_label_table(run / "oof_predictions.csv")
    assert set(oof.rater) == {"CNN"} and set(oof.fold.astype(int)) == {1}
    assert grade_train(base + ["--rater", "Z9"]) == 2
    assert "rater 'Z9' not in" in capsys.readouterr().err
    assert grade_train(base + ["--rater", "A1", "--stages", "levels"]) == 2
