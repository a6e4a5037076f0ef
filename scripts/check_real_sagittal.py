"""Run the level locator on the real sagittal T2 in ../shared/realdata and draw a montage.

    uv run python scripts/check_real_sagittal.py --models BUNDLE -o docs/real/sagittal_levels.png

Each set is written as a DICOM sagittal series with its geometry (the SPIDER PNGs get a sagittal
orientation, head up and anterior left, and an assumed pixel size; the SCT NIfTI its affine),
read back by the study reader, and localized as grade-study does: the middle sagittal slices,
the bundle's locator, the structures named by counting up from the sacrum. Each panel shows the
middle slice with the locator's classes (bodies blue, discs yellow, sacrum green), the names it
gave and, in the title, its method and flags. A person counts the discs found in order and named
right. These images are for looking only: never for training, tuning or choosing checkpoints.
Skips (exit 0) when the folder is absent. Needs nibabel (a dev dependency).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_real import DEFAULT_REALDATA, LPS_FROM_RAS, _spec, _to_uint12  # noqa: E402

from grading.dicom import load_series_pixels, scan_study  # noqa: E402
from grading.dicom.writer import mr_dataset, write_dataset  # noqa: E402
from grading.pipeline import localize  # noqa: E402
from grading.reports.localizer import render_localizer  # noqa: E402
from grading.sagittal_levels import middle_slices  # noqa: E402
from stages.bundle import load_bundle  # noqa: E402
from stages.preprocessing import normalise_intensity  # noqa: E402
from stages.vocabulary import COLUMN_CLASSES  # noqa: E402

SPIDER_PIXEL_MM = 0.55  # not recorded: 640 rows over a ~350 mm lumbar field of view
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # rows run anterior -> posterior, columns head -> foot
CLASS_COLOURS = {"body": (60, 140, 255), "disc": (255, 220, 60), "sacrum": (60, 220, 120)}
LUMBAR_DISCS = ("L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1")


def naming_summary(rows: list[dict]) -> str:
    """What the names say over all studies, in one line to check the montage against (whether a
    name is right only a person looking at the panel can tell)."""
    names = [set(str(r["names"]).split()) for r in rows]
    counts = [r["lumbar_count"] for r in rows if r["lumbar_count"] not in (None, "")]
    return (f"{len(rows)} studies: all five lumbar discs named on {sum(set(LUMBAR_DISCS) <= n for n in names)}, "
            f"L5/S1 on {sum('L5/S1' in n for n in names)}, nothing named on {sum(not n for n in names)}; "
            f"lumbar vertebrae counted (not assumed) on {len(counts)}, other than five on "
            f"{sum(int(float(c)) != 5 for c in counts)}")


def write_spider(root: Path, out: Path) -> dict[str, Path]:
    """One sagittal series per SPIDER patient: its slices in order, 4 mm apart (assumed)."""
    manifest = pd.read_csv(root / "spider_sagittal_t2" / "manifest.csv")
    studies = {}
    images = root / "spider_sagittal_t2" / "images"
    for pid in sorted(manifest.spider_patient_id.unique()):
        files = sorted(images.glob(f"{pid}_t2_SPACE_slice*.png"), key=lambda p: int(p.stem.rsplit("slice", 1)[1]))
        if not files:
            continue
        name = f"SPIDER_{pid}"
        for k, path in enumerate(files):
            pixels = _to_uint12(np.asarray(Image.open(path).convert("L"), np.float32))
            spec = _spec(name, name, k, (4.0 * k, 0.0, 0.0), SAGITTAL, (SPIDER_PIXEL_MM, SPIDER_PIXEL_MM), "SAG T2 SPACE")
            write_dataset(mr_dataset(pixels, spec), out / name / f"IM{k:04d}.dcm")
        studies[name] = out / name
    return studies


def write_sct(path: Path, out: Path) -> Path:
    """The SCT sagittal volume (RAS, first axis left-right) as sagittal DICOM slices."""
    import nibabel as nib

    image = nib.load(str(path))
    data = np.asarray(image.dataobj, np.float32)
    affine = image.affine
    axes = [LPS_FROM_RAS @ affine[:3, k] for k in range(3)]
    # Rows of the written image follow the volume's third axis (feet -> head in RAS), columns its
    # second (posterior -> anterior); flip both so the slice reads head-up, anterior-left.
    row_dir, col_dir = -axes[1] / np.linalg.norm(axes[1]), -axes[2] / np.linalg.norm(axes[2])
    spacing = (float(np.linalg.norm(axes[2])), float(np.linalg.norm(axes[1])))
    pixels = _to_uint12(data)
    ny, nz = data.shape[1], data.shape[2]
    for k in range(data.shape[0]):
        corner = affine @ np.array([k, ny - 1, nz - 1, 1.0])
        position = LPS_FROM_RAS @ corner[:3]
        slice_ = np.ascontiguousarray(pixels[k, ::-1, ::-1].T)
        spec = _spec("SCT", "SCT", k, position, (*row_dir, *col_dir), spacing, "SAG T2")
        write_dataset(mr_dataset(slice_, spec), out / "SCT" / f"IM{k:04d}.dcm")
    return out / "SCT"


def localize_study(folder: Path, models: dict, configs) -> tuple[np.ndarray, object]:
    scan = scan_study(folder, verify_pixels=False)
    series = next(s for s in scan.series if s.orientation == "sagittal")
    headers = middle_slices(series, configs.locator.slices)
    pixels = load_series_pixels(replace(series, slices=headers))
    images = [h.display.apply(normalise_intensity(img, configs.preprocessing))
              for h, img in zip(pixels.headers, pixels.images)]
    localization = localize(models["locator"], configs, pixels.headers, images)
    return images[len(images) // 2], localization


def panel(image: np.ndarray, localization) -> np.ndarray:
    picture = np.asarray(render_localizer(image, localization, [], []), np.float32)
    classes = np.asarray(Image.fromarray(localization.class_map).resize(picture.shape[1::-1], Image.NEAREST))
    for k, name in enumerate(COLUMN_CLASSES):
        if name in CLASS_COLOURS:
            where = classes == k
            picture[where] = 0.65 * picture[where] + 0.35 * np.asarray(CLASS_COLOURS[name], np.float32)
    return picture.astype(np.uint8)


def _count_note(localization) -> str:
    """How the column was counted, in a panel title's few words."""
    p = localization.lumbar_probabilities
    if not p:
        return localization.flags[0][:40] if localization.flags else localization.method[:40]
    if localization.lumbar_count is None:
        return f"five assumed, P(5) = {p[5]:.2f}"
    return f"{localization.lumbar_count} lumbar counted, P = {p[localization.lumbar_count]:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", required=True, type=Path, help="a bundle with a locator")
    p.add_argument("--realdata", type=Path, default=DEFAULT_REALDATA)
    p.add_argument("-o", "--output", type=Path, default=Path("docs/real/sagittal_levels.png"))
    p.add_argument("--max-panels", type=int, default=42)
    args = p.parse_args()
    if not args.realdata.is_dir():
        print(f"{args.realdata}: absent; nothing to check")
        return
    models, configs, _ = load_bundle(args.models, stages=["locator"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        studies = {}
        if (args.realdata / "sct_t2_lumbar_sagittal.nii.gz").is_file():
            studies["SCT"] = write_sct(args.realdata / "sct_t2_lumbar_sagittal.nii.gz", Path(tmp))
        if (args.realdata / "spider_sagittal_t2" / "manifest.csv").is_file():
            studies.update(write_spider(args.realdata, Path(tmp)))
        panels = []
        for name, folder in list(studies.items())[:args.max_panels]:
            image, localization = localize_study(folder, models, configs)
            names = [s.name for s in localization.structures]
            rows.append({"set": name, "method": localization.method, "sure": localization.sure,
                         "lumbar_count": localization.lumbar_count, "flags": "; ".join(localization.flags),
                         "names": " ".join(names)})
            panels.append((name, panel(image, localization), localization))
            print(f"{name}: {' '.join(names) or '(nothing named)'}" + (f"  [{'; '.join(localization.flags)}]"
                                                                      if localization.flags else ""))
    cols = 7
    fig, axes = plt.subplots(-(-len(panels) // cols), cols, figsize=(cols * 2.6, -(-len(panels) // cols) * 3.4),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (name, picture, localization) in zip(axes.ravel(), panels):
        ax.imshow(picture)
        ax.set_title(f"{name}\n{_count_note(localization)}", fontsize=7)
    fig.suptitle("Level locator on real sagittal T2 (bodies blue, discs yellow, sacrum green; names as given)",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=80)
    pd.DataFrame(rows).to_csv(args.output.with_suffix(".csv"), index=False)
    print(naming_summary(rows))
    print(f"-> {args.output}")


if __name__ == "__main__":
    main()
