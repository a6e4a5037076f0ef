"""Decode a series' pixels into float arrays in scanner units (RescaleSlope/Intercept applied)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_rescale
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from grading.dicom.series import Series, SkippedFile, SliceHeader


@dataclass
class SeriesPixels:
    """Decoded slices in series order, with the headers they came from."""

    headers: list[SliceHeader]
    images: list[np.ndarray]  # float32 (rows, columns) each; sizes may differ between slices
    skipped: list[SkippedFile]


def transfer_syntax(ds: Dataset) -> UID:
    """The file's transfer syntax; for files without a meta header, the encoding pydicom read."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return UID(meta.TransferSyntaxUID)
    return ImplicitVRLittleEndian if ds.original_encoding[0] else ExplicitVRLittleEndian


def load_slice(header: SliceHeader) -> np.ndarray:
    ds = pydicom.dcmread(header.path, force=header.read_with_force)
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        ds.file_meta = getattr(ds, "file_meta", None) or FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = transfer_syntax(ds)
    pixels = ds.pixel_array
    if pixels.shape != (header.rows, header.columns):
        raise ValueError(f"decoded shape {pixels.shape} does not match Rows x Columns")
    return np.asarray(apply_rescale(pixels, ds), dtype=np.float32)


def _try_load(header: SliceHeader) -> np.ndarray | SkippedFile:
    try:
        return load_slice(header)
    except Exception as exc:  # any decoder failure is a per-file problem
        return SkippedFile(header.path, f"pixel data could not be decoded ({type(exc).__name__}: {exc})")


def load_series_pixels(series: Series, workers: int = 1) -> SeriesPixels:
    """Decode every slice, in ``workers`` threads (the decoders release the GIL); a slice that
    fails to decode is skipped with its reason, not fatal."""
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            loaded = list(pool.map(_try_load, series.slices))
    else:
        loaded = [_try_load(h) for h in series.slices]
    headers, images, skipped = [], [], []
    for header, item in zip(series.slices, loaded):
        if isinstance(item, SkippedFile):
            skipped.append(item)
        else:
            headers.append(header)
            images.append(item)
    return SeriesPixels(headers=headers, images=images, skipped=skipped)
