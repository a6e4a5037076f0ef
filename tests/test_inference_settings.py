"""Fast settings compute what the default settings compute (docs/PERFORMANCE.md states the tolerance)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from study_factory import phantom_series

from grading.benchmark import grading_differences, timed_run
from grading.cli.study import main as grade_study
from grading.dicom import load_series_pixels, scan_study
from grading.models_location import find_model_bundle
from grading.outputs import replace_folder
from grading.pipeline import grade_loaded, load_study
from grading.reports.study_report import build_report, write_study_outputs
from stages.bundle import load_bundle, save_bundle
from stages.detector import box_iou
from stages.inference import InferenceSettings, predict_slices, prepare_models
from stages.models import build_model
from stages.profiles import smoke

#: Untrained models box anywhere: keep the best box wherever it is, so every slice has one.
FAST = InferenceSettings(midline_band=None)
#: torchvision's way of running (one slice at a time, no channels-last, no inference mode) with the
#: fast detection limits, so that only the execution differs.
PLAIN = replace(InferenceSettings.torchvision_defaults(), rpn_pre_nms_top_n=FAST.rpn_pre_nms_top_n,
                rpn_post_nms_top_n=FAST.rpn_post_nms_top_n, detections_per_img=FAST.detections_per_img,
                midline_band=None)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    series, _ = phantom_series(tmp_path_factory.mktemp("study"), matrix=256, n_slices=10)
    return series


@pytest.fixture(scope="module")
def untrained():
    """Seeded, untrained smoke-profile models: every slice gets a box (scores ~0.9) and every stage runs."""
    torch.manual_seed(0)
    configs = smoke().configs
    return {stage: build_model(stage, configs) for stage in ("detector", "level", "grade", "segmenter")}, configs


def _predict(models, configs, loaded, settings):
    return predict_slices(prepare_models(models, settings), configs, loaded.images, loaded.spacings,
                          min_box_score=0.0, settings=settings)


def test_batching_channels_last_and_inference_mode_change_nothing(untrained, study):
    models, configs = untrained
    loaded = load_study(study)
    fast, plain = _predict(models, configs, loaded, FAST), _predict(models, configs, loaded, PLAIN)
    assert all(p.box is not None for p in fast)
    for a, b in zip(fast, plain):
        assert np.abs(np.subtract(a.box, b.box)).max() < 0.01  # slice pixels
        assert abs(a.box_score - b.box_score) < 1e-4
        assert a.level == b.level and a.grade == b.grade
        assert np.allclose(a.grade_probabilities, b.grade_probabilities, atol=1e-4)
        assert (a.sac_mask is None) == (b.sac_mask is None)
        if a.sac_mask is not None:
            assert (a.sac_mask != b.sac_mask).mean() < 1e-3 and abs(a.dsca_mm2 - b.dsca_mm2) < 0.5
            assert abs(a.dsca_mm2 - b.dsca_mm2) < 1.0


def test_prepare_models_leaves_the_loaded_models_alone(untrained):
    models, _ = untrained
    prepared = prepare_models(models, InferenceSettings.torchvision_defaults())
    assert prepared["detector"].rpn._post_nms_top_n["testing"] == 1000
    assert models["detector"].rpn._post_nms_top_n["testing"] != 1000
    assert prepared["detector"].roi_heads.detections_per_img == 100
    assert prepare_models(models, FAST)["detector"].roi_heads.detections_per_img == FAST.detections_per_img == 5


def test_parallel_decoding_and_report_writing_match_serial(untrained, study, tmp_path):
    series = scan_study(study).selected
    serial, parallel = load_series_pixels(series), load_series_pixels(series, workers=2)
    assert [h.sop_uid for h in serial.headers] == [h.sop_uid for h in parallel.headers]
    assert all(np.array_equal(a, b) for a, b in zip(serial.images, parallel.images))

    models, configs = untrained
    result = grade_loaded(load_study(study), prepare_models(models, FAST), configs, settings=FAST, min_box_score=0.0)
    report = build_report(result, Path("bundle"), {})
    for workers in (1, 2):
        replace_folder(tmp_path / f"w{workers}", lambda f, w=workers: write_study_outputs(result, report, f, workers=w))
    one, two = sorted((tmp_path / "w1" / "overlays").iterdir()), sorted((tmp_path / "w2" / "overlays").iterdir())
    boxed = sum(row["level"] != "no canal" for row in result.slices)  # the neighbour rule may drop a box
    assert [p.name for p in one] == [p.name for p in two] and len(one) == boxed >= len(result.slices) // 2
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(one, two))
    assert (tmp_path / "w1" / "slices.csv").read_bytes() == (tmp_path / "w2" / "slices.csv").read_bytes()


def test_grade_study_speed_options_grade_the_same_slices(untrained, study, tmp_path, boxes_anywhere):
    """Slice by slice: an untrained detector's boxes lie anywhere, so which of them continue one
    another (grading/canal_track.py, tested on its own) is a coin that bf16's rounding can flip."""
    models, configs = untrained
    bundle = save_bundle(tmp_path / "bundle", models, configs, provenance={"profile": "untrained"})
    threads = torch.get_num_threads()
    try:
        for name, extra in (("plain", []), ("bf16", ["--bf16", "--threads", "1"])):
            assert grade_study([str(study), "--models", str(bundle), "-o", str(tmp_path / name), "--slice-by-slice",
                                *extra]) == 0
    finally:
        torch.set_num_threads(threads)  # --threads sets it for the whole (test) process
    plain, bf16 = (pd.read_csv(tmp_path / name / "slices.csv") for name in ("plain", "bf16"))
    assert list(plain.sop_uid) == list(bf16.sop_uid)
    assert plain.box_x0.notna().sum() == bf16.box_x0.notna().sum()


@pytest.mark.slow
def test_fast_settings_match_torchvision_defaults_with_trained_models(tmp_path):
    """Needs a trained bundle (grade-demo's, or $GRADING_MODELS): untrained detectors have no
    'right' box for the proposal limits to keep."""
    bundle = find_model_bundle(None)
    if bundle is None:
        pytest.skip("no trained bundle: run grade-demo once")
    models, configs, _ = load_bundle(bundle, stages=None)
    truth_boxes, found_fast, found_default, moved, graded, grades_differ = {}, [], [], 0, 0, 0
    studies = []
    for index in range(100, 104):
        series, rows = phantom_series(tmp_path, index, 7)
        studies.append(series)
        truth_boxes.update({r["sop_uid"]: (r["box_x0"], r["box_y0"], r["box_x1"], r["box_y1"])
                            for r in rows if r["rater"] == "truth"})
    default_models = prepare_models(models, InferenceSettings.torchvision_defaults())
    fast_models = prepare_models(models, FAST)
    for study in studies:
        fast, _ = timed_run(study, fast_models, configs, FAST, bundle)
        default, _ = timed_run(study, default_models, configs, InferenceSettings.torchvision_defaults(), bundle)
        diff = grading_differences(default, fast)
        assert diff["canal_found_differs"] == 0
        for result, found in ((fast, found_fast), (default, found_default)):
            found += [r["box_x0"] is not None and box_iou((r["box_x0"], r["box_y0"], r["box_x1"], r["box_y1"]),
                                                          truth_boxes[r["sop_uid"]]) >= 0.5 for r in result.slices]
        moved += sum(box_iou((a["box_x0"], a["box_y0"], a["box_x1"], a["box_y1"]),
                             (b["box_x0"], b["box_y0"], b["box_x1"], b["box_y1"])) < 0.9
                     for a, b in zip(fast.slices, default.slices) if a["box_x0"] is not None)
        graded += sum(r["grade"] != "" for r in default.slices)
        grades_differ += diff["grade_differs"]
    assert moved <= 0.15 * len(found_fast)
    assert grades_differ <= 0.1 * graded
    assert np.mean(found_fast) >= np.mean(found_default) - 0.02  # as accurate against the truth


def test_many_studies_are_read_ahead_and_a_bad_one_is_reported(untrained, study, tmp_path, capsys):
    """The next study is decoded while the current one is graded; a bad study is one error line."""
    models, configs = untrained
    bundle = save_bundle(tmp_path / "bundle", models, configs, provenance={})
    second = tmp_path / "second"
    second.mkdir()
    for path in study.glob("*.dcm"):
        (second / path.name).write_bytes(path.read_bytes())
    missing, undecodable = tmp_path / "missing", tmp_path / "undecodable"
    undecodable.mkdir()
    for path in study.glob("*.dcm"):  # headers intact, pixel data cut short
        (undecodable / path.name).write_bytes(path.read_bytes()[:-200])
    assert grade_study([str(study), str(missing), str(undecodable), str(second), "--models", str(bundle),
                        "-o", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert f"{missing}: not a folder" in err and err.count("error:") == 2
    assert f"{undecodable}: no slice of the selected series could be decoded" in err
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted([study.name, "second"])
    assert (pd.read_csv(tmp_path / "out" / study.name / "slices.csv").sop_uid.tolist()
            == pd.read_csv(tmp_path / "out" / "second" / "slices.csv").sop_uid.tolist())
