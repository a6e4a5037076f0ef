"""grade-train under torchrun: two CPU processes (gloo) train one model, and rank 0 alone writes it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from study_factory import phantom_config

from grading.phantom.cohort import generate_cohort
from stages.bundle import load_bundle


def test_torchrun_with_two_cpu_processes_trains_and_writes_once(tmp_path):
    cohort = tmp_path / "cohort"
    generate_cohort(cohort, phantom_config(3, 2), progress=False)
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "grading.cli.train", "--labels", str(cohort / "labels.csv"), "--images", str(cohort / "dicom"),
         "--rater", "A1", "--stages", "level", "--folds", "3", "--final-only", "--profile", "smoke",
         "--epochs", "2", "-o", str(run)],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("final model bundle") == 1  # rank 0 reports; rank 1 stays quiet
    manifest = json.loads((run / "final" / "bundle" / "manifest.json").read_text())
    assert manifest["stages"]["level"]["metrics"]["workers"] == 2
    assert manifest["stages"]["level"]["metrics"]["epochs"] == 2
    assert "level" in load_bundle(run / "final" / "bundle", stages=["level"])[0]
    assert not list(run.rglob("*.tmp"))
