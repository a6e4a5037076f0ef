"""grade-demo's own bookkeeping (the demo itself is measured by hand: it trains for minutes)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import grading.cli.demo as demo
from grading.cli.demo import _forget_other_folds
from stages.folds import plan_folds
from stages.profiles import PROFILES


def test_a_cached_fold_plan_for_other_folds_is_replanned_not_an_error(tmp_path):
    patients = [f"P{k}" for k in range(20)]
    splits = tmp_path / "splits_final.json"
    plan_folds(patients, ["A"] * 20, 10).save(splits)
    _forget_other_folds(splits, 10)
    assert splits.is_file()  # the same folds: kept, so every rater's run shares it
    _forget_other_folds(splits, 5)
    assert not splits.is_file()  # grade-train plans 5 folds afresh instead of refusing the 10-fold plan
    splits.write_text("not json")
    _forget_other_folds(splits, 5)
    assert splits.read_text() == "not json"  # left for grade-train to name


def test_the_cohort_is_scanned_once_for_every_training_run(tmp_path, monkeypatch):
    """grade-demo's three grade-train runs share one header scan; a finished run is reused
    without reading a header."""
    scans, handed = [], []
    monkeypatch.setattr(demo, "scan_study", lambda *a, **k: scans.append(a) or object())
    monkeypatch.setattr(demo, "grade_train", lambda argv, scan: handed.append(scan) or 0)
    cohort = demo.CohortScan(tmp_path / "dicom")
    for run in ("shared", "classifier_A1", "classifier_A2"):
        demo.ensure_training(tmp_path / run, ["--rater", run], cohort)
    assert len(scans) == 1 and len(handed) == 3 and len({id(s) for s in handed}) == 1
    assert all((tmp_path / run / "demo-stamp.json").is_file() for run in ("shared", "classifier_A1"))
    again = demo.CohortScan(tmp_path / "dicom")
    demo.ensure_training(tmp_path / "shared", ["--rater", "shared"], again)
    assert len(scans) == 1 and len(handed) == 3


def test_a_run_trained_under_another_profile_is_trained_again(tmp_path, monkeypatch):
    """The reuse stamp holds the profile's fingerprint: the same arguments with changed epochs
    (say, after an upgrade) retrain instead of reusing the old models."""
    handed = []
    monkeypatch.setattr(demo, "scan_study", lambda *a, **k: object())
    monkeypatch.setattr(demo, "grade_train", lambda argv, scan: handed.append(argv) or 0)
    cohort = demo.CohortScan(tmp_path / "dicom")
    before = demo.profile_fingerprint("demo", 0)
    demo.ensure_training(tmp_path / "run", ["--rater", "A1"], cohort, before)
    demo.ensure_training(tmp_path / "run", ["--rater", "A1"], cohort, before)
    assert len(handed) == 1
    original = PROFILES["demo"]
    shorter = lambda seed=0: replace(original(seed), final_epochs={"grade": 1})  # noqa: E731
    monkeypatch.setitem(PROFILES, "demo", shorter)
    after = demo.profile_fingerprint("demo", 0)
    assert after != before and after == demo.profile_fingerprint("demo", 0)
    demo.ensure_training(tmp_path / "run", ["--rater", "A1"], cohort, after)
    assert len(handed) == 2


def test_each_bundle_model_is_trained_once_and_the_classifiers_learn_from_the_contiguous_series():
    """Every stage of the bundle comes from the run BUNDLE_SOURCES names, which trains a model on
    all patients for it, and only one run does; the detector's run reads every axial slice, the
    classifiers', like the paper's, the contiguous series."""
    labels, contiguous = Path("cohort/labels.csv"), Path("cohort/labels_contiguous.csv")
    plan = {run.folder: run.argv for run in demo.training_plan(labels, contiguous)}

    def option(argv, name):
        return argv[argv.index(name) + 1]

    def stages(argv):
        return option(argv, "--stages").split(",")

    for stage, folder in demo.BUNDLE_SOURCES.items():
        argv = plan[folder]
        assert stage in stages(argv) and "--no-final" not in argv and option(argv, "--rater") == "A1"
    with_final = [s for argv in plan.values() if "--no-final" not in argv for s in stages(argv)]
    assert sorted(with_final) == sorted(demo.BUNDLE_SOURCES)
    assert option(plan[demo.BUNDLE_SOURCES["detector"]], "--labels") == str(labels)
    for rater in ("A1", "A2"):
        argv = plan[f"classifier_{rater}"]
        assert option(argv, "--labels") == str(contiguous) and option(argv, "--rater") == rater
        assert stages(argv) == ["level", "grade"] and "--final-only" not in argv
