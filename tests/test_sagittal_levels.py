"""Level names from the sagittal series: geometry of the crossing, the counting rules, the
fallback, and the SR's per-level groups."""
from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from study_factory import untrained_bundle

from grading.dicom import scan_study
from grading.dicom.series import SliceHeader
from grading.levels import assign_levels
from grading.reports.dicom_objects import level_code
from grading.reports.localizer import crossing_line
from grading.sagittal_levels import Structure, name_structures


def _header(position, orientation, rows=100, cols=100, spacing=(1.0, 1.0)) -> SliceHeader:
    return SliceHeader(path=Path("x"), sop_uid="1", series_uid="1", study_uid="1", instance_number=1,
                       image_position=tuple(position), image_orientation=tuple(orientation), pixel_spacing=spacing,
                       rows=rows, columns=cols)


def test_axial_plane_crosses_the_sagittal_slice_where_both_planes_meet():
    sagittal = _header((0.0, -50.0, 50.0), (0, 1, 0, 0, 0, -1), spacing=(0.8, 0.9))
    tilt = np.deg2rad(20)
    axial = _header((-40.0, -40.0, 10.0), (1, 0, 0, 0, np.cos(tilt), np.sin(tilt)))
    rows, cols = crossing_line(sagittal, axial)
    assert len(rows) > 10
    # Display frame of a sagittal slice stored (0,1,0 / 0,0,-1) is the stored frame.
    points = (np.asarray(sagittal.image_position) + cols[:, None] * 0.9 * np.array([0, 1, 0])
              + rows[:, None] * 0.8 * np.array([0, 0, -1]))
    assert np.allclose((points - axial.centre) @ axial.normal, 0, atol=1e-6)  # on the axial plane
    assert np.allclose(points[:, 0], 0.0)  # and on the sagittal one
    assert crossing_line(sagittal, _header((0, 0, 0), (0, 1, 0, 0, 0, -1))) is None  # parallel planes


def _column(n_lumbar: int, thoracic_in_view: int = 2, sacrum: bool = True, degenerate_l5: bool = False,
            lumbar_disc_mm: float = 10.0):
    """Bodies (27 mm lumbar, 21 mm thoracic) and discs (``lumbar_disc_mm``, 5.5 mm thoracic)
    stacked along z, each a half-millimetre grid of points 30 mm deep in the sagittal plane."""
    structures, z = [], 0.0

    def block(kind, height):
        nonlocal z
        y, zz = np.meshgrid(np.arange(-40, -10, 0.5) + 0.25, z + np.arange(0, height, 0.5) + 0.25)
        points = np.column_stack([np.zeros(y.size), y.ravel(), zz.ravel()])
        structures.append(Structure(kind, points, pixel_area=0.25))
        z += height

    if sacrum:
        block("sacrum", 60)
    for k in range(n_lumbar):
        block("disc", 4.0 if (degenerate_l5 and k == 0) else lumbar_disc_mm)
        block("body", 27)
    for _ in range(thoracic_in_view):
        block("disc", 5.5)
        block("body", 21)
    return sorted(structures, key=lambda s: -s.centre[2])


def _names(structures):
    return [s.name for s in structures]


def test_five_lumbar_vertebrae_are_named_and_sure():
    structures = _column(5)
    naming = name_structures(structures)
    assert naming.sure and not naming.flags and naming.lumbar_count == 5
    assert _names(structures) == ["T11", "T11/T12", "T12", "T12/L1", "L1", "L1/L2", "L2", "L2/L3", "L3", "L3/L4", "L4",
                                  "L4/L5", "L5", "L5/S1", "S1"]


@pytest.mark.parametrize("n", [6, 4])
def test_four_or_six_lumbar_vertebrae_are_named_from_the_junction_only_on_strong_evidence(n, monkeypatch):
    from grading import sagittal_levels

    def posterior_of(p_transitional):
        return lambda column: {n: p_transitional, 5: 1 - p_transitional, 10 - n: 0.0}

    monkeypatch.setattr(sagittal_levels, "lumbar_count_posterior", posterior_of(0.95))
    structures = _column(n)
    naming = name_structures(structures)
    assert not naming.sure and naming.lumbar_count == n and "transitional" in naming.flags[0]
    names = _names(structures)
    assert names[:5] == ["T11", "T11/T12", "T12", "T12/L1", "L1"]
    assert names[-3:] == [f"L{n}", f"L{n}/S1", "S1"]
    # Likelier than five, but not by enough: named as five, counted up from the sacrum, and flagged.
    monkeypatch.setattr(sagittal_levels, "lumbar_count_posterior", posterior_of(0.7))
    structures = _column(n)
    naming = name_structures(structures)
    assert naming.lumbar_count is None and "cannot be excluded" in naming.flags[0]
    assert _names(structures)[-3:] == ["L5", "L5/S1", "S1"]


def test_without_the_junction_in_view_levels_count_up_from_the_sacrum_with_a_flag():
    structures = _column(5, thoracic_in_view=0)[2:]  # the view starts in L2
    naming = name_structures(structures)
    assert naming.lumbar_count is None and "T12/L1 not clear in view" in naming.flags[0] and naming.sure
    assert _names(structures)[-3:] == ["L5", "L5/S1", "S1"]
    # A thin degenerate L5/S1 disc at the bottom is not taken for the thoracolumbar junction.
    structures = _column(5, degenerate_l5=True)
    assert name_structures(structures).flags == [] and _names(structures)[-2] == "L5/S1"


def test_thin_degenerate_lumbar_discs_do_not_move_the_junction():
    """Every lumbar disc as thin as a thoracic one: the bodies still tell lumbar from thoracic."""
    structures = _column(5, lumbar_disc_mm=6.0)
    naming = name_structures(structures)
    assert naming.lumbar_probabilities[5] > 0.9 and naming.sure
    assert _names(structures)[:5] == ["T11", "T11/T12", "T12", "T12/L1", "L1"]


def test_the_lumbar_count_weighs_every_height_in_view():
    """Thoracic-short bodies above four lumbar ones make four likely; the top structure, perhaps
    cut by the field of view, does not vote; with no thoracic level in view the prior stands."""
    from grading.sagittal_levels import LUMBAR_PRIOR, lumbar_count_posterior

    def above_sacrum(structures):
        return [s for s in structures if s.kind != "sacrum"]

    for n in (4, 6):  # the heights next to the junction move the count away from the prior's five
        posterior = lumbar_count_posterior(above_sacrum(_column(n)))
        assert max(posterior, key=posterior.get) == n and posterior[n] > 0.5
    assert lumbar_count_posterior(above_sacrum(_column(5)))[5] > 0.99
    whole = above_sacrum(_column(5, thoracic_in_view=0))  # L1 at the top of the view
    cut = above_sacrum(_column(5, thoracic_in_view=0))
    cut[0].points = cut[0].points[cut[0].points[:, 2] > cut[0].points[:, 2].max() - 20]  # as short as T12
    assert lumbar_count_posterior(cut) == pytest.approx(lumbar_count_posterior(whole), abs=1e-6)
    only_lumbar = above_sacrum(_column(5, thoracic_in_view=0))[2:]
    assert lumbar_count_posterior(only_lumbar) == pytest.approx(LUMBAR_PRIOR, abs=0.04)


def test_a_tilted_body_measures_its_own_height():
    """Mean heights are taken along the spine's local axis, not the scanner's z: a column
    tilted 30 degrees in the sagittal plane measures as the upright one."""
    from grading.sagittal_levels import _heights

    upright = [s for s in _column(5) if s.kind != "sacrum"]
    angle = np.deg2rad(30)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    tilted = [Structure(s.kind, s.points @ rotation.T, pixel_area=s.pixel_area) for s in upright]
    heights = _heights(upright)
    assert heights[1:-1] == pytest.approx(_heights(tilted)[1:-1], rel=0.03)
    assert heights[2] == pytest.approx(21, abs=1) and heights[6] == pytest.approx(27, abs=1)
    assert heights[3] == pytest.approx(5.5, abs=0.6) and heights[5] == pytest.approx(10, abs=0.6)


def test_a_disc_in_pieces_is_one_disc():
    structures = _column(5)
    disc = next(k for k, s in enumerate(structures) if s.kind == "disc" and s.centre[2] < 100)
    piece = structures[disc]
    front, back = piece.points[piece.points[:, 1] < -25], piece.points[piece.points[:, 1] >= -25]
    structures[disc:disc + 1] = [Structure("disc", front, pixel_area=0.25), Structure("disc", back, pixel_area=0.25)]
    naming = name_structures(structures)
    assert naming.sure and naming.lumbar_count == 5 and sum(s.kind == "disc" for s in structures) == 7
    assert [n for n in _names(structures) if "/" in n] == ["T11/T12", "T12/L1", "L1/L2", "L2/L3", "L3/L4", "L4/L5",
                                                            "L5/S1"]


def test_structures_off_the_column_are_not_counted():
    """A spinous process taken for a body, 45 mm behind the column, changes no name."""
    reference = _column(5)
    name_structures(reference)
    structures = _column(5)
    l3 = next(s for s in structures if s.kind == "body" and 100 < s.centre[2] < 140)
    structures.append(Structure("body", l3.points + np.array([0.0, 45.0, 0.0])))
    structures.sort(key=lambda s: -s.centre[2])
    assert name_structures(structures).sure and _names(structures) == _names(reference)


def test_no_sacrum_no_names():
    structures = _column(5, sacrum=False)
    naming = name_structures(structures)
    assert not naming.sure and "sacrum not in view" in naming.flags and not any(s.name for s in structures)


def _sagittal_column(spacing: float = 0.8):
    """A mid-sagittal slice (LPS: columns run posteriorly, rows down) whose class map holds the
    sacrum below z = 0 and, above it, discs of 10 mm and bodies of 26 mm in front of the canal
    (y from -40 to 0 mm); returns its header, one-hot probabilities (display frame) and the
    boundaries (z mm, name below, name above)."""
    header = _header((0.0, -100.0, 200.0), (0, 1, 0, 0, 0, -1), rows=400, cols=300, spacing=(spacing, spacing))
    z = 200.0 - spacing * np.arange(400)[:, None]
    y = -100.0 + spacing * np.arange(300)[None, :]
    classes = np.zeros((400, 300), np.uint8)
    names = ["S1"] + [n for k in range(5, 0, -1) for n in (f"L{k}/{'S1' if k == 5 else f'L{k + 1}'}", f"L{k}")]
    kinds = ["sacrum"] + ["disc", "body"] * 5
    tops = np.cumsum([0.0] + [10.0, 26.0] * 5)
    column = (y >= -40) & (y < 0)
    classes[column & (z < 0) & (z > -50)] = 3
    for kind, lo, hi in zip(kinds[1:], tops[:-1], tops[1:]):
        classes[column & (z >= lo) & (z < hi)] = 1 if kind == "body" else 2
    probabilities = np.eye(4, dtype=np.float32)[header.display.apply(classes)].transpose(2, 0, 1)
    boundaries = [(float(b), below, above) for b, below, above in zip(tops[:-1], names[:-1], names[1:])]
    return header, probabilities, boundaries


def test_axial_names_are_read_in_front_of_the_canal_between_pixels():
    """Planes half a millimetre either side of each disc-body boundary (less than a pixel), flat
    or tilted 20 degrees, take the name of the side they cross just in front of the canal."""
    from grading.sagittal_levels import locate

    sagittal, probabilities, boundaries = _sagittal_column()
    localization = locate([sagittal], [probabilities])
    assert [s.name for s in localization.structures][-3:] == ["L5", "L5/S1", "S1"]
    for tilt_deg in (0.0, 20.0):
        tilt = np.deg2rad(tilt_deg)
        row, col = np.array([1.0, 0, 0]), np.array([0, np.cos(tilt), np.sin(tilt)])
        for z, below, above in boundaries:
            for offset, name in ((-0.5, below), (0.5, above)):
                through = np.array([0.0, -1.0, z + offset])  # a millimetre in front of the canal
                header = _header(through - 50 * row - 50 * col, (*row, *col))
                assert localization.name_of(header) == name, (tilt_deg, z + offset)
    assert localization.name_of(_header((-50, -60, 500.0), (1, 0, 0, 0, 1, 0))) is None  # above the view
    assert localization.name_of(_header((-50, -60, 0.0), (0, 1, 0, 0, 0, -1))) is None  # parallel to it


def test_without_a_localizer_levels_fall_back_to_the_axial_series(tmp_path):
    from study_factory import phantom_series

    series, _ = phantom_series(tmp_path, matrix=64, n_slices=6)
    scan = scan_study(series)
    assignment = assign_levels(scan.selected.slices, scan.selected.positions_mm())
    assert assignment.source == "axial" and "contiguous" in assignment.method


def test_level_codes():
    assert level_code("L4/L5").value == "84020006" and level_code("L3").value == "36470004"
    assert level_code("S1").value == "54735007"
    assert level_code("L6").scheme_designator == "99LSS" and level_code("window 2") is None


@pytest.fixture(scope="module")
def study_with_sagittal(tmp_path_factory):
    from grading.phantom.cohort import CohortConfig, generate_cohort

    root = tmp_path_factory.mktemp("sag")
    generate_cohort(root, CohortConfig(patients=1, seed=21, workers=1, axial_presets={"t2_tse": 1.0}), progress=False)
    return root


def test_grade_study_names_levels_on_the_sagittal_series(study_with_sagittal, tmp_path, monkeypatch):
    """With a locator that sees exactly the phantom's column, the axial slices are named as the
    phantom's truth, the SR carries a group per named level, and the report shows the localizer."""
    from grading import pipeline
    from grading.cli.study import main as grade_study

    root = study_with_sagittal
    column = pd.read_csv(root / "column.csv", keep_default_na=False).set_index("sop_uid")

    def perfect(model, configs, headers, images, device="cpu"):
        probabilities = []
        for header in headers:
            classes = header.display.apply(np.asarray(Image.open(root / column.loc[header.sop_uid, "classes"])))
            probabilities.append(np.eye(4, dtype=np.float32)[classes].transpose(2, 0, 1))
        return pipeline.locate(headers, probabilities)

    monkeypatch.setattr(pipeline, "localize", perfect)
    bundle = untrained_bundle(tmp_path / "bundle", with_locator=True)
    assert grade_study([str(root / "dicom" / "PH0001"), "--models", str(bundle), "-o", str(tmp_path / "out")]) == 0
    slices = pd.read_csv(tmp_path / "out" / "slices.csv", keep_default_na=False)
    truth = pd.read_csv(root / "labels.csv", keep_default_na=False)
    truth = truth[truth.rater == "truth"].set_index("sop_uid").spinal_level
    lumbar = slices[slices.sop_uid.map(truth).str.match(r"^L\d")]
    assert len(lumbar) > 10 and (lumbar.level_name == lumbar.sop_uid.map(truth)).mean() >= 0.95
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["level_source"] == "sagittal" and (tmp_path / "out" / "localizer.png").is_file()
    lumbar = json.loads((root / "cohort.json").read_text())["patients"][0]["lumbar_vertebrae"]
    assert report["lumbar_vertebrae"]["count"] in (lumbar, None)
    assert sum(report["lumbar_vertebrae"]["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    assert "localizer.png" in (tmp_path / "out" / "report.html").read_text()
    sr = hd.sr.srread(tmp_path / "out" / "measurements_sr.dcm")

    def items(sequence):
        for item in sequence:
            yield item
            yield from items(item.get("ContentSequence", []))

    sites = {item.ConceptCodeSequence[0].CodeValue for item in items(sr.ContentSequence)
             if item.ConceptNameCodeSequence[0].CodeValue == "363698007" and "ConceptCodeSequence" in item}
    levels = pd.read_csv(tmp_path / "out" / "levels.csv", keep_default_na=False)
    graded = [level_code(name).value for name in levels.level[levels.worst_grade != ""] if level_code(name)]
    assert graded and set(graded) <= sites
