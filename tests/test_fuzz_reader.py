"""Hostile files end as skipped files with a one-line reason: no exception, no hang, bounded memory.

A short hypothesis run; scripts/fuzz_reader.py runs thousands of cases.
"""
from __future__ import annotations

import resource
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from dicom_mutations import MUTATIONS, deflate_bomb, encode, read_mutated, valid_slice
from hypothesis import given, settings
from hypothesis import strategies as st

from grading.dicom import ScanLimits, scan_study

VALID = encode(valid_slice())


@settings(max_examples=120, deadline=timedelta(seconds=20), derandomize=True)
@given(kind=st.sampled_from(sorted(MUTATIONS)), seed=st.integers(0, 2**32 - 1))
def test_mutated_slices_are_graded_or_skipped_with_a_reason(kind, seed):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "slice.dcm"
        path.write_bytes(MUTATIONS[kind](VALID, np.random.default_rng(seed)))
        outcome = read_mutated(path)  # raises on a reader bug
    assert outcome and "\n" not in outcome


def test_the_unmutated_slice_is_graded(tmp_path):
    (tmp_path / "slice.dcm").write_bytes(VALID)
    assert read_mutated(tmp_path / "slice.dcm") == "graded"


@pytest.mark.parametrize("kind, seed", [("flip_bits", 1000069), ("wrong_vr", 1003018)])
def test_corrupt_transfer_syntax_vr_found_by_the_long_run(kind, seed, tmp_path):
    """Escaped the reader before: an unknown VR in the meta header's (0002,0010)."""
    (tmp_path / "slice.dcm").write_bytes(MUTATIONS[kind](VALID, np.random.default_rng(seed)))
    assert read_mutated(tmp_path / "slice.dcm").startswith("malformed DICOM element")


def test_deflate_bomb_is_refused_before_it_inflates(tmp_path):
    bomb = deflate_bomb(VALID, np.random.default_rng(0))
    (tmp_path / "bomb.dcm").write_bytes(bomb)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scan = scan_study(tmp_path, limits=ScanLimits(max_inflated_bytes=8 * 1024 * 1024))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert len(bomb) < 4 * 1024 * 1024
    assert "deflate bomb" in scan.skipped[0].reason
    assert grown_mb < 60  # the bomb inflates to >= 80 MiB
