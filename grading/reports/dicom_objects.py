"""DICOM outputs that PACS viewers show next to the study: a SEG of the dural sac masks and an
SR measurement report (TID 1500) with each graded slice's sac area and Schizas grade.

Codes: SNOMED CT and UCUM from pydicom's dictionaries where a concept exists there; the dural sac
and the Schizas grades have no such code, so they use a private scheme ``99LSS`` (DICOM PS3.16
allows local schemes with the ``99`` prefix) declared in the objects' coding-scheme list.
"""
from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from grading.deidentify import deidentify_dataset
from grading.pipeline import StudyGrading

SCHEME = "99LSS"
DURAL_SAC = Code("DURALSAC", SCHEME, "Dural sac")
SCHIZAS_GRADE = Code("SCHIZAS", SCHEME, "Schizas stenosis grade")
SPINAL_LEVEL = Code("SPLEVEL", SCHEME, "Spinal canal content")
GRADE_CODES = {
    "A": Code("SCHIZAS-A", SCHEME, "Schizas A: no or minor stenosis"),
    "B": Code("SCHIZAS-B", SCHEME, "Schizas B: moderate stenosis"),
    "C": Code("SCHIZAS-C", SCHEME, "Schizas C: severe stenosis"),
    "D": Code("SCHIZAS-D", SCHEME, "Schizas D: extreme stenosis"),
}
LEVEL_CODES = {"rootlet": Code("ROOTLETS", SCHEME, "Nerve rootlets (cauda equina)"),
               "cord": codes.SCT.SpinalCord}
MANUFACTURER = "lss-grading"


def level_code(name: str) -> Code | None:
    """The level's SNOMED CT code ('L4/L5' a disc, 'L4' a vertebra, 'S1' the sacrum); a private
    code for what SNOMED does not name (L6, a transitional vertebra); None for a name that is no
    level (the axial-only 'window 3')."""
    if name == "S1":
        return codes.SCT.Sacrum
    parts = name.split("/")
    if not all(len(p) >= 2 and p[0] in "TLS" and p[1:].isdigit() for p in parts):
        return None
    attribute = "".join(parts) + "Disc" if len(parts) == 2 else f"{name}Vertebra"
    return getattr(codes.SCT, attribute, None) or Code(f"LEVEL-{name.replace('/', '-')}", SCHEME, f"Level {name}")
SOFTWARE_VERSION = "0.1.0"


def _algorithm() -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(name="lss-grading", version=SOFTWARE_VERSION,
                                              family=codes.cid7162.ArtificialIntelligence)


#: Type 2 attributes of the Patient and General Study modules that highdicom copies from the
#: source images into a SEG or SR. Anonymised exports often drop them; DICOM then wants them
#: present and empty, which is what the outputs get.
TYPE2_FROM_SOURCE = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                     "ReferringPhysicianName", "AccessionNumber", "StudyID")


def _sources(result: StudyGrading) -> list[pydicom.Dataset]:
    """Source image headers (no pixels) in series order, with absent Type 2 attributes empty."""
    sources = [pydicom.dcmread(h.path, stop_before_pixels=True, force=h.read_with_force) for h in result.headers]
    for ds in sources:
        for keyword in TYPE2_FROM_SOURCE:
            if keyword not in ds or ds[keyword].value is None:
                setattr(ds, keyword, "")
    return sources


def _orientation_groups(sources: list[pydicom.Dataset], frames: list[int]) -> list[list[int]]:
    """Frames grouped by their source's orientation, in series order: a SEG instance holds one
    orientation (highdicom's rule), so a series of stacks angled to each disc needs one per stack."""
    groups: dict[tuple, list[int]] = {}
    for i in frames:
        groups.setdefault(tuple(np.round(np.asarray(sources[i].ImageOrientationPatient, float), 4)), []).append(i)
    return list(groups.values())


def build_segmentation(result: StudyGrading, sources: list[pydicom.Dataset]) -> list[hd.seg.Segmentation]:
    """The dural sac as DICOM SEG: one instance per orientation in the series (one for an
    ordinary stack, one per disc for angled stacks), all in one SEG series."""
    frames = [i for i, m in enumerate(result.sac_masks) if m is not None and m.any()]
    if not frames:
        return []
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="dural sac",
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=DURAL_SAC,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=_algorithm(),
        anatomic_regions=[codes.SCT.SpinalCanalStructure],
    )
    series_uid = hd.UID()
    return [hd.seg.Segmentation(
        source_images=[sources[i] for i in group],
        pixel_array=np.stack([result.sac_masks[i] for i in group]).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=series_uid,
        series_number=9901,
        sop_instance_uid=hd.UID(),
        instance_number=number,
        manufacturer=MANUFACTURER,
        manufacturer_model_name="dural sac segmenter",
        software_versions=SOFTWARE_VERSION,
        device_serial_number="0",
        series_description="Dural sac (lss-grading)",
    ) for number, group in enumerate(_orientation_groups(sources, frames), start=1)]


SR_FILE = "measurements_sr.dcm"


def build_measurement_report(result: StudyGrading, sources: list[pydicom.Dataset]) -> list[hd.sr.Comprehensive3DSR]:
    """Per-slice and per-level findings as a Comprehensive 3D SR (none when nothing was found)."""
    groups = []
    for i, (row, source) in enumerate(zip(result.slices, sources)):
        if row["level"] == "no canal" or row["box_x0"] is None:
            continue
        x0, y0, x1, y1 = row["box_x0"], row["box_y0"], row["box_x1"], row["box_y1"]
        region = hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], float),
            source_image=hd.sr.SourceImageForRegion.from_source_image(source),
        )
        measurements = []
        if row["dsca_mm2"] is not None:
            measurements.append(hd.sr.Measurement(name=codes.SCT.Area, value=float(row["dsca_mm2"]),
                                                  unit=codes.UCUM.SquareMillimeter, algorithm_id=hd.sr.AlgorithmIdentification(
                                                      name="lss-grading segmenter", version=SOFTWARE_VERSION)))
        evaluations = [hd.sr.QualitativeEvaluation(SPINAL_LEVEL, LEVEL_CODES[row["level"]])]
        if row["grade"]:
            evaluations.append(hd.sr.QualitativeEvaluation(SCHIZAS_GRADE, GRADE_CODES[row["grade"]]))
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"slice {i + 1} canal"),
            referenced_region=region,
            finding_type=codes.SCT.Stenosis,
            finding_sites=[hd.sr.FindingSite(codes.SCT.SpinalCanalStructure)],
            measurements=measurements or None,
            qualitative_evaluations=evaluations,
        ))
    groups += _level_groups(result)
    if not groups:
        return []
    context = hd.sr.ObservationContext(observer_person_context=None, observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(uid=hd.UID(), name=MANUFACTURER)))
    report = hd.sr.MeasurementReport(observation_context=context, procedure_reported=codes.cid100.MRIUnspecifiedBodyRegion,
                                     imaging_measurements=groups)
    return [hd.sr.Comprehensive3DSR(evidence=sources, content=report[0], series_instance_uid=hd.UID(),
                                    series_number=9902, sop_instance_uid=hd.UID(), instance_number=1,
                                    manufacturer=MANUFACTURER, series_description="Stenosis grading (lss-grading)")]


def _level_groups(result: StudyGrading) -> list:
    """A finding group per named level: its code as the finding site, its worst grade, its
    smallest sac area."""
    groups = []
    for level in result.levels:
        code = level_code(level["level"])
        if code is None or not level["worst_grade"] and level["min_dsca_mm2"] is None:
            continue
        measurements = None
        if level["min_dsca_mm2"] is not None:
            measurements = [hd.sr.Measurement(name=codes.SCT.Area, value=float(level["min_dsca_mm2"]),
                                              unit=codes.UCUM.SquareMillimeter)]
        evaluations = [hd.sr.QualitativeEvaluation(SCHIZAS_GRADE, GRADE_CODES[level["worst_grade"]])] \
            if level["worst_grade"] else None
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"level {level['level']}"),
            finding_type=codes.SCT.Stenosis, finding_sites=[hd.sr.FindingSite(code)],
            measurements=measurements, qualitative_evaluations=evaluations))
    return groups


def seg_file_names(count: int) -> list[str]:
    """``dural_sac_seg.dcm`` for one SEG instance; ``dural_sac_seg_1.dcm``... for one per stack."""
    return ["dural_sac_seg.dcm"] if count == 1 else [f"dural_sac_seg_{k}.dcm" for k in range(1, count + 1)]


def write_dicom_objects(result: StudyGrading, folder: Path, deidentify: bool = False
                        ) -> tuple[dict[str, Path], list[dict[str, str]]]:
    """Write the SEG and the SR; each is built on its own, so one that cannot be built (its
    reason in one line) never costs the other. Returns (written, by file name; failures)."""
    sources = _sources(result)
    written, failures = {}, []
    for output, build, file_names in (("dural_sac_seg.dcm", build_segmentation, seg_file_names),
                                      (SR_FILE, build_measurement_report, lambda n: [SR_FILE] * n)):
        paths = []
        try:
            datasets = build(result, sources)
            for dataset, name in zip(datasets, file_names(len(datasets))):
                if deidentify:
                    deidentify_dataset(dataset)
                paths.append(folder / name)
                dataset.save_as(paths[-1])
        except Exception as exc:  # highdicom validates deeply; any failure is this output's alone
            for path in paths:
                path.unlink(missing_ok=True)
            failures.append({"output": output, "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"})
            continue
        written.update({path.name: path for path in paths})
    return written, failures
