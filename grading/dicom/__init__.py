"""Reading whole DICOM studies: scan a folder, group series, pick the one to grade, load pixels."""
from grading.dicom.pixels import load_series_pixels
from grading.dicom.reader import ScanLimits, scan_study
from grading.dicom.series import Series, SkippedFile, SliceHeader, StudyScan

__all__ = [
    "ScanLimits",
    "Series",
    "SkippedFile",
    "SliceHeader",
    "StudyScan",
    "load_series_pixels",
    "scan_study",
]
