"""grade-study's outputs: tables, report, overlays, DICOM SEG and SR, levels, atomic writes, CLI."""
from __future__ import annotations

import json

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from study_factory import AXIAL, phantom_config, series_slices, write_plain

from grading.cli.study import main as grade_study
from grading.cli.train import main as grade_train
from grading.dicom import load_series_pixels, scan_study
from grading.levels import assign_levels, split_stacks, summarise_levels
from grading.outputs import replace_folder, safe_name
from grading.phantom.cohort import generate_cohort
from grading.pipeline import StudyGrading, _slice_row
from grading.reports.study_report import (
    SLICE_COLUMNS,
    build_report,
    write_study_outputs,
)
from stages.inference import SlicePrediction


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    generate_cohort(root, phantom_config(3, 4), progress=False)
    return root


@pytest.fixture(scope="module")
def angled_cohort(tmp_path_factory):
    from dataclasses import replace

    root = tmp_path_factory.mktemp("angled")
    generate_cohort(root, replace(phantom_config(1, 5), series=("ax_t2_angled",)), progress=False)
    return root


def truth_result(root, pid="PH0001") -> StudyGrading:
    """A grading result whose 'predictions' are the phantom's truth: outputs are then known."""
    scan = scan_study(root / "dicom" / pid)
    pixels = load_series_pixels(scan.selected)
    truth = pd.read_csv(root / "labels.csv", keep_default_na=False)
    truth = truth[(truth.rater == "truth") & (truth.study_id == pid)].set_index("sop_uid")
    predictions, masks = [], []
    for h in pixels.headers:
        row = truth.loc[h.sop_uid]
        level = row.level if row.level != "other" else "rootlet"
        grade = row.grade or ("A" if level == "rootlet" else "")
        mask = np.asarray(Image.open(root / row["mask"])) > 0
        predictions.append(SlicePrediction(
            box=(row.box_x0, row.box_y0, row.box_x1, row.box_y1), box_score=0.99, level=level, level_probability=0.9,
            grade=grade, grade_probabilities=[0.9 if g == grade else 0.1 / 3 for g in "ABCD"] if grade else [],
            dsca_mm2=float(mask.sum() * h.pixel_spacing[0] * h.pixel_spacing[1]), sac_mask=mask))
        masks.append(mask)
    positions = scan.selected.positions_mm()
    assignment = assign_levels(pixels.headers, positions)
    rows = [_slice_row(h, p, pred, n) for h, p, pred, n in zip(pixels.headers, positions, predictions, assignment.names)]
    return StudyGrading(root / "dicom" / pid, scan, scan.selected, pixels.headers, pixels.images, predictions, masks,
                        rows, summarise_levels(rows, assignment.names), assignment.method, [])


def test_tables_report_overlays(cohort, tmp_path):
    result = truth_result(cohort)
    report = build_report(result, tmp_path / "bundle", {"rater": "A1"})
    written = write_study_outputs(result, report, tmp_path)
    slices = pd.read_csv(written["slices.csv"])
    assert tuple(slices.columns) == SLICE_COLUMNS and len(slices) == len(result.headers)
    assert slices.position_mm.is_monotonic_decreasing
    rootlet = slices[slices.level == "rootlet"]
    assert (rootlet.ap_diameter_mm > 4).all() and (rootlet.ml_diameter_mm > rootlet.ap_diameter_mm * 0.8).all()
    levels = pd.read_csv(written["levels.csv"])
    worst = slices.dropna(subset=["grade"]).grade.max()
    assert levels.worst_grade.dropna().max() == worst
    smallest = levels.min_dsca_mm2.min()
    assert smallest == pytest.approx(rootlet.dsca_mm2.min())
    saved = json.loads(written["report.json"].read_text())
    assert {"study", "series", "level_assignment", "levels", "slices", "skipped", "models"} <= set(saved)
    overlays = sorted((tmp_path / "overlays").glob("*.png"))
    assert len(overlays) == len(slices) and Image.open(overlays[0]).size[0] == 650
    html_text = written["report.html"].read_text()
    assert all(p.name in html_text for p in overlays)


def test_stacks_angled_to_each_disc_get_a_seg_instance_each(angled_cohort, tmp_path):
    """A SEG instance holds one orientation: a series angled to five discs gets five, in one SEG
    series, which together reference every segmented slice once."""
    result = truth_result(angled_cohort)
    written = write_study_outputs(result, build_report(result, tmp_path, {}), tmp_path)
    orientations = {tuple(np.round(h.image_orientation, 4)) for h in result.headers}
    segs = [hd.seg.segread(written[f"dural_sac_seg_{k}.dcm"]) for k in range(1, len(orientations) + 1)]
    assert len(orientations) >= 4 and not (tmp_path / "dural_sac_seg.dcm").exists()
    assert len({seg.SeriesInstanceUID for seg in segs}) == 1 and [seg.InstanceNumber for seg in segs] == \
        list(range(1, len(segs) + 1))
    referenced = [r.ReferencedSOPInstanceUID for seg in segs
                  for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence]
    segmented = [h.sop_uid for h, m in zip(result.headers, result.sac_masks) if m.any()]
    assert sorted(referenced) == sorted(segmented)
    assert json.loads((tmp_path / "report.json").read_text())["output_failures"] == []


def test_seg_and_sr_read_back_with_references_codes_and_units(cohort, tmp_path):
    result = truth_result(cohort)
    written = write_study_outputs(result, build_report(result, tmp_path, {}), tmp_path)
    source_uids = [h.sop_uid for h in result.headers]
    seg = hd.seg.segread(written["dural_sac_seg.dcm"])
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    segment = seg.SegmentSequence[0]
    assert segment.SegmentLabel == "dural sac"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "DURALSAC"
    referenced = [r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence]
    assert sorted(referenced) == sorted(source_uids)
    assert seg.NumberOfFrames == len(source_uids)
    sr = hd.sr.srread(written["measurements_sr.dcm"])
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    groups = sr.content.get_planar_roi_measurement_groups()
    assert len(groups) == len(source_uids)
    slices = pd.read_csv(written["slices.csv"]).set_index("sop_uid")
    # The SEG's own pixels, measured with each source's PixelSpacing, and the phantom's truth.
    spacing = {h.sop_uid: h.pixel_spacing for h in result.headers}
    seg_area = {}
    for frame, item in zip(seg.pixel_array.reshape(-1, seg.Rows, seg.Columns), seg.PerFrameFunctionalGroupsSequence):
        sop = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        seg_area[sop] = float(frame.sum() * spacing[sop][0] * spacing[sop][1])
    truth = pd.read_csv(cohort / "labels.csv", keep_default_na=False)
    truth = truth[truth.rater == "truth"].set_index("sop_uid").dsca_mm2.astype(float)
    for group in groups:
        sop = group.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID  # the region's image
        area = group.get_measurements()[0]
        assert (area.name.value, area.unit.value, area.unit.scheme_designator) == ("42798000", "mm2", "UCUM")
        assert area.value == pytest.approx(seg_area[sop], abs=0.01)  # SR and SEG: one mask
        assert area.value == pytest.approx(truth.loc[sop], abs=0.02)
        evaluations = {q.name.value: q.value.value for q in group.get_qualitative_evaluations()}
        if slices.loc[sop, "level"] == "rootlet":
            assert evaluations["SCHIZAS"] == f"SCHIZAS-{slices.loc[sop, 'grade']}"
    evidence = [r.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence
                for series in s.ReferencedSeriesSequence for r in series.ReferencedSOPSequence]
    assert sorted(evidence) == sorted(source_uids)


def test_levels_from_angled_stacks_and_single_stacks(tmp_path):
    tilt = lambda a: (1.0, 0.0, 0.0, 0.0, float(np.cos(a)), float(-np.sin(a)))  # noqa: E731
    for k, angle in enumerate((0.25, 0.1, -0.15)):  # three disc stacks, head first
        for ds, _ in series_slices(f"stack{k}", 3, orientation=tilt(angle), step_mm=4.0):
            ds.ImagePositionPatient = [0.0, 0.0, 100.0 - 45 * k - 4 * (ds.InstanceNumber - 1)]
            ds.InstanceNumber = 3 * k + ds.InstanceNumber
            ds.SeriesInstanceUID = "1.2.3"
            write_plain(ds, tmp_path / "angled" / f"{ds.InstanceNumber}.dcm")
    scan = scan_study(tmp_path / "angled")
    positions = scan.selected.positions_mm()
    assert [len(s) for s in split_stacks(scan.selected.slices, positions)] == [3, 3, 3]
    names = assign_levels(scan.selected.slices, positions).names
    assert names == ["L3/L4"] * 3 + ["L4/L5"] * 3 + ["L5/S1"] * 3
    for ds, _ in series_slices("contiguous", 20, orientation=AXIAL):
        write_plain(ds, tmp_path / "single" / f"{ds.InstanceNumber}.dcm")
    single = scan_study(tmp_path / "single").selected
    assignment = assign_levels(single.slices, single.positions_mm())
    assert assignment.names[-1] == "window 1" and assignment.names[0] == "window 3"
    assert "not" in assignment.method or "need" in assignment.method


def test_replace_folder_keeps_old_outputs_when_writing_fails(tmp_path):
    target = tmp_path / "out"
    replace_folder(target, lambda f: (f / "slices.csv").write_text("old"))

    def broken(folder):
        (folder / "slices.csv").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        replace_folder(target, broken)
    assert (target / "slices.csv").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left behind
    replace_folder(target, lambda f: (f / "slices.csv").write_text("new"))
    assert (target / "slices.csv").read_text() == "new"


def test_safe_names():
    assert safe_name("../../etc") == "etc"
    assert safe_name("Patient^Name 1.2.840/x") == "Patient_Name_1.2.840_x"
    assert safe_name("....") == "study"


def test_grade_study_end_to_end_with_a_smoke_bundle(cohort, tmp_path, capsys):
    run = tmp_path / "run"
    assert grade_train(["--labels", str(cohort / "labels.csv"), "--images", str(cohort / "dicom"), "--rater", "truth",
                        "--folds", "3", "--only-folds", "0", "--profile", "smoke", "-o", str(run)]) == 0
    printed = capsys.readouterr().out
    # grade-train says when a detector is unsure of its own right boxes, and what to do about it.
    summary = json.loads((run / "cv_summary.json").read_text())
    for name, info in (("fold 0", summary["folds"]["0"]), ("final", summary["final"])):
        median = info["stages"]["detector"].get("val_right_box_median_score")
        assert (f"warning: the {name} detector" in printed) == (median is not None and median < 0.5)
    out = tmp_path / "graded"
    assert grade_study([str(cohort / "dicom" / "PH0002"), "--models", str(run / "final" / "bundle"),
                        "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["series"]["n_slices"] == len(pd.read_csv(out / "slices.csv"))
    assert (out / "report.html").is_file() and (out / "levels.csv").is_file()
    assert report["canal_boxes"].endswith("a box needs a score of 0.50 on its own")
    assert grade_study([str(cohort / "dicom" / "PH0002"), "--models", str(run / "final" / "bundle"),
                        "-o", str(tmp_path / "strict"), "--json", "--box-threshold", "1"]) == 0
    strict = json.loads(capsys.readouterr().out)
    assert strict["canal_boxes"].endswith("a box needs a score of 1.00 on its own")
    assert all(row["level"] == "no canal" for row in strict["slices"])  # no detector scores above 1
    (tmp_path / "empty").mkdir()
    assert grade_study([str(tmp_path / "empty"), "--models", str(run / "final" / "bundle"), "-o", str(tmp_path / "x")]) == 3
    manifest = json.loads((run / "final" / "bundle" / "manifest.json").read_text())
    del manifest["stages"]["segmenter"]
    (run / "final" / "bundle" / "manifest.json").write_text(json.dumps(manifest))
    assert grade_study([str(cohort / "dicom" / "PH0002"), "--models", str(run / "final" / "bundle")]) == 2
    assert "lacks the segmenter" in capsys.readouterr().err


STRIPPED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "StudyDate", "StudyTime",
            "ReferringPhysicianName", "AccessionNumber", "StudyID", "StudyDescription", "SeriesDate", "SeriesTime",
            "ContentDate", "ContentTime", "BodyPartExamined", "Manufacturer")


@pytest.fixture(scope="module")
def stripped_study(tmp_path_factory):
    """Source images without any Type 2 or Type 3 patient and study attribute (an anonymised export)."""
    from study_factory import phantom_series

    root = tmp_path_factory.mktemp("stripped")
    series, _ = phantom_series(root / "phantom", matrix=64, n_slices=3)
    study = root / "study"
    study.mkdir()
    for path in sorted(series.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        for keyword in STRIPPED:
            if keyword in ds:
                delattr(ds, keyword)
        ds.save_as(study / path.name)
    return study


def test_outputs_built_from_sources_without_type2_attributes(stripped_study, tmp_path):
    from study_factory import untrained_bundle

    bundle = untrained_bundle(tmp_path / "bundle")
    assert grade_study([str(stripped_study), "--models", str(bundle), "-o", str(tmp_path / "out")]) == 0
    for name in ("dural_sac_seg.dcm", "measurements_sr.dcm"):
        ds = pydicom.dcmread(tmp_path / "out" / name)
        assert ds.PatientID == "" and ds.PatientBirthDate == "" and ds.StudyDate == ""
    assert json.loads((tmp_path / "out" / "report.json").read_text())["output_failures"] == []


def test_one_output_that_cannot_be_built_costs_no_other(stripped_study, tmp_path, monkeypatch, capsys):
    from study_factory import untrained_bundle

    from grading.reports import dicom_objects

    def broken(result, sources):
        raise ValueError("no segmentation for you\nsecond line")

    monkeypatch.setattr(dicom_objects, "build_segmentation", broken)
    bundle = untrained_bundle(tmp_path / "bundle")
    assert grade_study([str(stripped_study), "--models", str(bundle), "-o", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    assert not (out / "dural_sac_seg.dcm").exists() and (out / "measurements_sr.dcm").is_file()
    assert (out / "slices.csv").is_file() and (out / "report.html").is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["output_failures"] == [{"output": "dural_sac_seg.dcm", "reason": "ValueError: no segmentation for you"}]
    assert "dural_sac_seg.dcm not written (ValueError: no segmentation for you)" in capsys.readouterr().err
    assert "Outputs not written" in (out / "report.html").read_text()


def test_a_grade_the_sac_area_contradicts_is_flagged_not_changed():
    from grading.levels import summarise_levels
    from grading.pipeline import grade_area_check

    assert grade_area_check("C", 140.0).startswith("grade C but the sac area is not stenotic")
    assert grade_area_check("D", 99.0) == ""  # relative stenosis by area: the two agree
    assert grade_area_check("A", 60.0).startswith("grade A but the sac area is absolutely stenotic")
    assert grade_area_check("A", 150.0) == grade_area_check("", 40.0) == grade_area_check("C", None) == ""
    rows = [{"instance_number": 1, "level": "rootlet", "grade": "C", "grade_probability": 0.4, "dsca_mm2": 150.0,
             "grade_area_check": grade_area_check("C", 150.0)},
            {"instance_number": 2, "level": "rootlet", "grade": "A", "grade_probability": 0.9, "dsca_mm2": 160.0,
             "grade_area_check": ""}]
    level, = summarise_levels(rows, ["L4/L5", "L4/L5"])
    assert level["worst_grade"] == "C" and level["worst_grade_instance"] == 1
    assert level["worst_grade_check"].startswith("grade C but")
