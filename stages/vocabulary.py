"""The label vocabulary every package shares: levels, grades and what became of a prediction.

Lives in ``stages`` (the lowest layer, plain Python) so that ``stages``, ``eval`` and
``grading`` all read the same definitions.
"""
from __future__ import annotations

LEVELS = ("rootlet", "cord")  # what the level classifier tells apart
TABLE_LEVELS = (*LEVELS, "other")  # a label table's levels: 'other' is unusable (screws, deformity)
GRADES = ("A", "B", "C", "D")  # Schizas

#: What became of a slice in a classifier's predictions (the ``status`` column):
NO_CANAL = "no canal"  # the detector found none (or none it was sure of): nothing was classified
NOT_CLASSIFIED = "not classified"  # a canal, but this run had no level stage
CLASSIFIED = "classified"
STATUSES = (NO_CANAL, NOT_CLASSIFIED, CLASSIFIED)
#: Where a prediction's level came from (the ``level_source`` column).
FROM_CLASSIFIER, FROM_LABELS = "classifier", "labels"

#: What a slice's canal box rests on (the ``box_choice`` column of grade-study's slices.csv).
BOX_TOP = "top"  # the slice's best box, confident on its own: the slice-by-slice rule
BOX_CONTINUITY = "continuity"  # below the threshold or not the best, kept because it continues its neighbours
BOX_DROPPED = "dropped"  # a confident best box that contradicts the canal on the slices around it

#: What the sagittal level locator tells apart, per pixel.
COLUMN_CLASSES = ("background", "body", "disc", "sacrum")
