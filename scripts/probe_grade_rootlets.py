"""What the grade classifier reads: visible rootlets, or CSF against rootlets?

    uv run python scripts/probe_grade_rootlets.py --models BUNDLE --cohort HELD_OUT_COHORT -o docs/real/grade_probe.png

Four rows of grade patches, each with the bundle's call and its probability:
1. the real healthy TUM volunteers' sacs (Dixon water; boxes from the bundle's detector), as graded;
2. the same patches with a dozen small dark dots drawn on the sac's brightest pixels (rootlet-like);
3. held-out phantom grade-A patches (true boxes), as rendered;
4. the same phantom patches blurred as a ~3 mm acquisition would show them (Gaussian, sigma 1.25 mm).
If row 2 turns the real sacs to A and row 4 turns phantom A to C or D, the classifier equates
"A" with rootlets it can resolve, and a healthy sac on a coarse series (Dixon, abdominal T2)
looks compressed to it. Looking only: the real patches are never used to train or choose anything.
Skips (exit 0) when the real data is absent.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_real import DEFAULT_REALDATA, real_sets, write_nifti_series  # noqa: E402

from grading.pipeline import load_study  # noqa: E402
from grading.training_data import load_training_data  # noqa: E402
from stages.bundle import load_bundle  # noqa: E402
from stages.inference import classify_mirrored, predict_slices  # noqa: E402
from stages.patches import extract_patches, patch_geometry  # noqa: E402
from stages.vocabulary import GRADES  # noqa: E402

PER_ROW = 10
BLUR_SIGMA_MM = 1.25  # ~3 mm full width at half maximum


def real_patches(realdata: Path, models: dict, configs) -> np.ndarray:
    """Grade patches around the detector's box on the healthy volunteers' water images."""
    cfg, patches = configs.classifier_patch, []
    with tempfile.TemporaryDirectory() as tmp:
        for real in real_sets(realdata):
            if not (real.healthy and "water" in real.name):
                continue
            write_nifti_series(real.files[0], Path(tmp) / real.name, real.name, real.description)
            loaded = load_study(Path(tmp) / real.name)
            for image, spacing, pred in zip(loaded.images, loaded.spacings,
                                            predict_slices(models, configs, loaded.images, loaded.spacings)):
                if pred.box is not None:
                    patches.append(extract_patches(image, [patch_geometry(pred.box, cfg.size, cfg.margin, spacing)])[0])
    return np.stack(patches) if patches else np.zeros((0, cfg.size, cfg.size), np.float32)


def phantom_patches(cohort: Path, configs, count: int, blur_mm: float = 0.0) -> np.ndarray:
    """Grade-A patches of a held-out phantom cohort around the true box, optionally blurred."""
    labels = pd.read_csv(cohort / "labels.csv")
    rows = labels[(labels.rater == "truth") & (labels.grade == "A")]
    rows = rows.iloc[np.linspace(0, len(rows) - 1, count).astype(int)]
    cfg, out = configs.classifier_patch, []
    for r in load_training_data(rows, cohort / "dicom", "truth", cohort, progress=False).records:
        image = gaussian_filter(r.image, (blur_mm / r.spacing[0], blur_mm / r.spacing[1])) if blur_mm else r.image
        out.append(extract_patches(image, [patch_geometry(r.box, cfg.size, cfg.margin, r.spacing)])[0])
    return np.stack(out)


def with_dots(patch: np.ndarray, rng: np.random.Generator, count: int = 12) -> np.ndarray:
    """Small dark discs (rootlet-sized at the patch's ~0.5 mm pixels) on the brightest pixels."""
    out = patch.copy()
    rows, cols = np.nonzero(patch > np.percentile(patch, 85))
    yy, xx = np.ogrid[:patch.shape[0], :patch.shape[1]]
    for k in rng.choice(len(rows), count):
        out[(yy - rows[k]) ** 2 + (xx - cols[k]) ** 2 <= 2] *= 0.4
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", required=True, type=Path)
    p.add_argument("--cohort", required=True, type=Path, help="a phantom cohort the bundle never trained on")
    p.add_argument("--realdata", type=Path, default=DEFAULT_REALDATA)
    p.add_argument("-o", "--output", type=Path, default=Path("docs/real/grade_probe.png"))
    p.add_argument("--title", help="what the bundle is (default: its folder)")
    args = p.parse_args(argv)
    if not any(s.healthy for s in real_sets(args.realdata)):
        print(f"probe_grade_rootlets: skipped, no healthy real sets under {args.realdata}")
        return 0
    models, configs, _ = load_bundle(args.models, stages=["detector", "grade"])
    rng = np.random.default_rng(0)
    real = real_patches(args.realdata, models, configs)
    rows = {"real healthy sacs (TUM water)": real,
            "same + 12 dark dots on the sac": np.stack([with_dots(x, rng) for x in real]) if len(real) else real,
            "phantom grade A": phantom_patches(args.cohort, configs, PER_ROW * 3),
            f"phantom grade A, blurred (sigma {BLUR_SIGMA_MM} mm)": phantom_patches(args.cohort, configs, PER_ROW * 3,
                                                                            BLUR_SIGMA_MM)}
    fig, axes = plt.subplots(len(rows), PER_ROW, figsize=(PER_ROW * 1.5, len(rows) * 1.8), squeeze=False)
    for axes_row, (name, patches) in zip(axes, rows.items()):
        probs = classify_mirrored(models["grade"], patches.astype(np.float32)) if len(patches) else \
            np.zeros((0, len(GRADES)))  # read as grade-study reads it
        calls = [GRADES[int(k)] for k in probs.argmax(1)]
        counts = ", ".join(f"{g} {calls.count(g)}" for g in GRADES if calls.count(g))
        shown = np.linspace(0, len(patches) - 1, min(PER_ROW, len(patches))).astype(int) if len(patches) else []
        for ax in axes_row:
            ax.axis("off")
        for ax, k in zip(axes_row, shown):
            ax.imshow(patches[k], cmap="gray", vmin=0, vmax=1.5)
            ax.set_title(f"{calls[k]} {probs[k].max():.2f}", fontsize=8)
        axes_row[0].text(0, 1.3, f"{name}: {counts} (of {len(patches)})", transform=axes_row[0].transAxes,
                         fontsize=9, ha="left", weight="bold")
        print(f"{name}: {counts}")
    fig.suptitle(f"Grade calls of {args.title or args.models}", fontsize=10)
    fig.tight_layout(h_pad=3.0)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=80)
    return 0


if __name__ == "__main__":
    sys.exit(main())
