"""The canal is one tube through the whole series: choose each slice's box with its neighbours.

A detector that looks at one slice at a time puts its best box on the aorta, a loop of bowel or
the lung now and then, and on a scanner it has never seen it is often unsure of the canal
itself. A radiologist scrolls: the canal is where it was on the slice above, a few millimetres
away. This module does the same with the detector's candidates (the few plausible boxes of each
slice, best first), placed in patient millimetres so that stacks angled to each disc join up.

Slices are taken head to foot by their centres. Each chosen box earns its log-odds over the
detector's threshold (a lone box needs the same score as before); a box that continues the last
box chosen above it earns ``bonus``, one that cannot be the same canal pays ``penalty``. The best
choice over the whole series (a box or none on every slice) is found exactly by dynamic
programming. So a box below the threshold is kept where the boxes above and below continue it, a
confident box that contradicts them is dropped (or swapped for a candidate of its slice that
continues them), and a slice with nothing chosen in reach is decided by its own score, as before.

"Continue" is anatomy: between slices ``dz`` mm apart along the body, the canal's centre moves
left-right by at most ``slack_mm + lateral_per_mm * dz`` (scoliosis) and front-back by at most
``slack_mm + ap_per_mm * dz`` (lordosis: the canal runs up to ~40 degrees off the body's axis
at L5/S1). Slices more than ``max_gap_mm`` apart say nothing about each other.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from grading.dicom.geometry import pixel_to_patient
from grading.dicom.series import SliceHeader
from stages.detector import Detection
from stages.vocabulary import BOX_CONTINUITY, BOX_DROPPED, BOX_TOP


@dataclass(frozen=True)
class TrackConfig:
    threshold: float = 0.5  # score a box needs on its own (grade-study's threshold)
    bonus: float = 1.0  # log-odds a box earns for continuing the last box chosen above it
    penalty: float = 4.0  # log-odds a box pays for contradicting it
    slack_mm: float = 6.0  # box centres wander this much between any two slices (half a canal's width)
    lateral_per_mm: float = 0.35  # left-right drift per mm along the body (scoliosis, ~20 degrees)
    ap_per_mm: float = 0.9  # front-back drift per mm along the body (lordosis, ~40 degrees)
    max_gap_mm: float = 30.0  # slices further apart (head to foot) than this do not inform each other


@dataclass(frozen=True)
class Candidate:
    """One plausible canal box of a slice: its detector score and its centre in patient mm (LPS)."""

    score: float
    point: tuple[float, float, float]  # x (right to left), y (front to back), z (foot to head)


def place(headers: Sequence[SliceHeader], detections: Sequence[Sequence[Detection]]) -> list[list[Candidate]]:
    """Each slice's detections (display-frame boxes) as candidates centred in patient mm."""
    out = []
    for header, found in zip(headers, detections):
        shape = (header.rows, header.columns)
        placed = []
        for d in found:
            x0, y0, x1, y1 = d.box
            # Pixel-edge box centre -> display pixel indices -> stored indices -> patient mm.
            rows, cols = header.display.indices_to_stored(np.array((y0 + y1) / 2 - 0.5), np.array((x0 + x1) / 2 - 0.5),
                                                          shape)
            point = pixel_to_patient(header.image_position, header.image_orientation, header.pixel_spacing, rows, cols)
            placed.append(Candidate(d.score, tuple(float(v) for v in np.reshape(point, 3))))
        out.append(placed)
    return out


def head_to_foot(headers: Sequence[SliceHeader]) -> list[int]:
    """Slice indices ordered by their centres from head to foot (stacks angled to each disc interleave)."""
    return sorted(range(len(headers)), key=lambda i: -float(headers[i].centre[2]))


def _log_odds(score: float, threshold: float) -> float:
    p, t = (min(max(float(v), 0.01), 0.99) for v in (score, threshold))
    return math.log(p / (1 - p)) - math.log(t / (1 - t))


def continues(a: Sequence[float], b: Sequence[float], config: TrackConfig) -> bool | None:
    """Whether canal centres ``a`` and ``b`` on two slices can both be the canal (None: too far
    apart along the body to tell). Plain floats: the search asks this thousands of times."""
    dx, dy, dz = (abs(float(p) - float(q)) for p, q in zip(a, b))
    if dz > config.max_gap_mm:
        return None
    return bool(dx <= config.slack_mm + config.lateral_per_mm * dz and dy <= config.slack_mm + config.ap_per_mm * dz)


def _link(a: Candidate | None, b: Candidate, config: TrackConfig) -> float:
    if a is None:
        return 0.0
    joined = continues(a.point, b.point, config)
    if joined is None:
        return 0.0
    return config.bonus if joined else -config.penalty


def choose(candidates: Sequence[Sequence[Candidate]], order: Sequence[int],
           config: TrackConfig = TrackConfig()) -> list[int | None]:
    """For each slice, the index of its chosen candidate or None (no canal).

    ``candidates[i]`` are slice i's plausible boxes; ``order`` lists the slices head to foot.
    Each chosen box is linked to the last box chosen above it (slices with none in between are
    passed over, so a stray box between two dropped ones still meets the canal above and below).
    The search keeps, for every box that may still be the last one chosen, the best total that
    ends with it: exact, and small, since a box further than ``max_gap_mm`` above links to nothing.
    """
    # A state is the last chosen (slice, candidate), or None when no box lies within reach above.
    totals: dict[tuple[int, int] | None, float] = {None: 0.0}
    history: list[dict] = []  # per step: state -> (state before, candidate chosen at this step or None)
    for i in order:
        here = candidates[i]
        z_here = min((c.point[2] for c in here), default=None)
        own = [_log_odds(c.score, config.threshold) for c in here]
        new: dict[tuple[int, int] | None, float] = {}
        back: dict = {}
        for state, total in totals.items():
            last = None if state is None else candidates[state[0]][state[1]]
            # No box here: the last chosen box stays the reference, until it is out of reach.
            stale = last is not None and z_here is not None and last.point[2] - z_here > config.max_gap_mm
            options = [(None if stale else state, total, None)]
            options += [((i, k), total + own[k] + _link(last, c, config), k) for k, c in enumerate(here)]
            for target, value, pick in options:
                if target not in new or value > new[target]:
                    new[target], back[target] = value, (state, pick)
        totals = new
        history.append(back)
    chosen: list[int | None] = [None] * len(candidates)
    state = max(totals, key=totals.get)
    for i, back in zip(reversed(order), reversed(history)):
        state, chosen[i] = back[state]
    return chosen


def describe(candidates: Sequence[Sequence[Candidate]], chosen: Sequence[int | None],
             threshold: float) -> list[str]:
    """``box_choice`` of each slice: top, continuity, dropped, or '' (no box either way)."""
    out = []
    for cands, k in zip(candidates, chosen):
        confident = bool(cands) and cands[0].score >= threshold
        if k is None:
            out.append(BOX_DROPPED if confident else "")
        elif k == 0 and confident:
            out.append(BOX_TOP)
        else:
            out.append(BOX_CONTINUITY)
    return out


def with_neighbours(headers: Sequence[SliceHeader], config: TrackConfig = TrackConfig()):
    """A box-choosing policy for ``stages.inference.predict_slices`` over one series' slices."""
    order = head_to_foot(headers)

    def pick(detections: list[list[Detection]]) -> list[tuple[Detection | None, str]]:
        placed = place(headers, detections)
        chosen = choose(placed, order, config)
        why = describe(placed, chosen, config.threshold)
        return [(None if k is None else found[k], w) for found, k, w in zip(detections, chosen, why)]
    return pick
