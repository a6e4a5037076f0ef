"""scripts/check_real.py: skips cleanly without the real data; writes real geometry when it has it."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_real.py"


def _load():
    spec = importlib.util.spec_from_file_location("check_real", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_real"] = module
    spec.loader.exec_module(module)
    return module


def test_skips_without_real_data(tmp_path, capsys):
    check_real = _load()
    assert check_real.main(["--models", str(tmp_path / "none"), "--realdata", str(tmp_path / "absent"),
                            "-o", str(tmp_path / "out")]) == 0
    assert "skipped" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_nifti_geometry_becomes_dicom_geometry(tmp_path):
    """An LPS-stored NIfTI volume (as the TUM and CHAOS sets are) becomes an axial series in the
    display orientation, positions along +z, spacing from the affine."""
    nib = pytest.importorskip("nibabel")
    from grading.dicom import scan_study

    check_real = _load()
    affine = np.diag([-0.8, -0.9, 4.0, 1.0])  # i to the patient's left, j posterior (RAS signs)
    affine[:3, 3] = (100.0, 80.0, -20.0)
    data = np.random.default_rng(0).uniform(0, 100, (20, 24, 5)).astype(np.float32)
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(path))
    check_real.write_nifti_series(path, tmp_path / "dicom", "vol", "AX DIXON W")
    scan = scan_study(tmp_path / "dicom")
    series = scan.selected
    assert series is not None and series.orientation == "axial" and len(series.slices) == 5
    first = series.slices[-1]  # series order is head first; the lowest slice is k = 0
    assert np.allclose(first.image_orientation, (1, 0, 0, 0, 1, 0))
    assert np.allclose(first.pixel_spacing, (0.9, 0.8))
    assert np.allclose(first.image_position, (-100.0, -80.0, -20.0))
    assert (first.rows, first.columns) == (24, 20)
