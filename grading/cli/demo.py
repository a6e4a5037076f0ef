"""grade-demo: the whole workflow on a phantom cohort, cached in the user cache folder.

1. a phantom cohort (raters truth, A1, A2) and one held-out phantom study;
2. a detector, a segmenter and a sagittal locator trained once on A1's labels of every axial slice
   (shared, to save time);
3. Classifier1 on A1's labels and Classifier2 on A2's, each with 5-fold cross-validation (``--folds 10``
   for the paper's) on the contiguous series (``training_plan``);
4. grade-study on the held-out study with the detector, segmenter, locator and Classifier1;
5. the agreement study on the out-of-fold predictions: A1-A2, A1-C1, A2-C2, as in the paper.

Reruns reuse every step whose inputs have not changed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from grading.cli.agreement import main as grade_agreement
from grading.cli.common import CommandError, run_command
from grading.cli.study import main as grade_study
from grading.cli.train import main as grade_train
from grading.dicom import StudyScan, scan_study
from grading.labels import write_label_table
from grading.models_location import demo_bundle_dir, user_cache_dir
from grading.phantom.cohort import CohortConfig, generate_cohort, generate_patient
from grading.phantom.montage import make_montage
from stages.atomic import write_json_atomic
from stages.bundle import combine_bundles
from stages.folds import FoldPlan, SplitsError
from stages.profiles import PROFILES

HELD_OUT_SEED = 1_000_003


def _stamp_matches(folder: Path, wanted: dict) -> bool:
    stamp = folder / "demo-stamp.json"
    return stamp.is_file() and json.loads(stamp.read_text()) == wanted


#: Bumped whenever the phantom changes, so a cached cohort from an older generator is remade.
PHANTOM_VERSION = 5


def ensure_cohort(folder: Path, config: CohortConfig) -> tuple[Path, Path]:
    """The cohort's label tables (every axial slice; the contiguous series only), generating the
    cohort unless an identical one is already there."""
    wanted = {"patients": config.patients, "seed": config.seed, "phantom": PHANTOM_VERSION}
    contiguous = folder / "labels_contiguous.csv"
    if not _stamp_matches(folder, wanted):
        generate_cohort(folder, config)
        make_montage(folder, folder / "montage.png")
        table = pd.read_csv(folder / "labels.csv", keep_default_na=False, dtype=str)
        write_label_table(table[table.case_id.str.contains("-ax_t2-", regex=False)], contiguous)
        write_json_atomic(folder / "demo-stamp.json", wanted)
    return folder / "labels.csv", contiguous


def ensure_held_out(folder: Path) -> Path:
    """One phantom study no model has seen, with its truth, for grade-study."""
    wanted = {"seed": HELD_OUT_SEED, "phantom": PHANTOM_VERSION}
    if not _stamp_matches(folder, wanted):
        rows, _ = generate_patient(folder, 1, HELD_OUT_SEED)
        pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
        write_json_atomic(folder / "demo-stamp.json", wanted)
    return folder / "dicom" / "PH0001"


def _forget_other_folds(splits: Path, folds: int) -> None:
    """The demo owns its cohort: a fold plan made for another --folds is dropped (and remade).
    An unreadable one is left for grade-train to name."""
    try:
        if splits.is_file() and FoldPlan.load(splits).n_folds != folds:
            splits.unlink()
    except SplitsError:
        pass


class CohortScan:
    """The cohort's DICOM header scan, read the first time a training run needs it and shared by
    the three (each would otherwise read the same ~2,000 headers again)."""

    def __init__(self, images: Path):
        self.images, self._scan = images, None

    def get(self) -> StudyScan:
        if self._scan is None:
            self._scan = scan_study(self.images, progress=True, verify_pixels=False)
        return self._scan


def profile_fingerprint(name: str, seed: int) -> str:
    """A digest of everything the training profile sets (models, epochs, schedules, renders), so
    a run trained under an older profile with the same arguments is trained again, not reused."""
    return hashlib.sha256(repr(PROFILES[name](seed)).encode()).hexdigest()[:16]


def ensure_training(run: Path, argv: list[str], scan: CohortScan, profile: str = "") -> None:
    """Run grade-train unless this run folder already finished with the same arguments and profile
    (``profile``: its fingerprint)."""
    wanted = {"argv": argv, "profile": profile}
    if _stamp_matches(run, wanted):
        print(f"grade-demo: reusing {run}")
        return
    if run.exists():
        shutil.rmtree(run)
    code = grade_train(argv + ["-o", str(run)], scan=scan.get())
    if code != 0:
        raise CommandError(f"grade-train failed for {run} (exit {code})")
    write_json_atomic(run / "demo-stamp.json", wanted)


@dataclass(frozen=True)
class TrainingRun:
    folder: str  # under --dir
    argv: list[str]  # grade-train's, less the images, profile, seed, folds and output


#: Which run trains each of the bundle's models.
BUNDLE_SOURCES = {"detector": "shared", "segmenter": "shared", "locator": "shared",
                  "level": "classifier_A1", "grade": "classifier_A1"}


def training_plan(labels: Path, contiguous: Path) -> list[TrainingRun]:
    """grade-demo's grade-train runs. The detector, segmenter and locator learn from A1's labels of
    every axial slice (contiguous and disc-angled stacks). The classifiers, like the paper's, learn
    from the contiguous series; Classifier1's model on all patients is the bundle's, Classifier2's
    is not needed (the agreement study reads out-of-fold predictions). A grade model trained on
    every axial slice was measured and not adopted (docs/STAGES_BENCHMARK.md, "Stop 34")."""
    def run(table: Path, rater: str, stages: str, *final: str) -> list[str]:
        return ["--labels", str(table), "--rater", rater, "--stages", stages, *final]

    return [TrainingRun("shared", run(labels, "A1", "detector,segmenter,locator", "--final-only")),
            TrainingRun("classifier_A1", run(contiguous, "A1", "level,grade")),
            TrainingRun("classifier_A2", run(contiguous, "A2", "level,grade", "--no-final"))]


def compare_with_truth(slices_csv: Path, truth_csv: Path) -> dict:
    """The held-out study's grading against its phantom truth."""
    slices = pd.read_csv(slices_csv, keep_default_na=False)
    truth = pd.read_csv(truth_csv, keep_default_na=False)
    truth = truth[truth.rater == "truth"].set_index("sop_uid")
    both = slices.join(truth[["level", "grade", "dsca_mm2", "spinal_level"]], on="sop_uid", rsuffix="_truth")
    usable = both[both.level_truth.isin(["rootlet", "cord"])]
    named = both[both.spinal_level != ""]
    graded = usable[(usable.level_truth == "rootlet") & (usable.level == "rootlet")]
    areas = graded[graded.dsca_mm2 != ""]
    return {
        "slices": len(slices),
        "level_accuracy": float((usable.level == usable.level_truth).mean()) if len(usable) else None,
        "grade_accuracy": float((graded.grade == graded.grade_truth).mean()) if len(graded) else None,
        "dsca_mae_mm2": float(np.mean(np.abs(areas.dsca_mm2.astype(float) - areas.dsca_mm2_truth.astype(float))))
        if len(areas) else None,
        "level_name_accuracy": float((named.level_name == named.spinal_level).mean()) if len(named) else None,
    }


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _agreement_line(record: dict) -> str:
    """Accuracy and F1 (the paper's figures), the patient-bootstrap interval, what was not scored."""
    ci = (record.get("bootstrap_ci95") or {}).get("accuracy") or [None, None]
    parts = [f"accuracy {_fmt(record['accuracy'] * 100, 1)}% (95% CI {_fmt(ci[0] and ci[0] * 100, 1)}-"
             f"{_fmt(ci[1] and ci[1] * 100, 1)}, patients resampled)",
             f"F1 {_fmt(record['f1_macro'] and record['f1_macro'] * 100, 1)}%", f"n {record['n']}"]
    excluded = [f"{side} {reason} {n}" for side, reasons in record.get("excluded", {}).items()
                for reason, n in reasons.items()]
    if excluded:
        parts.append("not scored: " + ", ".join(excluded))
    if record.get("misses"):
        parts.append(f"missed {record['misses']} (counting them: {_fmt(record['accuracy_counting_misses'] * 100, 1)}%)")
    return "; ".join(parts)


def _main(argv: list[str] | None) -> int:
    p = argparse.ArgumentParser(prog="grade-demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", type=Path, default=user_cache_dir() / "demo", help="working folder (default: user cache)")
    p.add_argument("--patients", type=int, default=32)
    p.add_argument("--folds", type=int, default=5,
                   help="cross-validation folds (default 5 to fit 15 minutes on two cores; the paper's study: 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", default="demo", help="training profile (demo: quick with fewer epochs)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    timings = {}
    labels, contiguous = ensure_cohort(args.dir / "cohort", CohortConfig(patients=args.patients, seed=args.seed))
    images = labels.parent / "dicom"
    _forget_other_folds(labels.parent / "splits_final.json", args.folds)
    held_out = ensure_held_out(args.dir / "held_out")
    timings["phantoms"] = time.perf_counter() - start
    common = ["--images", str(images), "--profile", args.profile, "--seed", str(args.seed), "--folds", str(args.folds)]
    # The locator learns from the mid-sagittal slices (column.csv beside the labels).
    scan = CohortScan(images)
    profile = profile_fingerprint(args.profile, args.seed) if args.profile in PROFILES else ""
    for run in training_plan(labels, contiguous):
        t = time.perf_counter()
        ensure_training(args.dir / run.folder, common + run.argv, scan, profile)
        timings[run.folder] = time.perf_counter() - t
    bundle = combine_bundles(args.dir / "models", {stage: args.dir / folder / "final" / "bundle"
                                                   for stage, folder in BUNDLE_SOURCES.items()})
    # grade-study finds the demo bundle without --models; only the default demo installs it there.
    installed = bundle.resolve() == demo_bundle_dir().resolve()
    t = time.perf_counter()
    graded = args.dir / "graded" / "held_out"
    if grade_study([str(held_out), "--models", str(bundle), "-o", str(graded)]) != 0:
        raise CommandError("grade-study failed on the held-out study")
    timings["grade-study"] = time.perf_counter() - t
    t = time.perf_counter()
    agreement = args.dir / "agreement"
    tables = [str(contiguous), str(args.dir / "classifier_A1" / "oof_predictions.csv"),
              str(args.dir / "classifier_A2" / "oof_predictions.csv")]
    if grade_agreement(tables + ["--pair", "A1:A2", "--pair", "A1:C1", "--pair", "A2:C2", "-o", str(agreement)]) != 0:
        raise CommandError("grade-agreement failed")
    timings["agreement"] = time.perf_counter() - t
    check = compare_with_truth(graded / "slices.csv", held_out.parent.parent / "labels.csv")
    summary = {f"{r['task']} {r['rater_a']}-{r['rater_b']}": _agreement_line(r)
               for r in json.loads((agreement / "agreement.json").read_text()) if r["task"] != "dsca"}
    print(f"\ngrade-demo finished in {time.perf_counter() - start:.0f} s "
          f"({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())})")
    print(f"  phantom cohort:     {labels.parent}  ({args.patients} patients; montage.png shows the grades)")
    print(f"  held-out study:     {held_out}")
    print(f"  its grading:        {graded / 'report.html'}")
    print(f"    against truth:    level accuracy {_fmt(check['level_accuracy'], 3)}, "
          f"grade accuracy {_fmt(check['grade_accuracy'], 3)}, DSCA MAE {_fmt(check['dsca_mae_mm2'], 1)} mm², "
          f"level names {_fmt(check['level_name_accuracy'], 3)}")
    print(f"  model bundle:       {bundle}" + ("  (grade-study uses it without --models)" if installed else ""))
    print(f"  agreement study:    {agreement / 'report.html'}")
    for key, line in summary.items():
        print(f"    {key:18s} {line}")
    write_json_atomic(args.dir / "demo-summary.json", {"timings_s": timings, "held_out_vs_truth": check,
                                                       "agreement": summary})
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("grade-demo", lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
