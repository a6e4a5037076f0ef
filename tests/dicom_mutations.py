"""Hostile variants of a valid DICOM slice, and the check that the study reader survives them.

Used by tests/test_fuzz_reader.py (a short hypothesis run) and scripts/fuzz_reader.py (thousands
of seeded cases). Each mutation is a pure function of the valid file's bytes and a seeded RNG.
"""
from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from grading.dicom import load_series_pixels, scan_study
from grading.dicom.writer import MRSliceSpec, mr_dataset

Mutation = Callable[[bytes, np.random.Generator], bytes]


def valid_slice(rows: int = 32, columns: int = 32) -> pydicom.Dataset:
    image = (np.arange(rows * columns, dtype=np.float32).reshape(rows, columns) % 400) + 50
    spec = MRSliceSpec(patient_id="FUZZ", patient_name="FUZZ^CASE", study_uid="1.2.3.4", series_uid="1.2.3.4.5",
                       sop_uid="1.2.3.4.5.6", frame_of_reference_uid="1.2.3.4.7", series_number=1, instance_number=1,
                       image_position=(0.0, 0.0, 0.0), pixel_spacing=(0.7, 0.7), slice_thickness=4.0,
                       series_description="AX T2", echo_time=100.0, repetition_time=4000.0)
    return mr_dataset(image, spec)


def encode(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _element_offsets(data: bytes) -> list[int]:
    """Offsets of explicit-VR element tags in the data set (after the 132-byte preamble)."""
    return [i for i in range(132, len(data) - 8, 2) if data[i + 4:i + 6].isalpha() and data[i + 4:i + 6].isupper()]


def truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[:int(rng.integers(0, len(data)))]


def flip_bits(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    for position in rng.integers(0, len(out), size=int(rng.integers(1, 40))):
        out[position] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def absurd_length(data: bytes, rng: np.random.Generator) -> bytes:
    """An element's length field set to a huge or odd value."""
    offsets = _element_offsets(data)
    out = bytearray(data)
    at = offsets[int(rng.integers(len(offsets)))]
    value = int(rng.choice([0xFFFFFFFF, 0xFFFFFFF0, 0x7FFFFFFF, len(data) * 2 + 1, 3]))
    vr = bytes(out[at + 4:at + 6])
    if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"):
        out[at + 8:at + 12] = struct.pack("<I", value)
    else:
        out[at + 6:at + 8] = struct.pack("<H", value & 0xFFFF)
    return bytes(out)


def wrong_vr(data: bytes, rng: np.random.Generator) -> bytes:
    offsets = _element_offsets(data)
    out = bytearray(data)
    at = offsets[int(rng.integers(len(offsets)))]
    out[at + 4:at + 6] = [b"US", b"SQ", b"OB", b"DS", b"FD", b"AT", b"ZZ"][int(rng.integers(7))]
    return bytes(out)


def huge_image(data: bytes, rng: np.random.Generator) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.Rows, ds.Columns = int(rng.choice([0, 1, 65535, 40000])), int(rng.choice([0, 65535, 30000, 32]))
    if rng.random() < 0.5:
        ds.NumberOfFrames = int(rng.choice([0, 100000, 2**31 - 1]))
    return encode(ds)


def deflate_bomb(data: bytes, rng: np.random.Generator) -> bytes:
    """A Deflated Explicit VR file whose data set inflates to hundreds of megabytes."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = encode(ds)
    meta_end = 132 + 12 + struct.unpack("<I", head[140:144])[0]
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    # A private OB element announcing 2 GiB, then 80-320 MiB of zeros: ~0.1-0.3 MB on disk.
    body = compressor.compress(b"\x09\x00\x10\x00OB\x00\x00" + struct.pack("<I", 0x7FFFFFFE))
    zeros = bytes(1 << 20)
    for _ in range(int(rng.integers(80, 320))):  # MiB, past the 64 MiB default limit
        body += compressor.compress(zeros)
    return head[:meta_end] + body + compressor.flush()


def odd_transfer_syntax(data: bytes, rng: np.random.Generator) -> bytes:
    """The meta header claims a syntax (compressed, big endian, unknown) the data set is not in."""
    ds = pydicom.dcmread(io.BytesIO(data))
    meta = ds.file_meta
    meta.TransferSyntaxUID = str(rng.choice([
        "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.4.100", "1.2.3.4.5.6.7", "1.2.840.10008.1.2.1.99"]))
    new_meta = DicomBytesIO()
    write_file_meta_info(new_meta, meta, enforce_standard=True)
    old_meta_end = 132 + 12 + struct.unpack("<I", data[140:144])[0]
    return data[:132] + new_meta.getvalue() + data[old_meta_end:]


def wrong_pixel_length(data: bytes, rng: np.random.Generator) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.PixelData = ds.PixelData[:int(rng.integers(0, len(ds.PixelData)))] + b"\x00" * int(rng.integers(0, 3))
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return encode(ds)


MUTATIONS: dict[str, Mutation] = {f.__name__: f for f in (
    truncate, flip_bits, absurd_length, wrong_vr, huge_image, deflate_bomb, odd_transfer_syntax, wrong_pixel_length)}


def read_mutated(path: Path) -> str:
    """Scan and decode one mutated file as grade-study would: returns 'graded' or the skip reason.

    Any exception escaping here is a reader bug.
    """
    scan = scan_study(path.parent)
    if scan.skipped:
        return scan.skipped[0].reason
    if scan.selected is None:
        return "no gradable series"
    pixels = load_series_pixels(scan.selected)
    return pixels.skipped[0].reason if pixels.skipped else "graded"
