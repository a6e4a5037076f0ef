"""--deidentify: no patient identifier in any output file; the DICOM objects say how they were cleaned."""
from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from study_factory import phantom_series, untrained_bundle

from grading.cli.study import main as grade_study
from grading.deidentify import deidentify_dataset

IDENTIFIERS = {"PatientName": "DOE^JANE", "PatientID": "MRN483920", "PatientBirthDate": "19470312",
               "InstitutionName": "ST ELSEWHERE CLINIC", "AccessionNumber": "ACC99172", "StudyDate": "20240517",
               "ReferringPhysicianName": "HOUSE^GREGORY"}
NEEDLES = [b"DOE", b"JANE", b"MRN483920", b"19470312", b"ELSEWHERE", b"ACC99172", b"20240517", b"HOUSE"]


@pytest.fixture(scope="module")
def named_study(tmp_path_factory) -> Path:
    """A phantom series carrying identifiers, in a folder named after the patient."""
    root = tmp_path_factory.mktemp("phantom")
    series, _ = phantom_series(root, matrix=128, n_slices=6)
    study = root / "DOE_JANE_MRN483920"
    study.mkdir()
    for path in sorted(series.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        for keyword, value in IDENTIFIERS.items():
            setattr(ds, keyword, value)
        ds.save_as(study / path.name)
    (study / "notes.txt").write_text("not dicom")  # a skipped file, whose path would name the patient
    return study


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return untrained_bundle(tmp_path_factory.mktemp("bundle") / "bundle")


def _leaks(folder: Path) -> dict[str, list[bytes]]:
    found = {}
    for path in folder.rglob("*"):
        hits = [n for n in NEEDLES if n in path.name.encode() or (path.is_file() and n in path.read_bytes())]
        if hits:
            found[path.relative_to(folder).as_posix()] = hits
    return found


def test_outputs_name_the_patient_without_the_option(named_study, bundle, tmp_path):
    assert grade_study([str(named_study), "--models", str(bundle), "-o", str(tmp_path)]) == 0
    leaks = _leaks(tmp_path)
    assert "dural_sac_seg.dcm" in leaks and "report.json" in leaks  # so the test below can fail


def test_deidentified_outputs_carry_no_identifier(named_study, bundle, tmp_path, capsys):
    assert grade_study([str(named_study), str(named_study), "--models", str(bundle), "-o", str(tmp_path / "many"),
                        "--deidentify", "--json"]) == 0  # twice: outputs go in per-study folders
    assert _leaks(tmp_path) == {}
    assert not any(n in capsys.readouterr().out.encode() for n in NEEDLES)
    folders = sorted(p.name for p in (tmp_path / "many").iterdir())
    assert folders[0].startswith("study-") and len(folders) == 2
    for name in ("dural_sac_seg.dcm", "measurements_sr.dcm"):
        ds = pydicom.dcmread(tmp_path / "many" / folders[0] / name)
        assert ds.PatientIdentityRemoved == "YES" and ds.PatientName == "" and ds.PatientID == ""
        assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100", "113110"]
        assert "InstitutionName" not in ds
    sr = pydicom.dcmread(tmp_path / "many" / folders[0] / "measurements_sr.dcm")
    source = pydicom.dcmread(next(named_study.glob("*.dcm")))
    assert sr.StudyInstanceUID == source.StudyInstanceUID  # UIDs retained: the SR still finds its images


def test_deidentify_reaches_nested_sequences():
    ds = pydicom.Dataset()
    ds.PatientName = "DOE^JANE"
    item = pydicom.Dataset()
    item.PatientID, item.InstitutionName = "MRN483920", "ST ELSEWHERE CLINIC"
    ds.ReferencedStudySequence = [item]
    deidentify_dataset(ds)
    assert ds["PatientName"].is_empty and ds.ReferencedStudySequence[0]["PatientID"].is_empty
    assert "InstitutionName" not in ds.ReferencedStudySequence[0]
