"""Choosing each slice's canal box with its neighbours (grading/canal_track.py), calling rootlet
or cord with one conus along the series, and what the report says of both."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fake_models import FixedBoxes

from grading.canal_track import (
    Candidate,
    TrackConfig,
    choose,
    continues,
    describe,
    head_to_foot,
    place,
    with_neighbours,
)
from grading.dicom.series import SliceHeader
from stages.detector import Detection
from stages.inference import InferenceSettings, predict_slices
from stages.profiles import quick
from stages.vocabulary import BOX_CONTINUITY, BOX_DROPPED, BOX_TOP

_ANYWHERE = InferenceSettings(midline_band=None)  # the fake detectors' boxes need not lie inside a body


def _canal(z: float, score: float, x: float = 0.0, y: float = 40.0) -> Candidate:
    return Candidate(score, (x, y, z))


def _straight(scores: list[float], step: float = 4.0) -> list[list[Candidate]]:
    return [[_canal(-k * step, s)] for k, s in enumerate(scores)]


def test_a_slice_alone_keeps_the_threshold_rule():
    far = [[_canal(0.0, 0.6)], [_canal(-100.0, 0.4)]]  # 100 mm apart: neither informs the other
    assert choose(far, [0, 1]) == [0, None]


def test_a_weak_box_between_confident_neighbours_is_kept():
    candidates = _straight([0.9, 0.3, 0.9])
    chosen = choose(candidates, [0, 1, 2])
    assert chosen == [0, 0, 0]
    assert describe(candidates, chosen, 0.5) == [BOX_TOP, BOX_CONTINUITY, BOX_TOP]
    # Without the bonus for continuing a neighbour, the weak box would be dropped as before.
    assert choose(candidates, [0, 1, 2], TrackConfig(bonus=0.0))[1] is None


def test_a_confident_box_off_the_canal_gives_way_to_the_one_that_continues_it():
    candidates = _straight([0.9, 0.9, 0.9, 0.9])
    aorta = _canal(-4.0, 0.95, y=-45.0)  # 85 mm in front of the canal, more confident than the canal box
    candidates[1] = [aorta, _canal(-4.0, 0.35)]
    chosen = choose(candidates, [0, 1, 2, 3])
    assert chosen == [0, 1, 0, 0]
    assert describe(candidates, chosen, 0.5)[1] == BOX_CONTINUITY


def test_a_confident_box_both_neighbours_contradict_is_dropped():
    candidates = _straight([0.9, 0.9, 0.9])
    candidates[1] = [_canal(-4.0, 0.95, x=50.0)]  # a kidney's worth to the side
    chosen = choose(candidates, [0, 1, 2])
    assert chosen == [0, None, 0]
    assert describe(candidates, chosen, 0.5) == [BOX_TOP, BOX_DROPPED, BOX_TOP]


def test_a_stray_box_between_empty_slices_still_meets_the_canal_above_and_below():
    # 8-mm slices: the canal boxed on the first and last, nothing on the second and fourth, and
    # a confident box beside a kidney on the middle one. It contradicts the canal 16 mm away.
    candidates = [[_canal(0.0, 0.9)], [], [_canal(-16.0, 0.64, x=45.0)], [], [_canal(-32.0, 0.9)]]
    assert choose(candidates, [0, 1, 2, 3, 4]) == [0, None, None, None, 0]
    # Beyond reach (slices 50 mm apart) the box is decided by its own score.
    apart = [[_canal(0.0, 0.9)], [], [_canal(-50.0, 0.64, x=45.0)], [], [_canal(-100.0, 0.9)]]
    assert choose(apart, [0, 1, 2, 3, 4]) == [0, None, 0, None, 0]


def test_order_not_storage_decides_the_neighbours():
    # Stored foot to head: slices 0 and 2 are neighbours of 1 only through the order given.
    candidates = [[_canal(-8.0, 0.9)], [_canal(-4.0, 0.3)], [_canal(0.0, 0.9)]]
    assert choose(candidates, [2, 1, 0]) == [0, 0, 0]


def test_continuity_allows_lordosis_and_scoliosis_but_not_a_jump():
    config = TrackConfig()
    assert continues([0, 40, 0], [3, 47, -4], config)  # 7 mm back over 4 mm: the lumbosacral bend
    assert not continues([0, 40, 0], [0, 20, -4], config)  # 20 mm forward over 4 mm: not the canal
    assert not continues([0, 40, 0], [25, 40, -4], config)  # 25 mm aside
    assert continues([0, 40, 0], [0, 0, -100], config) is None  # too far apart to say


def _header(orientation, position, rows=200, columns=200) -> SliceHeader:
    return SliceHeader(path=Path("x"), sop_uid="1", series_uid="1", study_uid="1", instance_number=1,
                       image_position=position, image_orientation=orientation, pixel_spacing=(0.5, 0.5),
                       rows=rows, columns=columns)


def test_boxes_are_placed_in_patient_millimetres_whatever_the_storage_order():
    # The same axial plane stored as usual and mirrored left-right: the display frame is the same,
    # so the same display box is the same point of the patient.
    usual = _header((1, 0, 0, 0, 1, 0), (-50.0, -50.0, 10.0))
    mirrored = _header((-1, 0, 0, 0, 1, 0), (49.5, -50.0, 10.0))
    box = Detection((100.0, 60.0, 120.0, 80.0), 0.9)  # centre (110, 70) pixel edges = pixel (69.5, 109.5)
    a, b = place([usual, mirrored], [[box], [box]])
    assert np.allclose(a[0].point, [-50.0 + 109.5 * 0.5, -50.0 + 69.5 * 0.5, 10.0])
    assert np.allclose(a[0].point, b[0].point)
    assert a[0].score == 0.9


def test_slices_are_ordered_head_to_foot_by_their_centres():
    headers = [_header((1, 0, 0, 0, 1, 0), (-50.0, -50.0, z)) for z in (-20.0, 10.0, -5.0)]
    assert head_to_foot(headers) == [1, 2, 0]


def test_the_policy_picks_from_detections_in_each_slice_display_frame():
    headers = [_header((1, 0, 0, 0, 1, 0), (-50.0, -50.0, z)) for z in (0.0, -4.0, -8.0)]
    canal = Detection((95.0, 150.0, 105.0, 160.0), 0.9)
    aside = Detection((20.0, 60.0, 30.0, 70.0), 0.95)  # 37 mm to the side and 45 mm in front of it
    weak_canal = Detection((96.0, 151.0, 106.0, 161.0), 0.35)
    picked = with_neighbours(headers)([[canal], [aside, weak_canal], [canal]])
    assert picked == [(canal, BOX_TOP), (weak_canal, BOX_CONTINUITY), (canal, BOX_TOP)]


def _two_boxes() -> FixedBoxes:
    """A best box (0.9) and a second one (0.4) on every slice."""
    return FixedBoxes([(40.0, 40.0, 50.0, 50.0), (45.0, 50.0, 55.0, 60.0)], [0.9, 0.4])


def test_predict_slices_takes_the_boxes_a_policy_chooses():
    config = quick().configs
    images = [np.ones((100, 100), np.float32)] * 2
    spacings = [(config.detector.pixel_mm,) * 2] * 2

    def second_best(candidates):
        return [(c[1], "second") for c in candidates]

    plain = predict_slices({"detector": _two_boxes()}, config, images, spacings, settings=_ANYWHERE)
    chosen = predict_slices({"detector": _two_boxes()}, config, images, spacings, settings=_ANYWHERE,
                            choose=second_best)
    assert [p.box for p in plain] == [pytest.approx((40, 40, 50, 50))] * 2
    assert [p.box_choice for p in plain] == ["top", "top"]
    assert [p.box for p in chosen] == [pytest.approx((45, 50, 55, 60))] * 2
    assert [(p.box_score, p.box_choice) for p in chosen] == [(pytest.approx(0.4), "second")] * 2


def test_the_report_says_which_slices_kept_or_lost_a_box_for_continuity():
    from grading.reports.study_report import render_html

    rows = [{"instance_number": n, "box_choice": choice} for n, choice in
            ((1, "top"), (2, "continuity"), (3, "continuity"), (4, "dropped"), (5, ""))]
    report = {"study": "S", "series": {"description": "AX T2", "n_slices": 5, "weighting": "T2", "orientation": "axial"},
              "level_assignment": "axial", "canal_boxes": "with the slices around it", "levels": [], "slices": rows,
              "skipped": [], "note": "research"}
    page = render_html(report, [])
    assert ("Canal boxes: with the slices around it; kept for continuity on instances 2, 3; a confident box "
            "dropped, the slices around it disagreeing, on instance 4.") in page
    rows[1]["box_choice"] = rows[2]["box_choice"] = rows[3]["box_choice"] = "top"
    assert "Canal boxes: with the slices around it.</p>" in render_html(report, [])


def test_one_conus_puts_every_cord_call_above_every_rootlet_call():
    from stages.inference import one_conus

    # Head to foot: cord, cord, a stray rootlet call, cord, then rootlets with a stray cord call.
    p_cord = np.array([0.9, 0.8, 0.4, 0.9, 0.2, 0.1, 0.7, 0.1, 0.2])
    assert one_conus(p_cord).tolist() == [True] * 4 + [False] * 5
    assert one_conus(np.array([0.1, 0.2])).tolist() == [False, False]  # no cord in view
    assert one_conus(np.array([0.9, 0.8])).tolist() == [True, True]  # no conus in view
    # A run of cord calls below the rootlets moves the split rather than being overruled one by one.
    assert one_conus(np.array([0.45, 0.4, 0.9, 0.95, 0.9])).tolist() == [True] * 5


class _LevelByBrightness(torch.nn.Module):
    """A one-logit 'level classifier' whose cord probability is the patch's mean brightness."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        p = x.mean(dim=(1, 2, 3)).clamp(1e-4, 1 - 1e-4)
        return torch.log(p / (1 - p))[:, None]


def test_predict_slices_calls_levels_with_one_conus_along_the_given_order():
    config = quick().configs
    brightness = [0.8, 0.3, 0.8, 0.2]  # P(cord) per slice as stored: a stray rootlet call between two cords
    images = [np.full((100, 100), b, np.float32) for b in brightness]
    spacings = [(config.detector.pixel_mm,) * 2] * 4
    models = {"detector": _two_boxes(), "level": _LevelByBrightness()}
    alone = predict_slices(models, config, images, spacings, settings=_ANYWHERE)
    together = predict_slices(models, config, images, spacings, settings=_ANYWHERE, head_to_foot=[0, 1, 2, 3])
    assert [p.level for p in alone] == ["cord", "rootlet", "cord", "rootlet"]
    assert [p.level for p in together] == ["cord", "cord", "cord", "rootlet"]
    assert together[1].level_probability == pytest.approx(0.3, abs=0.02)  # the overruled call's own probability
    # The same slices stored foot to head (P(cord) 0.2, 0.8, 0.3, 0.8 from the head): no split
    # explains them better than cord throughout (log-likelihood -3.25 against -3.8 for any other).
    reversed_order = predict_slices(models, config, images, spacings, settings=_ANYWHERE, head_to_foot=[3, 2, 1, 0])
    assert [p.level for p in reversed_order] == ["cord"] * 4

