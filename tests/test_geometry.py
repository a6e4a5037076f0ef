"""One patient frame: slice order, stacks, the display frame, symbolic links, one sac mask.

Each test reproduces a way real archives broke the product (issue 12) and fails on the code
before the geometry layer.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from study_factory import phantom_series, untrained_bundle

from grading.cli.study import main as grade_study
from grading.dicom import scan_study
from grading.dicom.geometry import display_transform, slice_centre
from grading.dicom.writer import MRSliceSpec, mr_dataset, stable_uid, write_dataset
from grading.levels import assign_levels
from grading.pipeline import _diameters
from stages.inference import predict_slices
from stages.orientation import DisplayTransform
from stages.profiles import quick

ALL_EIGHT = [DisplayTransform(t, r, c) for t in (False, True) for r in (False, True) for c in (False, True)]


def _spec(name: str, i: int, position, orientation, spacing=(0.7, 0.7)) -> MRSliceSpec:
    return MRSliceSpec(patient_id="GEO", patient_name="GEO^TEST", study_uid=stable_uid("geo", name),
                       series_uid=stable_uid("geo", name, "series"), sop_uid=stable_uid("geo", name, i),
                       frame_of_reference_uid=stable_uid("geo", "for"), series_number=1, instance_number=i + 1,
                       image_position=tuple(position), image_orientation=tuple(orientation), pixel_spacing=spacing)


def _write_stack(folder: Path, name: str, centres, normals, fov: float = 200.0, size: int = 64, flip_x: bool = False):
    """Slices centred on ``centres`` with the given normals (rows to the patient's left, or to the
    right with ``flip_x``, which turns the normal to the feet)."""
    spacing = fov / size
    for i, (centre, normal) in enumerate(zip(centres, normals)):
        normal = np.asarray(normal, float) / np.linalg.norm(normal)
        row = np.array([1.0, 0, 0]) - normal[0] * normal
        row /= np.linalg.norm(row)
        col = np.cross(normal, row)
        if flip_x:
            row = -row
        origin = np.asarray(centre) - (size - 1) / 2 * spacing * row - (size - 1) / 2 * spacing * col
        spec = _spec(name, i, origin, (*row, *col), (spacing, spacing))
        write_dataset(mr_dataset(np.full((size, size), 100, np.uint16), spec), folder / f"{i:03d}.dcm")


def _tilted(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([0.0, np.sin(a), np.cos(a)])


def test_slice_order_does_not_depend_on_the_orientation_sign(tmp_path):
    """IOP (-1,0,0, 0,1,0) has a normal pointing to the feet: still head first, L5/S1 at the bottom."""
    centres = [(0, 0, z) for z in (40, 36, 32, 0, -4, -8, -40, -44, -48)]
    normals = [_tilted(0)] * 3 + [_tilted(12)] * 3 + [_tilted(25)] * 3
    _write_stack(tmp_path, "flipped", centres, normals, flip_x=True)
    series = scan_study(tmp_path).selected
    positions = series.positions_mm()
    assert np.all(np.diff(positions) < 0)  # head to foot
    assert [round(s.centre[2]) for s in series.slices] == [40, 36, 32, 0, -4, -8, -40, -44, -48]
    names = assign_levels(series.slices, positions).names
    assert names == ["L3/L4"] * 3 + ["L4/L5"] * 3 + ["L5/S1"] * 3


def test_angled_stacks_are_grouped_and_named_by_slice_centres(tmp_path):
    """Stacks tilted 0/10/30 degrees, 200 mm field of view: three stacks, nine names right."""
    centres, normals = [], []
    for k, (tilt, z) in enumerate(((0, 60), (10, 25), (30, -10))):
        n = _tilted(tilt)
        for j in (-1, 0, 1):
            centres.append(np.array([0.0, 0.0, z]) + 4.0 * j * n)
            normals.append(n)
    _write_stack(tmp_path, "angled", centres, normals)
    series = scan_study(tmp_path).selected
    names = assign_levels(series.slices, series.positions_mm()).names
    by_height = sorted(zip((s.centre[2] for s in series.slices), names), reverse=True)
    assert [n for _, n in by_height] == ["L3/L4"] * 3 + ["L4/L5"] * 3 + ["L5/S1"] * 3


def test_a_missing_slice_is_a_gap_not_a_new_stack(tmp_path):
    centres = [(0, 0, 60 - 4 * k) for k in range(12) if k != 5]  # slice 5 could not be decoded
    _write_stack(tmp_path, "gap", centres, [_tilted(0)] * len(centres))
    series = scan_study(tmp_path).selected
    assignment = assign_levels(series.slices, series.positions_mm())
    assert "contiguous" in assignment.method
    assert all(name.startswith("window") for name in assignment.names)


def test_display_transform_undoes_every_flip_and_transpose():
    rng = np.random.default_rng(0)
    canonical = rng.random((6, 9))
    box = (2.0, 1.0, 5.5, 4.0)
    for t in ALL_EIGHT:
        stored = t.invert(canonical)
        assert np.array_equal(t.apply(stored), canonical)
        stored_box = t.box_to_stored(box, stored.shape)
        assert t.box_to_display(stored_box, stored.shape) == pytest.approx(box)
        # The box covers the same pixels in both frames.
        mask = np.zeros_like(canonical, bool)
        mask[1:4, 2:5] = True
        rows, cols = np.nonzero(t.invert(mask))
        x0, y0, x1, y1 = t.box_to_stored((2, 1, 5, 4), stored.shape)
        assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (x0, y0, x1, y1)


def _variant_geometry(ds: pydicom.Dataset, t: DisplayTransform) -> tuple[np.ndarray, tuple, tuple, tuple]:
    """Pixels and geometry of the same slice stored so that ``t`` is how it reaches the display
    frame: every stored pixel keeps its place in the patient."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    spacing = [float(v) for v in ds.PixelSpacing]
    row_dir = np.array([float(v) for v in ds.ImageOrientationPatient[:3]])
    col_dir = np.array([float(v) for v in ds.ImageOrientationPatient[3:]])
    origin = np.array([float(v) for v in ds.ImagePositionPatient])
    index = t.invert(np.arange(rows * cols).reshape(rows, cols))

    def place(flat):
        r, c = divmod(int(flat), cols)
        return origin + c * spacing[1] * row_dir + r * spacing[0] * col_dir

    p00, p01, p10 = place(index[0, 0]), place(index[0, 1]), place(index[1, 0])
    new_row, new_col = p01 - p00, p10 - p00
    new_spacing = (float(np.linalg.norm(new_col)), float(np.linalg.norm(new_row)))
    orientation = (*new_row / np.linalg.norm(new_row), *new_col / np.linalg.norm(new_col))
    return t.invert(ds.pixel_array), tuple(p00), orientation, new_spacing


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return untrained_bundle(tmp_path_factory.mktemp("bundle") / "bundle")


def test_all_eight_flips_and_transposes_grade_alike(tmp_path, bundle, boxes_anywhere):
    """The same study stored eight ways: identical grades, and boxes that land on the same
    anatomy once mapped through each file's own geometry (within 0.5 px)."""
    series, _ = phantom_series(tmp_path / "phantom", matrix=128, n_slices=4)
    sources = [pydicom.dcmread(p) for p in sorted(series.glob("*.dcm"))]
    results = {}
    for k, t in enumerate(ALL_EIGHT):
        folder = tmp_path / f"variant{k}"
        for ds in sources:
            pixels, position, orientation, spacing = _variant_geometry(ds, t)
            copy = pydicom.dcmread(series / Path(ds.filename).name)
            copy.Rows, copy.Columns = pixels.shape
            copy.ImagePositionPatient = [f"{v:.4f}" for v in position]
            copy.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
            copy.PixelSpacing = [f"{v:.6f}" for v in spacing]
            copy.PixelData = np.ascontiguousarray(pixels, "<u2").tobytes()
            folder.mkdir(exist_ok=True)
            copy.save_as(folder / Path(ds.filename).name)
        assert display_transform(orientation) == t
        assert grade_study([str(folder), "--models", str(bundle), "-o", str(tmp_path / f"out{k}")]) == 0
        results[k] = (pd.read_csv(tmp_path / f"out{k}" / "slices.csv", keep_default_na=False).set_index("sop_uid"), t)
    reference, _ = results[0]
    boxed = reference.box_x0 != ""  # an untrained detector may leave a slice without a box: the same one every way
    assert boxed.sum() >= 2
    shape = (sources[0].Rows, sources[0].Columns)
    for k, (slices, t) in results.items():
        assert list(slices.grade) == list(reference.grade) and list(slices.level) == list(reference.level)
        assert list(slices.box_x0 != "") == list(boxed)
        for sop, row in slices[boxed.to_numpy()].iterrows():
            stored_shape = t.display_shape(shape)
            box = t.box_to_display(tuple(float(row[c]) for c in ("box_x0", "box_y0", "box_x1", "box_y1")), stored_shape)
            expected = tuple(float(reference.loc[sop, c]) for c in ("box_x0", "box_y0", "box_x1", "box_y1"))
            assert np.abs(np.subtract(box, expected)).max() <= 0.5
        assert np.allclose(slices.dsca_mm2[boxed.to_numpy()].astype(float), reference.dsca_mm2[boxed].astype(float),
                           atol=0.01)


def test_symbolic_link_farms_are_read_and_bad_links_reported(tmp_path):
    series, _ = phantom_series(tmp_path / "store", matrix=64, n_slices=4)
    farm = tmp_path / "farm"
    (farm / "sub").mkdir(parents=True)
    for k, path in enumerate(sorted(series.glob("*.dcm"))):
        (farm / ("sub" if k % 2 else "") / f"link{k}.dcm").symlink_to(path)
    (farm / "dangling.dcm").symlink_to(tmp_path / "nowhere.dcm")
    os.mkfifo(tmp_path / "pipe")
    (farm / "pipe.dcm").symlink_to(tmp_path / "pipe")
    (farm / "null.dcm").symlink_to("/dev/null")
    (farm / "sub" / "cycle").symlink_to(farm)
    scan = scan_study(farm)
    assert scan.selected is not None and len(scan.selected.slices) == 4
    reasons = {p.name: r for p, r in ((s.path, s.reason) for s in scan.skipped)}
    assert "broken" in reasons["dangling.dcm"]
    assert "pipe" in reasons["pipe.dcm"] and "device" in reasons["null.dcm"]
    assert "cycle" in reasons["cycle"]


def test_dry_run_of_a_link_farm_lists_its_series(tmp_path, capsys):
    series, _ = phantom_series(tmp_path / "store", matrix=64, n_slices=3)
    farm = tmp_path / "farm"
    farm.mkdir()
    for path in sorted(series.glob("*.dcm")):
        (farm / path.name).symlink_to(path)
    assert grade_study([str(farm), "--dry-run", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert len(listing["series"]) == 1 and listing["series"][0]["n_slices"] == 3


class _Threshold(torch.nn.Module):
    """A perfect segmenter for an image that is its own mask."""

    def forward(self, x):
        return (x - 0.5) * 60


class _Constant(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits, dtype=torch.float32)
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.logits.expand(len(x), -1)


def test_dsca_and_diameters_come_from_one_mask_on_anisotropic_pixels():
    """0.5 mm rows x 0.8 mm columns: a perfect segmenter gives the true area within 2% and the
    true diameters within one pixel."""
    spacing = (0.5, 0.8)
    rows, cols = 160, 120
    y, x = np.mgrid[:rows, :cols]
    half_ap, half_ml = 6.0, 9.0  # mm
    cy, cx = 80.3, 60.6
    sac = (((y + 0.5 - cy) * spacing[0] / half_ap) ** 2 + ((x + 0.5 - cx) * spacing[1] / half_ml) ** 2) <= 1
    image = sac.astype(np.float32)
    box = (cx - 14, cy - 16, cx + 14, cy + 16)
    models = {"level": _Constant([-5.0]), "grade": _Constant([5.0, 0, 0, 0]), "segmenter": _Threshold()}
    prediction = predict_slices(models, quick().configs, [image], [spacing], boxes=[box])[0]
    true_area = np.pi * half_ap * half_ml
    assert prediction.dsca_mm2 == pytest.approx(true_area, rel=0.02)
    assert prediction.dsca_mm2 == pytest.approx(prediction.sac_mask.sum() * spacing[0] * spacing[1])
    ap, ml = _diameters(prediction.sac_mask, spacing)
    assert abs(ap - 2 * half_ap) <= spacing[0] + 1e-6 and abs(ml - 2 * half_ml) <= spacing[1] + 1e-6


def test_slice_centre_is_the_middle_pixel():
    centre = slice_centre((10.0, 20.0, 30.0), (1, 0, 0, 0, 1, 0), (0.5, 2.0), (11, 21))
    assert np.allclose(centre, (10.0 + 10 * 2.0, 20.0 + 5 * 0.5, 30.0))
