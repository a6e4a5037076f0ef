import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # test helpers (study_factory) import as plain modules


@pytest.fixture
def boxes_anywhere(monkeypatch):
    """grade-study keeps every detection, as if each lay on the canal: untrained models box
    anywhere, and tests that need a box on every slice are not testing the canal's plausibility
    (tests/test_stages.py does)."""
    monkeypatch.setattr("stages.detector._plausible", lambda boxes, *args: np.ones(len(boxes), bool))
