"""A montage of a phantom cohort: one axial slice per Schizas grade, a cord level, an unusable
(metal) slice and a sagittal slice, each whole and zoomed on the canal with the sac outlined."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pydicom  # noqa: E402
from PIL import Image  # noqa: E402

from stages.atomic import write_atomic  # noqa: E402

PANELS = (("rootlet", "A"), ("rootlet", "B"), ("rootlet", "C"), ("rootlet", "D"), ("cord", ""), ("other", ""))
TITLES = {"A": "Schizas A", "B": "Schizas B", "C": "Schizas C", "D": "Schizas D", "cord": "cord level",
          "other": "other (metal)"}


def _example(truth: pd.DataFrame, level: str, grade: str) -> pd.Series | None:
    rows = truth[(truth.level == level) & (truth.grade == grade) & (truth.box_x0 != "")]
    if rows.empty:
        return None
    # The most typical example: for grades the median sac area, for the rest the middle row.
    if grade:
        return rows.iloc[(rows.dsca_mm2 - rows.dsca_mm2.median()).abs().argsort().iloc[0]]
    return rows.iloc[len(rows) // 2]


def _dicom_path(cohort_dir: Path, row: pd.Series) -> Path:
    return cohort_dir / "dicom" / Path(row["label_map"]).relative_to("labelmaps").with_suffix(".dcm")


def make_montage(cohort_dir: Path | str, out_png: Path | str) -> Path:
    cohort_dir, out_png = Path(cohort_dir), Path(out_png)
    table = pd.read_csv(cohort_dir / "labels.csv", keep_default_na=False)
    truth = table[table.rater == "truth"].copy()
    truth["dsca_mm2"] = truth.dsca_mm2.astype(float)
    examples = [(k, _example(truth, *k)) for k in PANELS]
    examples = [(k, row) for k, row in examples if row is not None]
    sagittal = sorted((cohort_dir / "dicom").glob("*/sag_t2"))
    columns = len(examples) + bool(sagittal)
    fig, axes = plt.subplots(2, columns, figsize=(3.2 * columns, 6.8), squeeze=False)
    for col, ((level, grade), row) in enumerate(examples):
        image = pydicom.dcmread(_dicom_path(cohort_dir, row)).pixel_array
        mask = np.asarray(Image.open(cohort_dir / row["mask"])) > 0
        x0, y0, x1, y1 = (float(row[c]) for c in ("box_x0", "box_y0", "box_x1", "box_y1"))
        vmax = np.percentile(image, 99.7)
        top, bottom = axes[0, col], axes[1, col]
        top.imshow(image, cmap="gray", vmin=0, vmax=vmax)
        top.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="yellow", lw=1))
        top.set_title(TITLES[grade or level], fontsize=12)
        half = 2.2 * max(x1 - x0, y1 - y0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        r0, r1 = int(max(cy - half, 0)), int(min(cy + half, image.shape[0]))
        c0, c1 = int(max(cx - half, 0)), int(min(cx + half, image.shape[1]))
        bottom.imshow(image[r0:r1, c0:c1], cmap="gray", vmin=0, vmax=vmax)
        bottom.contour(mask[r0:r1, c0:c1], levels=[0.5], colors="red", linewidths=0.8)
        bottom.set_xlabel(f"{row.case_id}  {row.spinal_level}\nDSCA {row.dsca_mm2:.0f} mm²", fontsize=9)
    if sagittal:
        files = sorted(sagittal[0].glob("*.dcm"))
        ds = pydicom.dcmread(files[len(files) // 2])
        image = ds.pixel_array
        for ax in axes[:, -1]:
            ax.imshow(image, cmap="gray", vmin=0, vmax=np.percentile(image, 99.7))
        axes[0, -1].set_title("sagittal T2", fontsize=12)
        rows, cols = image.shape
        axes[1, -1].set_xlim(cols * 0.25, cols * 0.85)
        axes[1, -1].set_ylim(rows * 0.95, rows * 0.35)
        axes[1, -1].set_xlabel(sagittal[0].parent.name, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("grade-phantom: slices cut from 3-D anatomy (top) and the canal with the dural sac outlined (bottom)")
    fig.tight_layout()
    write_atomic(out_png, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)
    return out_png
