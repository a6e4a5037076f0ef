"""Benchmark and probe scripts: the coarse-acquisition condition blurs by millimetres, not pixels;
the grade probe skips without real data."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from stages.records import SliceRecord

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _script("bench_stages")


def _fwhm_mm(profile: np.ndarray, spacing: float) -> float:
    """Full width at half maximum of a peaked profile, interpolated between samples."""
    half = profile.max() / 2
    above = np.nonzero(profile >= half)[0]
    left, right = above[0], above[-1]
    left_edge = left - (profile[left] - half) / (profile[left] - profile[left - 1])
    right_edge = right + (profile[right] - half) / (profile[right] - profile[right + 1])
    return float((right_edge - left_edge) * spacing)


@pytest.mark.parametrize("spacing", [(0.4, 0.4), (1.0, 1.0), (0.5, 1.2)])
def test_a_point_spreads_to_the_acquired_width_whatever_the_pixel(bench, spacing):
    image = np.zeros((121, 121), np.float32)
    image[60, 60] = 1.0
    record = SliceRecord("c", "p", image, spacing, None, "rootlet", "A")
    (blurred,) = bench.coarser([record], acquired_mm=2.0)
    assert blurred.image.sum() == pytest.approx(1.0, rel=1e-3)  # intensity is spread, not lost
    assert _fwhm_mm(blurred.image[:, 60], spacing[0]) == pytest.approx(2.0, abs=0.15)
    assert _fwhm_mm(blurred.image[60, :], spacing[1]) == pytest.approx(2.0, abs=0.15)
    assert record.image.max() == 1.0  # the original record is untouched


def test_grade_confusion_counts_each_call_under_its_true_grade(bench):
    """Every grade appears as a row and a column, even one never called; a healthy sac called D is
    counted under A, not D."""
    out = bench.grade_confusion(["A", "A", "A", "B", "D"], ["A", "D", "D", "B", "C"])
    assert out["A"] == {"A": 1, "B": 0, "C": 0, "D": 2}
    assert out["D"] == {"A": 0, "B": 0, "C": 1, "D": 0}
    assert out["C"] == {"A": 0, "B": 0, "C": 0, "D": 0}
    assert sum(sum(row.values()) for row in out.values()) == 5


def test_the_grade_probe_skips_without_real_data(tmp_path, capsys):
    probe = _script("probe_grade_rootlets")
    out = tmp_path / "probe.png"
    assert probe.main(["--models", str(tmp_path / "no_bundle"), "--cohort", str(tmp_path), "--realdata",
                       str(tmp_path / "absent"), "-o", str(out)]) == 0
    assert "skipped" in capsys.readouterr().out and not out.exists()


def test_random_contrast_slices_follow_their_label_maps_in_the_display_frame(tmp_path):
    """bench_canal_track --contrast random: each slice is drawn from its own label map, turned to
    the frame the detector sees (here transposed), so the true boxes still fit."""
    from PIL import Image

    from stages.orientation import DisplayTransform

    track = _script("bench_canal_track")
    labels = np.zeros((40, 60), np.uint8)
    labels[5:15, 30:50] = 7  # one structure, away from the diagonal
    Image.fromarray(labels).save(tmp_path / "map.png")

    class Header:
        display = DisplayTransform(transpose=True)

    import torch
    (image,) = track._randomised(tmp_path, ["map.png"], [Header()], torch.Generator().manual_seed(0))
    assert image.shape == (60, 40)
    inside, outside = image[30:50, 5:15], image[labels.T == 0]
    assert abs(float(np.median(inside)) - float(np.median(outside))) > 0.05  # the structure has its own intensity
    assert np.median(inside) != np.median(image[5:15, 30:50])  # not where the stored frame had it


def test_the_memory_format_benchmark_times_both_layouts_of_each_stage(capsys):
    _script("bench_memory_format").main(["--profile", "smoke", "--stages", "grade,locator", "--repeats", "1",
                                         "--steps", "1"])
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| grade")
            or line.startswith("| locator")]
    assert [r[1].strip() for r in rows] == ["grade", "locator"]
    for r in rows:
        nchw, channels_last, ratio = float(r[3]), float(r[4]), float(r[5].strip().rstrip("x"))
        assert nchw > 0 and channels_last > 0 and ratio == pytest.approx(nchw / channels_last, rel=0.1)


@pytest.mark.parametrize("pixel_mm", [0.5, 0.6875, 1.2])
def test_the_disc_close_up_shows_the_same_millimetres_whatever_the_pixel(pixel_mm):
    """80 x 80 mm around the given point at 0.5 mm per pixel: a 10-mm bright square at the point
    comes out 20 px wide and in the middle, for any acquired pixel size."""
    montage = _script("montage_disc_zoom")
    n = int(round(200 / pixel_mm))
    image = np.zeros((n, n), np.float32)
    centre, half = (n * 0.4, n * 0.55), int(round(5 / pixel_mm))
    image[int(centre[1]) - half:int(centre[1]) + half, int(centre[0]) - half:int(centre[0]) + half] = 1.0
    shown = montage.close_up(image, pixel_mm, centre)
    side = 2 * montage.HALF_MM / montage.SHOWN_MM
    assert abs(shown.shape[0] - side) <= 2 and abs(shown.shape[1] - side) <= 2
    rows, cols = np.nonzero(shown > 0.5)
    assert abs(cols.max() - cols.min() + 1 - 20) <= 2 and abs(rows.max() - rows.min() + 1 - 20) <= 2
    assert abs(cols.mean() - side / 2) <= 2 and abs(rows.mean() - side / 2) <= 2


def test_box_shares_tell_a_wrong_box_from_a_missing_one(bench):
    """A kept box that misses the canal is counted apart from no box at all: it would be graded."""
    truth = [(10, 10, 30, 30)] * 4
    predicted = [(11, 11, 31, 31), (60, 60, 80, 80), None, (10, 10, 30, 30)]
    shares = bench.box_shares(truth, predicted)
    assert shares["box_iou50"] == pytest.approx(0.5)
    assert shares["box_wrong"] == pytest.approx(0.25) and shares["box_missed"] == pytest.approx(0.25)
    assert shares["box_iou50"] + shares["box_wrong"] + shares["box_missed"] == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["pelvis", "canal", "sacrum"])
def test_the_level_montages_draw_the_phantom_alone_without_real_data(tmp_path, kind):
    montage = _script("montage_synthetic_real")
    out = tmp_path / f"{kind}.png"
    getattr(montage, f"{kind}_montage")(tmp_path / "absent", seed=5, output=out)
    from PIL import Image

    image = np.asarray(Image.open(out).convert("L"))
    top, bottom = image[: image.shape[0] // 2], image[image.shape[0] // 2:]
    assert top.std() > 20 and bottom.std() < top.std() / 4  # phantom panels drawn, the real row left blank


@pytest.mark.parametrize("name, truth, kind", [
    ("L4", "L4", ""), ("L4/L5", "L4", "boundary"), ("L4/L5", "L5", "boundary"), ("L5", "L5/S1", "boundary"),
    ("S1", "L5/S1", "boundary"), ("L4", "L3", "shift"), ("L3/L4", "L4/L5", "shift"), ("L2/L3", "L4", "shift"),
    ("outside the sagittal view", "L6/S1", "unnamed"), ("S1", "L4", "shift"), ("T12/L1", "L1", "boundary")])
def test_a_wrong_level_name_is_told_a_boundary_slice_from_a_level_off(name, truth, kind):
    assert _script("bench_levels").wrong_name_kind(name, truth) == kind


def test_real_calls_line_up_by_slice_and_grey_out_what_was_not_graded(tmp_path):
    """Two runs' slice tables become one row each over the same slices, in instance order; a
    slice with no grade (no canal, cord) or no row in a run is not graded, and the picture is drawn."""
    import pandas as pd

    compare = _script("compare_real_calls")
    first = pd.DataFrame({"study": ["S"] * 3, "instance_number": [3, 1, 2], "grade": ["D", "A", ""]})
    second = pd.DataFrame({"study": ["S"] * 2, "instance_number": [1, 3], "grade": ["B", "C"]})
    codes, keys = compare.grade_matrix([first, second])
    assert keys == [("S", 1), ("S", 2), ("S", 3)]
    assert codes.tolist() == [[0, -1, 3], [1, -1, 2]]
    for name, table in (("one", first), ("two", second)):
        (tmp_path / name).mkdir()
        table.to_csv(tmp_path / name / "SET_slices.csv", index=False)
    out = tmp_path / "calls.png"
    assert compare.main([str(tmp_path / "one"), str(tmp_path / "two"), "--sets", "SET", "-o", str(out)]) == 0
    assert out.stat().st_size > 1000


def test_bench_levels_names_slices_as_grade_study_does_without_grading(tmp_path, monkeypatch):
    """``--locator-only`` gives every axial slice the name grade-study gives it. A locator that
    returns the phantom's own column maps names the lumbar slices of a five-vertebra spine, wrong
    only at a disc-body boundary, where a slice's slab holds both."""
    import json

    import pandas as pd
    from PIL import Image
    from study_factory import untrained_bundle

    import grading.pipeline
    from grading.phantom.cohort import CohortConfig, generate_cohort
    from grading.sagittal_levels import locate
    from stages.vocabulary import COLUMN_CLASSES

    generate_cohort(tmp_path / "cohort", CohortConfig(patients=1, seed=3, workers=1), progress=False)
    assert json.loads((tmp_path / "cohort" / "cohort.json").read_text())["patients"][0]["lumbar_vertebrae"] == 5
    columns = pd.read_csv(tmp_path / "cohort" / "column.csv").set_index("sop_uid")["classes"]

    def truth_locator(model, configs, headers, images, device="cpu"):
        maps = [np.asarray(Image.open(tmp_path / "cohort" / columns[h.sop_uid])) for h in headers]
        return locate(headers, [np.stack([h.display.apply((m == k).astype(np.float32)) for k in
                                          range(len(COLUMN_CLASSES))]) for h, m in zip(headers, maps)])

    monkeypatch.setattr(grading.pipeline, "localize", truth_locator)
    bench = _script("bench_levels")
    models = untrained_bundle(tmp_path / "models", with_locator=True)
    graded = bench.level_rows(tmp_path, models)
    located = bench.level_rows(tmp_path, models, locator_only=True)
    assert set(graded.series) == {"angled", "contiguous"} and (graded.source == "sagittal").all()
    same = ["sop_uid", "series", "name", "truth", "source", "flagged", "counted"]
    pd.testing.assert_frame_equal(graded.sort_values("sop_uid")[same].reset_index(drop=True),
                                  located.sort_values("sop_uid")[same].reset_index(drop=True))
    lumbar = located[located.truth.str.match(r"^L\d")]
    wrong = lumbar[lumbar.name != lumbar.truth]
    assert len(lumbar) > 20 and len(wrong) <= len(lumbar) // 5
    assert all(bench.wrong_name_kind(n, t) == "boundary" for n, t in zip(wrong.name, wrong.truth))  # never a level off


def test_the_sagittal_check_sums_up_what_was_named():
    summary = _script("check_real_sagittal").naming_summary([
        {"names": "T12/L1 L1 L1/L2 L2 L2/L3 L3 L3/L4 L4 L4/L5 L5 L5/S1 S1", "lumbar_count": None},
        {"names": "L3 L3/L4 L4 L4/L5 L5 L5/S1 S1", "lumbar_count": 5},
        {"names": "L4 L4/L5 L5 L5/L6 L6 S1", "lumbar_count": 6},
        {"names": "", "lumbar_count": None}])
    assert summary == ("4 studies: all five lumbar discs named on 1, L5/S1 on 2, nothing named on 1; lumbar "
                       "vertebrae counted (not assumed) on 2, other than five on 1")
