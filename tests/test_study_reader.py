"""The study reader on a hostile mixed study: series grouping, selection, ordering, skipping."""
from __future__ import annotations

import json

import numpy as np
import pytest
from study_factory import (
    SAGITTAL,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    build_mixed_study,
    series_slices,
    write_compressed,
    write_plain,
)

from grading.cli.study import main as grade_study
from grading.dicom import ScanLimits, load_series_pixels, scan_study
from grading.dicom.geometry import classify_orientation, slice_normal
from grading.dicom.series import classify_weighting, dixon_image


@pytest.fixture(scope="module")
def mixed_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    return root, build_mixed_study(root)


def test_selects_axial_t2_and_orders_slices_by_position(mixed_study):
    root, expected = mixed_study
    scan = scan_study(root)
    assert scan.selected is not None and scan.selected.uid == expected["t2_uid"]
    assert [s.sop_uid for s in scan.selected.slices] == expected["t2_sop_order"]
    assert np.allclose(scan.selected.positions_mm(), expected["t2_positions"])
    instance_numbers = [s.instance_number for s in scan.selected.slices]
    assert instance_numbers != sorted(instance_numbers)  # shuffled: order came from geometry


def test_every_series_classified(mixed_study):
    root, expected = mixed_study
    by_uid = {s.uid: s for s in scan_study(root).series}
    assert (by_uid[expected["t1_uid"]].orientation, by_uid[expected["t1_uid"]].weighting) == ("axial", "T1")
    assert (by_uid[expected["sag_uid"]].orientation, by_uid[expected["sag_uid"]].weighting) == ("sagittal", "T2")
    assert len(by_uid) == 3


def test_every_junk_file_skipped_with_reason(mixed_study):
    root, expected = mixed_study
    scan = scan_study(root)
    reasons = {f.path: f.reason for f in scan.skipped}
    assert set(reasons) == expected["junk"]
    assert reasons[root / "empty.dcm"] == "empty file"
    assert "not a DICOM file" in reasons[root / "picture.dcm"]
    assert "not a DICOM file" in reasons[root / "notes.txt"]
    assert "Basic Text SR" in reasons[root / "sr.dcm"]
    assert "truncated" in reasons[root / "a" / "trunc.dcm"]


def test_no_preamble_implicit_and_rle_slices_decode(mixed_study):
    root, _ = mixed_study
    scan = scan_study(root)
    syntaxes = {s.transfer_syntax for s in scan.selected.slices}
    assert {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5"} <= syntaxes
    assert any(s.read_with_force for s in scan.selected.slices)
    pixels = load_series_pixels(scan.selected)
    assert pixels.skipped == [] and len(pixels.images) == 9
    assert all(img.shape == (32, 32) and img.dtype == np.float32 for img in pixels.images)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless, JPEGLSLossless], ids=lambda s: s.name)
def test_compressed_syntaxes_decode_losslessly(tmp_path, syntax):
    ds, _ = series_slices("comp", 1, seed=5)[0]
    original = ds.pixel_array.copy()
    write_compressed(ds, tmp_path / "x.dcm", syntax)
    scan = scan_study(tmp_path)
    assert np.array_equal(load_series_pixels(scan.selected).images[0], original)


def test_rescale_slope_and_intercept_applied(tmp_path):
    ds, _ = series_slices("resc", 1, seed=6)[0]
    ds.RescaleSlope, ds.RescaleIntercept = "0.5", "-10"
    raw = ds.pixel_array.astype(np.float32)
    write_plain(ds, tmp_path / "x.dcm")
    image = load_series_pixels(scan_study(tmp_path).selected).images[0]
    assert np.allclose(image, raw * 0.5 - 10)


def test_absurd_dimensions_refused_before_decoding(tmp_path):
    ds, _ = series_slices("huge", 1)[0]
    ds.Rows = ds.Columns = 60000  # the header lies: 7 GB of pixels claimed
    write_plain(ds, tmp_path / "huge.dcm")
    scan = scan_study(tmp_path, limits=ScanLimits())
    assert scan.series == [] and "absurd image size" in scan.skipped[0].reason


def test_series_override_and_no_gradable_series(mixed_study, tmp_path):
    root, expected = mixed_study
    assert scan_study(root, series_uid=expected["t1_uid"]).selected.uid == expected["t1_uid"]
    for ds, _ in series_slices("only_t1", 3, description="t1_tse_tra", te=12, tr=600):
        write_plain(ds, tmp_path / f"{ds.InstanceNumber}.dcm")
    assert scan_study(tmp_path).selected is None


def test_duplicate_copies_of_one_instance_kept_once(tmp_path):
    slices = series_slices("dup", 3)
    for i, (ds, _) in enumerate(slices):
        write_plain(ds, tmp_path / "one" / f"{i}.dcm")
        write_plain(ds, tmp_path / "two" / f"{i}.dcm")
    scan = scan_study(tmp_path)
    assert len(scan.selected.slices) == 3
    assert sum("duplicate" in f.reason for f in scan.skipped) == 3


@pytest.mark.parametrize(
    "orientation, expected",
    [
        ((1, 0, 0, 0, 1, 0), "axial"),
        ((1, 0, 0, 0, np.cos(0.45), -np.sin(0.45)), "axial"),  # 26 degree disc-angled stack
        ((0, 1, 0, 0, 0, -1), "sagittal"),
        ((1, 0, 0, 0, 0, -1), "coronal"),
        ((1, 0, 0, 0, np.cos(np.pi / 4), -np.sin(np.pi / 4)), "oblique"),
    ],
)
def test_orientation_classes(orientation, expected):
    assert classify_orientation(slice_normal(np.array(orientation, float))) == expected


@pytest.mark.parametrize(
    "description, te, tr, expected",
    [
        ("AX T2 TSE", None, None, "T2"),
        ("t1_tse_tra", 100, 4000, "T1"),  # the description wins over the timing
        ("ax frFSE", 110, 3500, "T2"),
        ("ax SE", 12, 550, "T1"),
        ("localizer", 3, 8, "unknown"),
        ("T1 vs T2 comparison", 50, 1200, "unknown"),
    ],
)
def test_weighting(description, te, tr, expected):
    assert classify_weighting(description, te, tr) == expected


def test_dry_run_json_matches_spec(mixed_study, capsys):
    root, expected = mixed_study
    assert grade_study([str(root), "--dry-run", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"series", "skipped"}
    series_keys = {"series_uid", "description", "orientation", "weighting", "n_slices",
                   "pixel_spacing_mm", "selected", "role", "slices"}
    assert all(set(s) == series_keys for s in out["series"])
    selected = [s for s in out["series"] if s["selected"]]
    assert [s["series_uid"] for s in selected] == [expected["t2_uid"]] and selected[0]["role"] == "graded"
    roles = {s["series_uid"]: s["role"] for s in out["series"]}
    assert roles[expected["sag_uid"]] == "localizer" and roles[expected["t1_uid"]] is None
    slices = selected[0]["slices"]
    assert all(set(s) == {"sop_uid", "instance_number", "position_mm"} for s in slices)
    positions = [s["position_mm"] for s in slices]
    assert positions == sorted(positions, reverse=True)
    assert {s["path"] for s in out["skipped"]} == {str(p) for p in expected["junk"]}
    assert all(s["reason"] for s in out["skipped"])


def test_sagittal_localizer_must_share_the_frame_of_reference(tmp_path, capsys):
    """A sagittal series from another frame of reference (another session) never names levels;
    --sagittal chooses one explicitly."""
    t2 = series_slices("ax_t2", 3, seed=1)
    own = series_slices("sag_own", 4, orientation=SAGITTAL, description="SAG T2", seed=2)
    other = series_slices("sag_other", 9, orientation=SAGITTAL, description="SAG T2", seed=3)
    for ds, _ in other:
        ds.FrameOfReferenceUID = "1.2.3.999"
    for name, series in (("t2", t2), ("own", own), ("other", other)):
        for k, (ds, _) in enumerate(series):
            write_plain(ds, tmp_path / name / f"{k}.dcm")
    assert grade_study([str(tmp_path), "--dry-run", "--json"]) == 0
    roles = {s["description"] + str(s["n_slices"]): s["role"] for s in json.loads(capsys.readouterr().out)["series"]}
    assert roles == {"AX T2 TSE3": "graded", "SAG T24": "localizer", "SAG T29": None}
    other_uid = other[0][0].SeriesInstanceUID
    assert grade_study([str(tmp_path), "--dry-run", "--json", "--sagittal", other_uid]) == 0
    chosen = [s for s in json.loads(capsys.readouterr().out)["series"] if s["role"] == "localizer"]
    assert [s["series_uid"] for s in chosen] == [other_uid]


def test_dry_run_exit_3_without_gradable_series(tmp_path, capsys):
    (tmp_path / "junk.txt").write_text("nothing here")
    assert grade_study([str(tmp_path), "--dry-run", "--json"]) == 3


def test_missing_bundle_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("GRADING_MODELS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert grade_study([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "grade-demo" in err


def test_box_threshold_outside_0_1_is_one_line_exit_2(tmp_path, capsys):
    assert grade_study([str(tmp_path), "--box-threshold", "50"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--box-threshold 50" in err


def test_truncated_slice_is_skipped_at_decoding_when_not_verified(mixed_study):
    root, expected = mixed_study
    scan = scan_study(root, verify_pixels=False)
    assert all("truncated" not in f.reason for f in scan.skipped)  # not read twice here ...
    pixels = load_series_pixels(scan.selected)
    assert [f.path for f in pixels.skipped] == [root / "a" / "trunc.dcm"]  # ... caught when decoded
    assert len(pixels.images) == 9


@pytest.mark.parametrize("tagged_by", ["description", "image type"])
def test_the_water_image_of_a_dixon_acquisition_is_graded_not_the_fat_image(tmp_path, tagged_by):
    """Dixon outputs share weighting, slice count and geometry: without a rule the UID picked one,
    the fat image (CSF dark) as often as not. Both UID orders are tried."""
    for k, names in enumerate((("dixon_a", "dixon_b"), ("dixon_b", "dixon_a"))):
        root = tmp_path / str(k)
        for name, kind in zip(names, ("WATER", "FAT")):
            description = f"AX T2 DIXON {kind[0]}" if tagged_by == "description" else "AX T2 TSE"
            for ds, _ in series_slices(name, 3, description=description):
                if tagged_by == "image type":
                    ds.ImageType = ["DERIVED", "PRIMARY", "DIXON", kind]
                write_plain(ds, root / name / f"{ds.InstanceNumber}.dcm")
        scan = scan_study(root)
        water = next(s for s in scan.series if s.dixon_image == "water")
        assert {s.dixon_image for s in scan.series} == {"water", "fat"}
        assert scan.selected.uid == water.uid


def test_a_dixon_fat_image_is_graded_only_when_nothing_else_can_be(tmp_path):
    """Even a T2 fat image loses to an axial series of unknown weighting, and alone it is graded."""
    for ds, _ in series_slices("fat", 4, description="AX T2 DIXON F"):
        write_plain(ds, tmp_path / "fat" / f"{ds.InstanceNumber}.dcm")
    assert scan_study(tmp_path).selected.dixon_image == "fat"
    for ds, _ in series_slices("other", 3, description="AX GRE", te=5, tr=20):
        write_plain(ds, tmp_path / "other" / f"{ds.InstanceNumber}.dcm")
    scan = scan_study(tmp_path)
    assert scan.selected.description == "AX GRE" and scan.selected.weighting == "unknown"


@pytest.mark.parametrize("description, image_type, expected", [
    ("AX T2 DIXON W", (), "water"),
    ("t2_tse_dixon_tra_F", (), "fat"),
    ("ax t2 mDIXON IP", (), "in phase"),
    ("T2 DIXON opp_phase", (), "opposed phase"),
    ("AX T2 FS", (), ""),  # fat-suppressed, not a fat image
    ("T2 fat sat", (), ""),
    ("AX T2 TSE", ("ORIGINAL", "PRIMARY", "M", "ND"), ""),
    ("mDixon", ("DERIVED", "PRIMARY", "F", "F"), "fat"),
])
def test_dixon_outputs_are_told_apart(description, image_type, expected):
    assert dixon_image(image_type, description) == expected
