"""Phantom T2 TSE beside real T2 TSE at lumbar disc levels, close up around the canal.

    uv run python scripts/montage_disc_zoom.py -o docs/real/t2tse_disc_zoom.png

Generates a few phantom patients (T2 TSE contiguous series, a seed never trained on), takes from
each one slice through a lumbar disc (L4/L5 or L5/S1 where it has one) at least 2 mm from its
endplates, and draws 80 x 80 mm around the canal at 0.5 mm per pixel above the same window of
each real clinical T2 TSE slice in ../shared/realdata (their pixel size assumed 0.6875 mm, as in
check_real.py; the sac lies near their middle). What the close-up shows is what still tells the
phantom from a patient at the level that is graded. Real images are only looked at.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pydicom  # noqa: E402
from PIL import Image  # noqa: E402
from scipy.ndimage import zoom  # noqa: E402

from grading.phantom.cohort import CohortConfig, generate_cohort  # noqa: E402

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
TSE_PIXEL_MM = 0.6875
HALF_MM, SHOWN_MM = 40.0, 0.5


def close_up(image: np.ndarray, pixel_mm: float, centre: tuple[float, float]) -> np.ndarray:
    """``HALF_MM`` around (column, row), resampled to ``SHOWN_MM`` per pixel."""
    r = int(HALF_MM / pixel_mm)
    cx, cy = (int(v) for v in centre)
    crop = image[max(cy - r, 0):cy + r, max(cx - r, 0):cx + r]
    return zoom(crop, pixel_mm / SHOWN_MM, order=1)


def phantom_disc_slices(folder: Path, patients: int, seed: int) -> list[tuple[str, np.ndarray, float, tuple]]:
    generate_cohort(folder, CohortConfig(patients, seed, axial_presets={"t2_tse": 1.0}, series=("ax_t2",)))
    labels = pd.read_csv(folder / "labels.csv", keep_default_na=False)
    truth = labels[(labels.rater == "truth") & (labels.box_x0 != "") & labels.spinal_level.str.match(r"^L\d/")]
    truth = truth[truth.level_boundary_mm.astype(float) >= 2.0]
    # The lowest two discs first, the levels of the real slices (and of most stenosis).
    low = truth.spinal_level.isin(["L4/L5", "L5/S1"])
    truth = truth.assign(low=low).sort_values("low", ascending=False, kind="stable").groupby("study_id").head(1)
    truth = truth.sort_values("study_id")
    paths = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p
             for p in (folder / "dicom").rglob("*.dcm")}
    out = []
    for row in truth.itertuples():
        ds = pydicom.dcmread(paths[row.sop_uid])
        centre = ((float(row.box_x0) + float(row.box_x1)) / 2, (float(row.box_y0) + float(row.box_y1)) / 2)
        out.append((f"phantom {row.study_id} {row.spinal_level} {row.grade}", ds.pixel_array.astype(np.float32),
                    float(ds.PixelSpacing[0]), centre))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", type=Path, default=Path("docs/real/t2tse_disc_zoom.png"))
    p.add_argument("--patients", type=int, default=7)
    p.add_argument("--seed", type=int, default=78)
    p.add_argument("--realdata", type=Path, default=REALDATA)
    args = p.parse_args()
    real = sorted((args.realdata / "axial_t2_tse_disc_level").glob("*.png"))
    with tempfile.TemporaryDirectory() as tmp:
        phantom = phantom_disc_slices(Path(tmp), args.patients, args.seed)
    columns = max(len(phantom), len(real), 1)
    fig, axes = plt.subplots(2, columns, figsize=(3 * columns, 7.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, image, pixel_mm, centre) in zip(axes[0], phantom):
        ax.imshow(close_up(image, pixel_mm, centre), cmap="gray", vmin=np.percentile(image, 1),
                  vmax=np.percentile(image, 99.5))
        ax.set_title(title, fontsize=11)
    for ax, path in zip(axes[1], real):
        image = np.asarray(Image.open(path).convert("L"), np.float32)
        ax.imshow(close_up(image, TSE_PIXEL_MM, (image.shape[1] / 2, image.shape[0] * 0.48)), cmap="gray",
                  vmin=np.percentile(image, 1), vmax=np.percentile(image, 99.5))
        ax.set_title(f"real {path.stem}", fontsize=11)
    fig.suptitle(f"T2 TSE at lumbar disc levels, {2 * HALF_MM:.0f} x {2 * HALF_MM:.0f} mm around the canal: "
                 "phantom (top, held-out patients) and real (bottom)")
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=60)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
