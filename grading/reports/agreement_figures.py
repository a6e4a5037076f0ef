"""Confusion-matrix heatmaps and Bland-Altman / scatter plots for the agreement study."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from statsmodels.graphics.agreement import mean_diff_plot  # noqa: E402

from stages.atomic import write_atomic  # noqa: E402

TASK_TITLES = {"level": "rootlet / cord", "grade": "Schizas grade", "dsca": "dural sac area"}


def _save(fig, path: Path) -> Path:
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def confusion_heatmap(record: dict, path: Path) -> Path:
    """Counts with row percentages; rows are rater_a, columns rater_b."""
    confusion = np.asarray(record["confusion"], float)
    labels = record["labels"]
    row_sums = confusion.sum(axis=1, keepdims=True)
    percent = np.divide(confusion, row_sums, out=np.zeros_like(confusion), where=row_sums > 0) * 100
    size = 1.3 + 1.05 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(percent, cmap="Blues", vmin=0, vmax=100)
    for i in range(len(labels)):
        for j in range(len(labels)):
            colour = "white" if percent[i, j] > 60 else "black"
            ax.text(j, i, f"{int(confusion[i, j])}\n{percent[i, j]:.1f}%", ha="center", va="center",
                    color=colour, fontsize=9)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel(record["rater_b"])
    ax.set_ylabel(record["rater_a"])
    ax.set_title(f"{TASK_TITLES[record['task']]}: {record['rater_a']} vs {record['rater_b']}\n"
                 f"accuracy {record['accuracy'] * 100:.1f}%, F1 {record['f1_macro'] * 100:.1f}%, n={record['n']}",
                 fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=f"% of {record['rater_a']}'s row")
    fig.tight_layout()
    return _save(fig, path)


def bland_altman(a: np.ndarray, b: np.ndarray, record: dict, path: Path) -> Path:
    """Difference (b - a) against the mean, with bias and 95% limits of agreement."""
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    # statsmodels plots m1 - m2: pass (b, a) so the sign matches agreement.json (b - a).
    mean_diff_plot(np.asarray(b), np.asarray(a), ax=ax, scatter_kwds={"s": 8, "alpha": 0.5})
    ax.set_xlabel(f"mean of {record['rater_a']} and {record['rater_b']} (mm²)")
    ax.set_ylabel(f"{record['rater_b']} − {record['rater_a']} (mm²)")
    ax.set_title(f"DSCA Bland-Altman: bias {record['bias_mm2']:+.1f} mm², "
                 f"LoA {record['loa_low_mm2']:.1f} to {record['loa_high_mm2']:.1f} mm²", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def area_scatter(a: np.ndarray, b: np.ndarray, record: dict, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    ax.scatter(a, b, s=8, alpha=0.5)
    lo, hi = float(min(np.min(a), np.min(b))), float(max(np.max(a), np.max(b)))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="identity")
    for threshold, name in ((100, "relative stenosis"), (75, "absolute stenosis")):
        ax.axvline(threshold, color="grey", lw=0.6, ls=":")
        ax.text(threshold, hi, f" {name}", rotation=90, va="top", fontsize=7, color="grey")
    ax.set_xlabel(f"{record['rater_a']} DSCA (mm²)")
    ax.set_ylabel(f"{record['rater_b']} DSCA (mm²)")
    r = record["pearson_r"]
    ax.set_title(f"DSCA: MAE {record['mae_mm2']:.1f} mm², r = {r:.3f}" if r is not None else "DSCA", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
