"""Write single-frame MR Image Storage slices (phantom cohorts and test studies)."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    MRImageStorage,
)

from stages.atomic import write_atomic

_UID_NAMESPACE = uuid.UUID("6f0e3a51-4c1b-5d9e-9a57-2b5f7c1d0e84")


def stable_uid(*parts: object) -> str:
    """A DICOM UID that is a function of ``parts`` (a name-based UUID under the 2.25 root).

    Phantom cohorts must be identical for a seed, so their UIDs cannot be random.
    """
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, chr(31).join(str(p) for p in parts)).int}"


@dataclass
class MRSliceSpec:
    """Everything that varies between the MR slices we write."""

    patient_id: str
    patient_name: str
    study_uid: str
    series_uid: str
    sop_uid: str
    frame_of_reference_uid: str
    series_number: int
    instance_number: int
    image_position: tuple[float, float, float]
    image_orientation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    pixel_spacing: tuple[float, float] = (0.7, 0.7)
    slice_thickness: float = 4.0
    spacing_between: float | None = None  # centre to centre; default: the slice thickness
    series_description: str = "AX T2 TSE"
    echo_time: float = 100.0
    repetition_time: float = 4000.0
    study_date: str = "20260101"
    rescale: tuple[float, float] | None = None  # (slope, intercept)
    extra: dict = field(default_factory=dict)


def mr_dataset(pixels: np.ndarray, spec: MRSliceSpec, bits_stored: int = 12) -> Dataset:
    """An MR Image Storage dataset holding ``pixels`` (unsigned, < 2**bits_stored)."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or pixels.min() < 0 or pixels.max() >= 2**bits_stored:
        raise ValueError(f"pixels must be 2-D and within 0..{2**bits_stored - 1}")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = spec.sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = spec.sop_uid
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = spec.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = ""
    ds.Modality = "MR"
    ds.Manufacturer = "grade-phantom"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "LUMBAR SPINE"
    ds.SeriesDescription = spec.series_description
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.BodyPartExamined = "LSPINE"
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "SK"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.SliceThickness = f"{spec.slice_thickness:g}"
    ds.SpacingBetweenSlices = f"{spec.spacing_between or spec.slice_thickness:g}"
    ds.RepetitionTime = f"{spec.repetition_time:g}"
    ds.EchoTime = f"{spec.echo_time:g}"
    ds.MagneticFieldStrength = "1.5"
    ds.StudyInstanceUID = spec.study_uid
    ds.SeriesInstanceUID = spec.series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = spec.series_number
    ds.InstanceNumber = spec.instance_number
    ds.ImagePositionPatient = [f"{v:.4f}" for v in spec.image_position]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in spec.image_orientation]
    ds.FrameOfReferenceUID = spec.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelSpacing = [f"{v:.6f}" for v in spec.pixel_spacing]
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if spec.rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = (f"{v:g}" for v in spec.rescale)
        ds.RescaleType = "US"
    window = float(np.percentile(pixels[::4, ::4], 99.5))  # a display hint: a sample is plenty
    ds.WindowCenter = f"{window / 2:.0f}"
    ds.WindowWidth = f"{max(window, 1):.0f}"
    for keyword, value in spec.extra.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.astype("<u2").tobytes()
    return ds


def write_dataset(ds: Dataset, path: Path, **kwargs) -> None:
    """Write atomically: a reader never sees a half-written slice."""
    kwargs.setdefault("enforce_file_format", True)
    write_atomic(path, lambda tmp: ds.save_as(tmp, **kwargs))


