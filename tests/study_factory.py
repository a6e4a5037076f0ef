"""Build small DICOM study folders for tests: several series, odd encodings and junk files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    BasicTextSRStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from grading.dicom.writer import MRSliceSpec, mr_dataset, stable_uid, write_dataset
from grading.phantom.cohort import CohortConfig, generate_patient


def untrained_bundle(folder: Path, with_locator: bool = False) -> Path:
    """Seeded, untrained smoke-profile models that still produce every output: each slice gets a
    box, is called rootlet and is all sac (so the SEG and SR are always written). Deterministic:
    equal inputs give equal outputs, which is all the geometry tests need."""
    import torch

    from stages.bundle import save_bundle
    from stages.models import build_model
    from stages.profiles import smoke

    torch.manual_seed(0)
    configs = smoke().configs
    stages = ("detector", "level", "grade", "segmenter") + (("locator",) if with_locator else ())
    models = {stage: build_model(stage, configs) for stage in stages}
    torch.nn.init.constant_(models["level"].fc.bias, -4.0)
    torch.nn.init.constant_(models["segmenter"].head.bias, 4.0)
    return save_bundle(folder, models, configs, provenance={})


def phantom_config(patients: int = 1, seed: int = 0, workers: int = 1) -> CohortConfig:
    """A cohort of one contiguous axial T2 TSE series per patient: what most tests need, quickly."""
    return CohortConfig(patients=patients, seed=seed, workers=workers, series=("ax_t2",),
                        axial_presets={"t2_tse": 1.0})


def phantom_series(root: Path, index: int = 1, seed: int = 0, matrix: int | None = None,
                   n_slices: int | None = None) -> tuple[Path, list[dict]]:
    """One phantom patient's axial T2 series folder, and its label rows."""
    rows, summary = generate_patient(root, index, seed, phantom_config(seed=seed), matrix=matrix, n_slices=n_slices)
    return root / "dicom" / summary["patient_id"] / "ax_t2", rows

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


def series_slices(
    name: str,
    n: int,
    *,
    orientation=AXIAL,
    description="AX T2 TSE",
    te=100.0,
    tr=4000.0,
    shape=(32, 32),
    spacing=(0.6, 0.6),
    step_mm=4.0,
    seed=0,
) -> list[tuple[Dataset, float]]:
    """``n`` slices of one series with their true position along the normal (head first)."""
    rng = np.random.default_rng(seed)
    row, col = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row, col)
    series_uid = stable_uid("series", name)
    out = []
    for i in range(n):
        depth = -step_mm * i  # head to foot
        position = tuple(float(v) for v in (np.array([-10.0, -20.0, 50.0]) + depth * normal))
        spec = MRSliceSpec(
            patient_id="TEST01",
            patient_name="TEST^PATIENT",
            study_uid=stable_uid("study", "test"),
            series_uid=series_uid,
            sop_uid=stable_uid("sop", name, i),
            frame_of_reference_uid=stable_uid("for", "test"),
            series_number=len(name),
            instance_number=i + 1,
            image_position=position,
            image_orientation=orientation,
            pixel_spacing=spacing,
            series_description=description,
            echo_time=te,
            repetition_time=tr,
        )
        pixels = rng.integers(0, 4096, size=shape, dtype=np.uint16)
        out.append((mr_dataset(pixels, spec), float(np.dot(position, normal))))
    return out


def write_plain(ds: Dataset, path: Path) -> None:
    write_dataset(ds, path)


def write_implicit(ds: Dataset, path: Path) -> None:
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    write_dataset(ds, path, implicit_vr=True, little_endian=True)


def write_compressed(ds: Dataset, path: Path, syntax=RLELossless) -> None:
    ds.compress(syntax, generate_instance_uid=False)
    write_dataset(ds, path)


def write_no_preamble(ds: Dataset, path: Path) -> None:
    """The bare dataset, as old PACS exports write it: no 128-byte preamble, no 'DICM', no meta."""
    path.parent.mkdir(parents=True, exist_ok=True)
    bare = Dataset()
    bare.update(ds)
    pydicom.dcmwrite(path, bare, implicit_vr=True, little_endian=True, enforce_file_format=False)


def sr_document() -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = BasicTextSRStorage
    meta.MediaStorageSOPInstanceUID = stable_uid("sr")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = BasicTextSRStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = stable_uid("study", "test")
    ds.SeriesInstanceUID = stable_uid("series", "sr")
    ds.Modality = "SR"
    ds.PatientID = "TEST01"
    return ds


def build_mixed_study(root: Path) -> dict:
    """The acceptance study: axial T2 (odd encodings, shuffled instances, nested), axial T1,
    sagittal T2, an SR document and junk. Returns what a correct reader must report."""
    t2 = series_slices("ax_t2", 9, seed=1)
    t1 = series_slices("ax_t1", 5, description="AX T1 TSE", te=10, tr=500, seed=2)
    sag = series_slices("sag_t2", 6, orientation=SAGITTAL, description="SAG T2", seed=3)
    shuffled = [7, 3, 9, 1, 5, 2, 8, 4, 6]
    writers = [write_plain, write_implicit, write_no_preamble, write_compressed]
    for i, (ds, _) in enumerate(t2):
        ds.InstanceNumber = shuffled[i]
        folder = root / "a" / ("deep" if i % 2 else "") / "er"
        writers[i % len(writers)](ds, folder / f"IMG{(i * 5) % 9:04d}")
    for i, (ds, _) in enumerate(t1):
        write_plain(ds, root / "t1" / f"{i}.dcm")
    for i, (ds, _) in enumerate(sag):
        write_plain(ds, root / "sag" / f"{i}.dcm")
    write_dataset(sr_document(), root / "sr.dcm")
    junk = {
        root / "notes.txt": b"patient moved during series 3\n",
        root / "empty.dcm": b"",
        root / "picture.dcm": b"\x89PNG\r\n\x1a\n" + bytes(200),
    }
    for path, data in junk.items():
        path.write_bytes(data)
    truncated = series_slices("ax_t2", 10, seed=1)[9][0]  # same series, cut mid pixel data
    write_plain(truncated, root / "a" / "trunc.dcm")
    data = (root / "a" / "trunc.dcm").read_bytes()
    (root / "a" / "trunc.dcm").write_bytes(data[: len(data) - 700])
    junk_paths = set(junk) | {root / "a" / "trunc.dcm", root / "sr.dcm"}
    return {
        "t2_uid": stable_uid("series", "ax_t2"),
        "t1_uid": stable_uid("series", "ax_t1"),
        "sag_uid": stable_uid("series", "sag_t2"),
        "t2_sop_order": [ds.SOPInstanceUID for ds, _ in t2],
        "t2_positions": [p for _, p in t2],
        "junk": junk_paths,
    }


__all__ = [
    "AXIAL",
    "phantom_config",
    "untrained_bundle",
    "phantom_series",
    "SAGITTAL",
    "JPEG2000Lossless",
    "JPEGLSLossless",
    "RLELossless",
    "build_mixed_study",
    "series_slices",
    "sr_document",
    "write_compressed",
    "write_implicit",
    "write_no_preamble",
    "write_plain",
]
