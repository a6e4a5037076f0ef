"""Group a graded series into stacks and levels, and summarise each level.

Angled lumbar protocols acquire one short stack per disc; each stack is then a level, named from
the caudal end (L5/S1, L4/L5, ...) by count and order. A single contiguous stack carries no such
landmark: its slices are grouped into 36-mm windows from the caudal end and numbered, not named.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from grading.dicom.series import SliceHeader
from grading.sagittal_levels import Localization
from stages.vocabulary import GRADES

DISC_NAMES_FROM_CAUDAL = ("L5/S1", "L4/L5", "L3/L4", "L2/L3", "L1/L2", "T12/L1", "T11/T12")
WINDOW_MM = 36.0  # about one lumbar segment (vertebral body + disc)


def split_stacks(headers: list[SliceHeader], positions: np.ndarray, max_angle_deg: float = 2.0,
                 gap_factor: float = 3.0) -> list[list[int]]:
    """Indices of each stack, head first: slices sharing an orientation (within ``max_angle_deg``),
    split where consecutive slices are more than ``gap_factor`` times the stack's usual spacing
    apart. A missing slice (twice the spacing) is a gap, not a new stack; disc-angled stacks,
    which differ in angle or lie a disc apart, are told apart either way."""
    if not headers:
        return []
    groups: list[list[int]] = []
    for i, header in enumerate(headers):
        for group in groups:
            cos = float(np.clip(np.dot(header.normal, headers[group[0]].normal), -1, 1))
            if np.degrees(np.arccos(cos)) <= max_angle_deg:
                group.append(i)
                break
        else:
            groups.append([i])
    stacks = []
    for group in groups:
        ordered = sorted(group, key=lambda i: -positions[i])
        gaps = np.abs(np.diff(positions[ordered]))
        usual = float(np.median(gaps)) if len(gaps) else 0.0
        current = [ordered[0]]
        for i, gap in zip(ordered[1:], gaps):
            if usual > 0 and gap > gap_factor * usual:
                stacks.append(current)
                current = []
            current.append(i)
        stacks.append(current)
    return sorted(stacks, key=lambda stack: -float(np.mean(positions[stack])))


@dataclass
class LevelAssignment:
    names: list[str]  # one per slice
    method: str  # how the names were given, for the report
    source: str = "axial"  # sagittal | axial (angled stacks or windows)
    sure: bool = False
    flags: list[str] = field(default_factory=list)
    lumbar_count: int | None = None  # lumbar vertebrae counted on the sagittal series; None: five assumed
    lumbar_probabilities: dict[int, float] = field(default_factory=dict)  # P(4, 5, 6) from the heights in view


def assign_levels(headers: list[SliceHeader], positions: np.ndarray,
                  localization: Localization | None = None) -> LevelAssignment:
    """A level name for every slice (series order: head first): from the sagittal series when
    the locator named its column, else from the axial series alone."""
    axial = _axial_levels(headers, positions)
    if localization is None or not localization.structures:
        if localization is not None:
            axial.method += f" (the sagittal series could not name them: {localization.method})"
            axial.flags = list(localization.flags)
        return axial
    names = [localization.name_of(h) or "outside the sagittal view" for h in headers]
    confidence = "sure" if localization.sure else "unsure"
    return LevelAssignment(names, f"{localization.method}; {confidence}", "sagittal", localization.sure,
                           list(localization.flags), localization.lumbar_count, dict(localization.lumbar_probabilities))


def _axial_levels(headers: list[SliceHeader], positions: np.ndarray) -> LevelAssignment:
    """Names from the axial series alone: angled stacks by order, else windows."""
    stacks = split_stacks(headers, positions)
    names = [""] * len(headers)
    if len(stacks) >= 2:
        for k, stack in enumerate(reversed(stacks)):
            name = DISC_NAMES_FROM_CAUDAL[k] if k < len(DISC_NAMES_FROM_CAUDAL) else f"stack {len(stacks) - k}"
            for i in stack:
                names[i] = name
        return LevelAssignment(names, f"{len(stacks)} angled stacks, named by order from the most caudal (assumed "
                                      "L5/S1); check against a sagittal localizer")
    caudal = float(positions.min())
    for i, p in enumerate(positions):
        names[i] = f"window {int((p - caudal) // WINDOW_MM) + 1}"
    return LevelAssignment(names, f"one contiguous stack: slices grouped into {WINDOW_MM:.0f}-mm windows from the "
                                  "caudal end (window 1); anatomical names need angled stacks or a sagittal localizer")


def summarise_levels(slices: list[dict], names: list[str]) -> list[dict]:
    """Per level: worst grade with its probability, slice and whether that slice's area agrees
    with it (``grade_area_check``), smallest DSCA and its slice."""
    out = []
    for name in dict.fromkeys(names):  # keeps series order
        rows = [s for s, n in zip(slices, names) if n == name]
        graded = [s for s in rows if s["grade"]]
        measured = [s for s in rows if s["dsca_mm2"] is not None]
        worst = max(graded, key=lambda s: (GRADES.index(s["grade"]), s["grade_probability"]), default=None)
        smallest = min(measured, key=lambda s: s["dsca_mm2"], default=None)
        out.append({
            "level": name,
            "n_slices": len(rows),
            "n_rootlet": sum(s["level"] == "rootlet" for s in rows),
            "n_cord": sum(s["level"] == "cord" for s in rows),
            "n_no_canal": sum(s["level"] == "no canal" for s in rows),
            "worst_grade": worst["grade"] if worst else "",
            "worst_grade_probability": worst["grade_probability"] if worst else None,
            "worst_grade_instance": worst["instance_number"] if worst else None,
            "worst_grade_check": worst.get("grade_area_check", "") if worst else "",
            "min_dsca_mm2": smallest["dsca_mm2"] if smallest else None,
            "min_dsca_instance": smallest["instance_number"] if smallest else None,
        })
    return out
