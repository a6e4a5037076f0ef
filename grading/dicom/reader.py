"""Walk a study folder and turn every file into a slice header or a reason it was skipped.

Headers are read with ``stop_before_pixels`` first, so a file that claims absurd dimensions is
refused before anything allocates its pixels; ``force=True`` is only a fallback for files
without the 128-byte preamble. One bad file never stops a study.
"""
from __future__ import annotations

import errno
import math
import os
import stat
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from tqdm import tqdm

from grading.dicom.geometry import slice_normal
from grading.dicom.pixels import transfer_syntax
from grading.dicom.series import Series, SkippedFile, SliceHeader, StudyScan, select_localizer, select_series


@dataclass(frozen=True)
class ScanLimits:
    """Sizes above which a file is refused rather than decoded."""

    max_side: int = 4096  # Rows or Columns
    max_pixel_bytes: int = 256 * 1024 * 1024  # Rows x Columns x frames x samples x bytes
    max_file_bytes: int = 1024 * 1024 * 1024
    max_inflated_bytes: int = 64 * 1024 * 1024  # a deflated data set, inflated (an MR slice: < 2 MB)


class SkipFile(Exception):
    """Raised inside the reader with the one-line reason a file is left out."""


def _read_header(path: Path) -> tuple[Dataset, bool]:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True), False
    except InvalidDicomError:
        pass  # no preamble / no 'DICM' marker: try once more without the check
    except Exception as exc:  # pydicom raises many types on corrupt headers
        raise SkipFile(f"unreadable DICOM header ({type(exc).__name__}: {exc})") from None
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception as exc:
        raise SkipFile(f"not a DICOM file ({type(exc).__name__}: {exc})") from None
    if "SOPClassUID" not in ds and "SOPInstanceUID" not in ds:
        raise SkipFile("not a DICOM file (no DICOM preamble and no SOP Class/Instance UID)")
    return ds, True


def _check_deflated(path: Path, limits: ScanLimits) -> None:
    """pydicom inflates a deflated data set whole, and 2 MB of zeros inflate to 2 GB: measure the
    inflated size in bounded steps first."""
    try:
        meta = pydicom.filereader.read_file_meta_info(path)
    except Exception:
        return  # no file meta: not deflated; the header read decides what it is
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return
    group_length = meta.get("FileMetaInformationGroupLength")
    if group_length is None:
        raise SkipFile("deflated data set without a File Meta group length: cannot bound its size")
    inflater, inflated, budget = zlib.decompressobj(-zlib.MAX_WBITS), 0, limits.max_inflated_bytes + 1
    with open(path, "rb") as f:
        f.seek(128 + 4 + 12 + int(group_length))
        while (chunk := f.read(1 << 20)) and inflated < budget:
            try:
                inflated += len(inflater.decompress(chunk, budget - inflated))
                while inflater.unconsumed_tail and inflated < budget:
                    inflated += len(inflater.decompress(inflater.unconsumed_tail, budget - inflated))
            except zlib.error as exc:
                raise SkipFile(f"corrupt deflated data set ({exc})") from None
    if inflated >= budget:
        raise SkipFile(f"deflated data set inflates past {limits.max_inflated_bytes} bytes (a deflate bomb?)")


def _float_list(ds: Dataset, keyword: str, n: int) -> list[float] | None:
    try:
        values = [float(v) for v in ds[keyword].value]
    except (KeyError, TypeError, ValueError):
        return None
    if len(values) != n or not all(math.isfinite(v) for v in values):
        return None
    return values


def _optional_float(ds: Dataset, keyword: str) -> float | None:
    try:
        value = float(ds.get(keyword))
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _expected_pixel_bytes(ds: Dataset) -> int:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    return int(ds.Rows) * int(ds.Columns) * frames * samples * math.ceil(bits / 8)


def _check_image(ds: Dataset, limits: ScanLimits) -> None:
    sop_class = UID(str(ds.get("SOPClassUID", "")))
    if "Rows" not in ds or "Columns" not in ds:
        name = sop_class.name if sop_class else "no SOP Class UID"
        raise SkipFile(f"not an image ({name})")
    rows, cols = int(ds.Rows), int(ds.Columns)
    if not (0 < rows <= limits.max_side and 0 < cols <= limits.max_side):
        raise SkipFile(f"absurd image size {rows}x{cols} (limit {limits.max_side} per side)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames < 1 or _expected_pixel_bytes(ds) > limits.max_pixel_bytes:
        raise SkipFile(f"absurd pixel data size {rows}x{cols}x{frames} frames")
    if frames > 1:
        raise SkipFile(f"multi-frame image ({frames} frames): only single-frame slices are graded")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise SkipFile("colour image (SamplesPerPixel != 1): MR slices are greyscale")


def _check_pixel_data(path: Path, header: Dataset, forced: bool) -> None:
    """Read the whole file (not decoding) and check the pixel data is there and complete."""
    ts = transfer_syntax(header)
    if not ts.is_private and ts.is_compressed and not get_decoder(ts).is_available:
        raise SkipFile(f"no installed decoder for transfer syntax {ts.name}")
    try:
        ds = pydicom.dcmread(path, force=forced)
        data = ds.get("PixelData")
    except Exception as exc:
        raise SkipFile(f"unreadable pixel data ({type(exc).__name__}: {exc})") from None
    if data is None:
        raise SkipFile("no pixel data")
    if not ts.is_compressed:
        expected = _expected_pixel_bytes(ds)
        if len(data) < expected:
            raise SkipFile(f"pixel data truncated ({len(data)} of {expected} bytes)")


def read_slice_header(path: Path, limits: ScanLimits = ScanLimits(), verify_pixels: bool = True) -> SliceHeader:
    """One file's slice header, or :class:`SkipFile` with the reason it cannot be graded."""
    size = path.stat().st_size
    if size == 0:
        raise SkipFile("empty file")
    if size > limits.max_file_bytes:
        raise SkipFile(f"file too large ({size} bytes)")
    if path.name.upper() == "DICOMDIR":
        raise SkipFile("DICOMDIR index, not an image (the folder is walked instead)")
    try:
        _check_deflated(path, limits)
        ds, forced = _read_header(path)
        return _slice_header(path, ds, forced, limits, verify_pixels)
    except (SkipFile, OSError):
        raise
    except Exception as exc:  # pydicom parses values lazily: a malformed element raises on first use
        raise SkipFile(f"malformed DICOM element ({type(exc).__name__}: {exc})") from None


def _slice_header(path: Path, ds: Dataset, forced: bool, limits: ScanLimits, verify_pixels: bool) -> SliceHeader:
    _check_image(ds, limits)
    orientation = _float_list(ds, "ImageOrientationPatient", 6)
    position = _float_list(ds, "ImagePositionPatient", 3)
    if orientation is None or position is None:
        raise SkipFile("no usable ImageOrientationPatient/ImagePositionPatient: cannot place the slice")
    try:
        slice_normal(orientation)
    except ValueError as exc:
        raise SkipFile(str(exc)) from None
    spacing = _float_list(ds, "PixelSpacing", 2)
    if spacing is None or min(spacing) <= 0:
        raise SkipFile("no usable PixelSpacing: areas in mm² would be meaningless")
    for keyword in ("SOPInstanceUID", "SeriesInstanceUID"):
        if not str(ds.get(keyword, "")).strip():
            raise SkipFile(f"missing {keyword}")
    if verify_pixels:
        _check_pixel_data(path, ds, forced)
    try:
        instance = int(ds.get("InstanceNumber"))
    except (TypeError, ValueError):
        instance = None
    return SliceHeader(
        path=path,
        sop_uid=str(ds.SOPInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        study_uid=str(ds.get("StudyInstanceUID", "")),
        instance_number=instance,
        image_position=tuple(position),
        image_orientation=tuple(orientation),
        pixel_spacing=(spacing[0], spacing[1]),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        series_description=str(ds.get("SeriesDescription", "") or ""),
        echo_time=_optional_float(ds, "EchoTime"),
        repetition_time=_optional_float(ds, "RepetitionTime"),
        slice_thickness=_optional_float(ds, "SliceThickness"),
        transfer_syntax=str(transfer_syntax(ds)),
        read_with_force=forced,
        frame_of_reference=str(ds.get("FrameOfReferenceUID", "") or ""),
        image_type=_image_type(ds),
    )


def _image_type(ds) -> tuple[str, ...]:
    value = ds.get("ImageType")
    if value is None:
        return ()
    values = [value] if isinstance(value, str) else value  # one value, or pydicom's MultiValue
    return tuple(str(v).strip().upper() for v in values)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def iter_files(root: Path) -> tuple[list[Path], list[SkippedFile]]:
    """Every regular file under ``root`` in a stable order (each folder's files, then its
    subfolders), following symbolic links: archives and research exports are often link farms.
    Each real folder is read once, so link cycles end; links to nothing, to pipes or to devices
    are skipped with the reason (nothing but regular files is ever opened, so nothing blocks)."""
    found: list[Path] = []
    skipped: list[SkippedFile] = []
    seen: set[tuple[int, int]] = set()

    def visit(folder: Path) -> None:
        info = folder.stat()
        if (info.st_dev, info.st_ino) in seen:
            skipped.append(SkippedFile(folder, "symbolic link to a folder already read (a link cycle)"))
            return
        seen.add((info.st_dev, info.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            skipped.append(SkippedFile(folder, f"cannot list folder ({exc.strerror or exc})"))
            return
        folders = []
        for entry in entries:
            path = Path(entry.path)
            try:
                mode = path.stat().st_mode  # follows links
            except FileNotFoundError:
                skipped.append(SkippedFile(path, "broken symbolic link (its target does not exist)"))
                continue
            except OSError as exc:
                reason = "symbolic link loop" if exc.errno == errno.ELOOP else f"cannot read ({exc.strerror or exc})"
                skipped.append(SkippedFile(path, reason))
                continue
            if stat.S_ISDIR(mode):
                folders.append(path)
            elif stat.S_ISREG(mode):
                found.append(path)
            else:
                skipped.append(SkippedFile(path, _kind(mode)))
        for sub in folders:
            visit(sub)

    visit(root)
    return found, skipped


def scan_study(
    root: Path | str,
    series_uid: str | None = None,
    limits: ScanLimits = ScanLimits(),
    sagittal_uid: str | None = None,
    progress: bool = False,
    verify_pixels: bool = True,
) -> StudyScan:
    """Read every file under ``root``; group images into series; select the series to grade.

    ``verify_pixels`` reads each file once more to catch truncated pixel data: a dry run needs
    that to list them; callers that decode the pixels next turn it off, since decoding reports
    such a file anyway and the extra read would be paid on every slice.
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")
    by_series: dict[str, list[SliceHeader]] = defaultdict(list)
    files, skipped = iter_files(root)
    for path in tqdm(files, desc=f"reading {root.name}", unit="file", disable=None if progress else True):
        try:
            header = read_slice_header(path, limits, verify_pixels)
        except SkipFile as exc:
            skipped.append(SkippedFile(path, str(exc)))
            continue
        except OSError as exc:
            skipped.append(SkippedFile(path, f"cannot read file ({exc.strerror or exc})"))
            continue
        by_series[header.series_uid].append(header)
    series = [_dedupe(Series.from_slices(uid, slices), skipped) for uid, slices in sorted(by_series.items())]
    selected = select_series(series, series_uid)
    return StudyScan(root=root, series=series, skipped=skipped, selected=selected,
                     localizer=select_localizer(series, selected, sagittal_uid))


def _dedupe(series: Series, skipped: list[SkippedFile]) -> Series:
    """Drop repeated copies of one SOP instance (a study copied twice into one folder)."""
    seen: set[str] = set()
    kept = []
    for s in series.slices:
        if s.sop_uid in seen:
            skipped.append(SkippedFile(s.path, f"duplicate of SOP instance {s.sop_uid}"))
        else:
            seen.add(s.sop_uid)
            kept.append(s)
    series.slices = kept
    return series
