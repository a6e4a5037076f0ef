"""Run grade-study on the real axial MRI in ../shared/realdata and draw one montage per set.

    uv run python scripts/check_real.py --models BUNDLE -o docs/real

Each set is written as a DICOM series with its geometry (NIfTI affine -> ImagePositionPatient,
ImageOrientationPatient and PixelSpacing; the PNG slices get an axial orientation and an assumed
0.6875 mm pixel), graded by ``grade-study`` itself (the command's own code path, outputs on
disk), and its results read back from those outputs: slices.csv for the box, level, grade and
DSCA, the DICOM SEG for the sac outline. Each panel shows the whole slice with the top box and a
zoom on the box with the sac outline. A person counts the panels where the box lies on the dural
sac. Each set's slice table is kept beside its montage (SET_slices.csv), so that bundles can be
compared slice by slice (compare_real_calls.py). These images are for looking only: never for
training, tuning or choosing checkpoints. Skips (exit 0) when the folder is absent. Needs nibabel (a dev dependency).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pydicom  # noqa: E402
from PIL import Image  # noqa: E402

from grading.cli.study import main as grade_study  # noqa: E402
from grading.dicom.writer import (  # noqa: E402
    MRSliceSpec,
    mr_dataset,
    stable_uid,
    write_dataset,
)
from stages.vocabulary import BOX_CONTINUITY, BOX_DROPPED  # noqa: E402

DEFAULT_REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
TSE_PIXEL_MM = 0.6875  # not recorded with the PNGs; a 220 mm field of view over 320 columns
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class RealSet:
    name: str
    files: tuple[Path, ...]
    description: str  # SeriesDescription written for it
    healthy: bool = False


def real_sets(root: Path) -> list[RealSet]:
    sets = [RealSet(f"TUM{n}_{kind}", (root / f"TUM{n}_{kind}_img_img_L2-L5.nii.gz",), f"AX DIXON {kind[0].upper()}",
                    healthy=True)
            for n, kind in (("01", "water"), ("01", "fat"), ("02", "water"))]
    sets += [RealSet(f"CHAOS{n}_T2SPIR", (root / "chaos_axial_t2spir" / f"CHAOS{n}_T2SPIR_full.nii.gz",), "AX T2 SPIR")
             for n in ("10", "11", "12")]
    sets.append(RealSet("T2TSE_disc_level", tuple(sorted((root / "axial_t2_tse_disc_level").glob("*.png"))),
                        "AX T2 TSE"))
    return [s for s in sets if s.files and all(f.is_file() for f in s.files)]


def _to_uint12(data: np.ndarray) -> np.ndarray:
    high = float(np.percentile(data, 99.9)) or 1.0
    return np.clip(np.rint(data / high * 3000), 0, 4095).astype(np.uint16)


def _spec(name: str, study: str, index: int, position, orientation, spacing, description: str) -> MRSliceSpec:
    return MRSliceSpec(patient_id=study, patient_name=f"REAL^{study}", study_uid=stable_uid("real", study),
                       series_uid=stable_uid("real", study, "series"), sop_uid=stable_uid("real", study, index),
                       frame_of_reference_uid=stable_uid("real", study, "for"), series_number=1,
                       instance_number=index + 1, image_position=tuple(float(v) for v in position),
                       image_orientation=tuple(float(v) for v in orientation), pixel_spacing=spacing,
                       series_description=description, echo_time=0.0, repetition_time=0.0,
                       extra={"EchoTime": "", "RepetitionTime": ""})


def write_nifti_series(path: Path, folder: Path, name: str, description: str) -> int:
    """One axial MR series from a NIfTI volume, columns along its first axis, rows along its second."""
    import nibabel as nib

    image = nib.load(str(path))
    data = np.asarray(image.dataobj, np.float32)
    affine = image.affine
    row_dir = LPS_FROM_RAS @ affine[:3, 0]
    col_dir = LPS_FROM_RAS @ affine[:3, 1]
    spacing = (float(np.linalg.norm(col_dir)), float(np.linalg.norm(row_dir)))
    orientation = (*row_dir / np.linalg.norm(row_dir), *col_dir / np.linalg.norm(col_dir))
    pixels = _to_uint12(data)
    for k in range(data.shape[2]):
        position = LPS_FROM_RAS @ (affine @ np.array([0, 0, k, 1.0]))[:3]
        spec = _spec(name, name, k, position, orientation, spacing, description)
        write_dataset(mr_dataset(np.ascontiguousarray(pixels[:, :, k].T), spec), folder / f"IM{k:04d}.dcm")
    return data.shape[2]


def write_png_studies(paths: tuple[Path, ...], folder: Path, description: str) -> list[Path]:
    """Each PNG is a different patient: one single-slice study each, anterior up, axial."""
    studies = []
    for k, path in enumerate(paths):
        pixels = _to_uint12(np.asarray(Image.open(path).convert("L"), np.float32))
        study = folder / path.stem
        spec = _spec(path.stem, path.stem, 0, (0.0, 0.0, float(k)), (1, 0, 0, 0, 1, 0), (TSE_PIXEL_MM, TSE_PIXEL_MM),
                     description)
        write_dataset(mr_dataset(pixels, spec), study / "IM0000.dcm")
        studies.append(study)
    return studies


def _sac_masks(out: Path) -> dict[str, np.ndarray]:
    """The SEG's frames by the SOP Instance UID of the slice they outline."""
    path = out / "dural_sac_seg.dcm"
    if not path.is_file():
        return {}
    seg = pydicom.dcmread(path)
    frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    masks = {}
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        sop = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        masks[str(sop)] = frame > 0
    return masks


def grade(studies: list[Path], models: Path, out: Path, extra: tuple[str, ...] = ()
          ) -> list[tuple[Path, pd.DataFrame, dict]]:
    argv = [str(s) for s in studies] + ["--models", str(models), "-o", str(out), *extra]
    if grade_study(argv) != 0:
        raise SystemExit(f"grade-study failed on {studies}")
    results = []
    for study in studies:
        folder = out / study.name if len(studies) > 1 else out
        slices = pd.read_csv(folder / "slices.csv", keep_default_na=False)
        results.append((study, slices, _sac_masks(folder)))
    return results


def _panel(ax_whole, ax_zoom, image: np.ndarray, row: pd.Series, mask: np.ndarray | None, title: str) -> None:
    vmax = float(np.percentile(image, 99.5)) or 1.0
    ax_whole.imshow(image, cmap="gray", vmin=0, vmax=vmax)
    ax_whole.set_title(title, fontsize=7)
    choice = row.get("box_choice", "")
    if row["box_x0"] == "":
        ax_zoom.imshow(image, cmap="gray", vmin=0, vmax=vmax)
        ax_zoom.set_title("no canal" + (f" (s={float(row['detector_score']):.2f} dropped)" if choice == BOX_DROPPED
                                        else ""), fontsize=7)
        return
    x0, y0, x1, y1 = (float(row[c]) for c in ("box_x0", "box_y0", "box_x1", "box_y1"))
    colour = {"A": "lime", "B": "yellow", "C": "orange", "D": "red"}.get(row["grade"], "deepskyblue")
    ax_whole.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=colour, lw=1.2))
    half = 2.5 * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    ax_zoom.imshow(image, cmap="gray", vmin=0, vmax=vmax)
    if mask is not None and mask.any():
        ax_zoom.contour(mask, levels=[0.5], colors="red", linewidths=0.8)
    ax_zoom.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=colour, lw=0.8))
    ax_zoom.set_xlim(cx - half, cx + half)
    ax_zoom.set_ylim(cy + half, cy - half)
    dsca = f"{float(row['dsca_mm2']):.0f} mm²" if row["dsca_mm2"] != "" else "-"
    kept = " kept" if choice == BOX_CONTINUITY else ""  # below the threshold or not the best: its neighbours chose it
    ax_zoom.set_title(f"{row['level']} {row['grade']}  DSCA {dsca}  s={float(row['detector_score']):.2f}{kept}",
                      fontsize=7)


def montage(name: str, entries: list[tuple[np.ndarray, pd.Series, np.ndarray | None, str]], out_png: Path,
            columns: int = 6) -> None:
    rows = int(np.ceil(len(entries) / columns))
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(2.2 * 2 * columns, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, (image, row, mask, title) in enumerate(entries):
        r, c = divmod(k, columns)
        _panel(axes[r, 2 * c], axes[r, 2 * c + 1], image, row, mask, title)
    fig.suptitle(f"{name}: grade-study on real MRI (box colour = grade; red outline = segmented sac)", fontsize=11)
    fig.tight_layout()
    fig.savefig(out_png, dpi=70)
    plt.close(fig)


def summarise(name: str, slices: pd.DataFrame) -> dict:
    found = slices[slices.level != "no canal"]
    dsca = pd.to_numeric(found.dsca_mm2, errors="coerce").dropna()
    choices = slices.get("box_choice", pd.Series(dtype=str))
    return {"set": name, "slices": len(slices), "with box": len(found),
            "grades": found.grade.replace("", "-").value_counts().to_dict(),
            "levels": found.level.value_counts().to_dict(),
            "kept for continuity": int((choices == BOX_CONTINUITY).sum()),
            "dropped for continuity": int((choices == BOX_DROPPED).sum()),
            "dsca median": round(float(dsca.median()), 1) if len(dsca) else None,
            "dsca range": (round(float(dsca.min()), 1), round(float(dsca.max()), 1)) if len(dsca) else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", required=True, type=Path, help="model bundle (e.g. grade-demo's)")
    p.add_argument("--realdata", type=Path, default=DEFAULT_REALDATA)
    p.add_argument("-o", "--output", type=Path, default=Path("docs/real"))
    p.add_argument("--slice-by-slice", action="store_true", help="grade-study --slice-by-slice (no canal tracking)")
    p.add_argument("--box-threshold", type=float, help="grade-study --box-threshold (default: grade-study's)")
    args = p.parse_args(argv)
    sets = real_sets(args.realdata)
    if not sets:
        print(f"check_real: skipped, no real data under {args.realdata}")
        return 0
    args.output.mkdir(parents=True, exist_ok=True)
    summaries = []
    with tempfile.TemporaryDirectory() as tmp:
        for real in sets:
            work = Path(tmp) / real.name
            if real.files[0].suffix == ".png":
                studies = write_png_studies(real.files, work / "dicom", real.description)
            else:
                write_nifti_series(real.files[0], work / "dicom" / real.name, real.name, real.description)
                studies = [work / "dicom" / real.name]
            entries, tables = [], []
            extra = (("--slice-by-slice",) if args.slice_by_slice else ()) + \
                (("--box-threshold", str(args.box_threshold)) if args.box_threshold is not None else ())
            for study, slices, masks in grade(studies, args.models, work / "graded", extra):
                files = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: f for f in study.glob("*.dcm")}
                for _, row in slices.iterrows():
                    image = pydicom.dcmread(files[row["sop_uid"]]).pixel_array.astype(np.float32)
                    entries.append((image, row, masks.get(row["sop_uid"]), f"{study.name} #{row['instance_number']}"))
                tables.append(slices.assign(study=study.name))
            montage(real.name, entries, args.output / f"{real.name}.png")
            table = pd.concat(tables, ignore_index=True)
            # Every slice's calls, so that bundles can be compared slice by slice (compare_real_calls.py).
            table.to_csv(args.output / f"{real.name}_slices.csv", index=False)
            summaries.append(summarise(real.name, table))
    for s in summaries:
        print(s)
    pd.DataFrame(summaries).to_csv(args.output / "summary.csv", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
