"""--deidentify: what grade-study's outputs may still carry about the patient.

DICOM objects follow PS3.15's Basic Application Level Confidentiality Profile with the Retain
UIDs Option (113110): patient, study-date and institution attributes are emptied or removed,
and the UIDs stay so the SR and SEG still point at their source images. Names that come from
the study folder (report title, output folder) become a pseudonym derived from the Study
Instance UID, which the outputs keep anyway; paths of skipped files are withheld.
"""
from __future__ import annotations

import hashlib

import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

#: Type 2 in the modules highdicom writes: kept, with no value (the profile's 'Z').
EMPTIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
           "AccessionNumber", "ReferringPhysicianName", "StudyID")
#: Removed where present (the profile's 'X').
REMOVED = ("PatientAge", "PatientSize", "PatientWeight", "PatientBirthTime", "PatientAddress", "PatientComments",
           "PatientTelephoneNumbers", "PatientMotherBirthName", "OtherPatientIDs", "OtherPatientNames",
           "OtherPatientIDsSequence", "IssuerOfPatientID", "EthnicGroup", "MilitaryRank", "BranchOfService",
           "MedicalRecordLocator", "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
           "OperatorsName", "PerformingPhysicianName", "NameOfPhysiciansReadingStudy", "RequestingPhysician",
           "PhysiciansOfRecord", "AdmittingDiagnosesDescription", "AdditionalPatientHistory", "StationName",
           "SeriesDate", "SeriesTime", "AcquisitionDate", "AcquisitionTime", "AcquisitionDateTime",
           "StudyDescription", "RequestAttributesSequence", "ReferencedPatientSequence")
METHOD = "lss-grading --deidentify: PS3.15 Basic Application Level Confidentiality Profile, Retain UIDs Option"


def study_pseudonym(study_uid: str) -> str:
    """A stable, non-identifying name for a study (the UID itself is kept in the outputs)."""
    return "study-" + hashlib.sha256(study_uid.encode()).hexdigest()[:12]


def deidentify_dataset(ds: Dataset) -> Dataset:
    """Empty or remove the identifying attributes everywhere in ``ds`` (nested sequences too)."""
    _scrub(ds)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    method_codes = []
    for code in (codes.DCM.BasicApplicationConfidentialityProfile, codes.DCM.RetainUidsOption):
        item = pydicom.Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, code.scheme_designator, code.meaning
        method_codes.append(item)
    ds.DeidentificationMethodCodeSequence = method_codes
    return ds


def _scrub(dataset: Dataset) -> None:
    for keyword in EMPTIED:
        if keyword in dataset:
            dataset[keyword].value = None
    for keyword in REMOVED:
        if keyword in dataset:
            del dataset[keyword]
    for element in list(dataset):
        if element.VR == "SQ":
            for item in element.value:
                _scrub(item)
