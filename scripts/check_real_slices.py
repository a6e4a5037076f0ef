"""Run a phantom-trained detector on real axial MRI (NIfTI) and draw its boxes for a person to check.

    uv run python scripts/check_real_slices.py --bundle RUN/final/bundle \
        ../shared/realdata/TUM01_water_img_img_L2-L5.nii.gz -o docs/real_detections.png

The real volumes are only looked at, never trained on. Needs nibabel (a dev dependency).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from stages.bundle import load_bundle  # noqa: E402
from stages.detector import detect  # noqa: E402
from stages.preprocessing import normalise_intensity  # noqa: E402


def axial_slices(path: Path, every: int) -> tuple[list[np.ndarray], tuple[float, float]]:
    """Axial slices in radiological display (anterior up, patient's right on the left)."""
    image = nib.as_closest_canonical(nib.load(str(path)))  # RAS
    data = np.asarray(image.dataobj, dtype=np.float32)
    zooms = image.header.get_zooms()
    slices = [np.flipud(data[:, :, k].T) for k in range(0, data.shape[2], every)]
    return slices, (float(zooms[1]), float(zooms[0]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("volumes", nargs="+", type=Path)
    p.add_argument("--bundle", required=True, type=Path)
    p.add_argument("--every", type=int, default=4, help="use every n-th slice")
    p.add_argument("-o", "--output", type=Path, default=Path("real_detections.png"))
    args = p.parse_args()
    models, configs, _ = load_bundle(args.bundle, stages=["detector"])
    panels = []
    for volume in args.volumes:
        slices, _ = axial_slices(volume, args.every)
        images = [normalise_intensity(s) for s in slices]
        for k, (img, found) in enumerate(zip(images, detect(models["detector"], images, configs.detector.input_size))):
            panels.append((f"{volume.name.split('_img')[0]} #{k * args.every}", img, found))
    cols = 6
    rows = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, img, found) in zip(axes.flat, panels):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        if found is not None:
            x0, y0, x1, y1 = found.box
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="yellow", lw=1.2))
            cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 2.5 * max(x1 - x0, y1 - y0)
            ax.set_xlim(cx - half, cx + half)
            ax.set_ylim(cy + half, cy - half)
            ax.set_title(f"{title}  score {found.score:.2f}", fontsize=8)
        else:
            ax.set_title(f"{title}  no canal", fontsize=8)
    fig.suptitle("Phantom-trained canal detector on real axial MRI (zoomed on its box)")
    fig.tight_layout()
    fig.savefig(args.output, dpi=80)
    print(f"{sum(f is not None for _, _, f in panels)} of {len(panels)} slices with a box -> {args.output}")


if __name__ == "__main__":
    main()
