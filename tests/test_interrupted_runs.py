"""Killed runs lose nothing: real SIGKILLs sent to grade-study and grade-train processes."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from study_factory import phantom_config

from grading.cli.study import main as grade_study
from grading.phantom.cohort import generate_cohort
from stages.bundle import save_bundle
from stages.models import build_model
from stages.profiles import smoke


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    generate_cohort(root, phantom_config(3, 5), progress=False)
    return root


def _command(module: str, args: list[str]) -> tuple[list[str], dict]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return [sys.executable, "-m", module, *args], env


def _start(module: str, args: list[str]) -> subprocess.Popen:
    command, env = _command(module, args)
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _run(module: str, args: list[str]) -> None:
    """A whole run in a fresh process, like the killed one (same threads, same kernels)."""
    command, env = _command(module, args)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def _kill_when(process: subprocess.Popen, ready, timeout: float = 120.0) -> None:
    """SIGKILL ``process`` as soon as ``ready()`` holds; fail if it ends first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            pytest.fail(f"the run ended (exit {process.returncode}) before it could be killed: "
                        f"{process.stderr.read().decode()[-500:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the run never reached the point to kill it at")
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    assert process.wait(30) == -signal.SIGKILL


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_killed_grade_study_leaves_the_previous_outputs_whole(cohort, tmp_path):
    torch.manual_seed(0)
    configs = smoke().configs  # untrained: every slice gets a box, so every output is written
    models = {stage: build_model(stage, configs) for stage in ("detector", "level", "grade", "segmenter")}
    bundle = save_bundle(tmp_path / "bundle", models, configs, provenance={})
    study, out = cohort / "dicom" / "PH0001", tmp_path / "out"
    args = [str(study), "--models", str(bundle), "-o", str(out), "--threads", "1"]
    assert grade_study(args) == 0
    before = _snapshot(out)
    assert len([name for name in before if name.startswith("overlays/")]) > 5

    def writing() -> bool:  # the new outputs are half-built beside the old ones
        return any(any(d.glob("overlays/*.png")) for d in tmp_path.glob(".out.*.tmp"))

    _kill_when(_start("grading.cli.study", args), writing)
    assert _snapshot(out) == before  # nothing lost, nothing half-written in the outputs
    assert grade_study(args) == 0  # the next run cleans up and replaces them
    assert not list(tmp_path.glob(".out.*"))
    assert set(_snapshot(out)) == set(before)


def _metric_rows(path: Path) -> list[dict]:
    """metrics.csv without the wall-clock columns."""
    with path.open() as f:
        return [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in csv.DictReader(f)]


def test_killed_grade_train_resumes_to_the_uninterrupted_result(cohort, tmp_path):
    def args(out: Path) -> list[str]:
        return ["--labels", str(cohort / "labels.csv"), "--images", str(cohort / "dicom"), "--rater", "A1",
                "--stages", "level,grade", "--folds", "3", "--final-only", "--profile", "smoke", "--epochs", "40", "-o", str(out)]

    whole, cut = tmp_path / "whole", tmp_path / "cut"
    _run("grading.cli.train", args(whole))

    def some_epochs_done() -> bool:
        metrics = cut / "final" / "level" / "metrics.csv"
        return metrics.is_file() and len(metrics.read_text().splitlines()) > 3

    _kill_when(_start("grading.cli.train", args(cut)), some_epochs_done)
    assert not (cut / "final" / "bundle" / "manifest.json").exists()
    saved = torch.load(cut / "final" / "level" / "checkpoint.pt", weights_only=True)
    done = len((cut / "final" / "level" / "metrics.csv").read_text().splitlines()) - 1
    assert saved["epoch"] + 1 == done  # checkpoint and metrics agree: only the epoch in progress is lost

    _run("grading.cli.train", [*args(cut), "--resume"])
    for stage in ("level", "grade"):
        assert _metric_rows(cut / "final" / stage / "metrics.csv") == _metric_rows(whole / "final" / stage / "metrics.csv")
        resumed, uninterrupted = (load_file(run / "final" / "bundle" / f"{stage}.safetensors") for run in (cut, whole))
        assert resumed.keys() == uninterrupted.keys()
        assert all(torch.allclose(resumed[k], uninterrupted[k], atol=1e-6) for k in resumed)
