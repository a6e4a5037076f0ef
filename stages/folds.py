"""Cross-validation folds: grouped by patient, stratified by grade; per fold 7 train / 2 val / 1 test.

The plan is made once per cohort and kept in a file (``splits_final.json``, as nnU-Net keeps
its splits), so that every rater's classifier is tested on the same patients: Classifier1 and
Classifier2 are then compared case for case, as the agreement study needs.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from stages.atomic import write_json_atomic

FORMAT = "lss-grading-splits"


class SplitsError(ValueError):
    """A splits file that does not fit the data or the request; the message says how."""


@dataclass(frozen=True)
class FoldPlan:
    n_folds: int
    fold_of_patient: dict[str, int]
    seed: int = 0

    @property
    def n_val_folds(self) -> int:
        return max(1, round(self.n_folds * 0.2))  # 2 of 10, as in the paper

    def split(self, test_fold: int) -> tuple[set[str], set[str], set[str]]:
        """(train, validation, test) patients: test is ``test_fold``, validation the next folds."""
        val_folds = {(test_fold + 1 + i) % self.n_folds for i in range(self.n_val_folds)}
        train, val, test = set(), set(), set()
        for patient, fold in self.fold_of_patient.items():
            (test if fold == test_fold else val if fold in val_folds else train).add(patient)
        return train, val, test

    def final_split(self) -> tuple[set[str], set[str]]:
        """(train, validation) patients for the final model: every fold but the validation ones
        trains it; those (2 of 10) still choose its best epoch and drive the lr schedule, as in
        each cross-validation fold. No patient is left unused for a test set: there is none."""
        val_folds = set(range(self.n_val_folds))
        val = {p for p, f in self.fold_of_patient.items() if f in val_folds}
        return set(self.fold_of_patient) - val, val

    def check_covers(self, patients: set[str], source: str) -> None:
        missing = sorted(patients - set(self.fold_of_patient))
        if missing:
            raise SplitsError(f"{source}: {len(missing)} patient(s) have no fold (e.g. {missing[0]!r}); "
                              "plan the splits from the whole cohort")

    def save(self, path: Path | str) -> Path:
        return write_json_atomic(path, {"format": FORMAT, "n_folds": self.n_folds, "seed": self.seed,
                                        "key": "study_id", "fold_of_patient": self.fold_of_patient})

    @classmethod
    def load(cls, path: Path | str) -> "FoldPlan":
        try:
            data = json.loads(Path(path).read_text())
            if data.get("format") != FORMAT:
                raise KeyError("format")
            return cls(int(data["n_folds"]), {str(k): int(v) for k, v in data["fold_of_patient"].items()},
                       int(data.get("seed", 0)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SplitsError(f"{path}: not a readable splits file ({type(exc).__name__}: {exc})") from None


def plan_folds(patients: Sequence[str], strata: Sequence[str], n_folds: int, seed: int = 0) -> FoldPlan:
    """Assign each patient to a fold so that strata (grades, levels) spread evenly
    (StratifiedGroupKFold); ``patients`` and ``strata`` have one entry per slice."""
    groups = np.asarray(patients, dtype=object)
    if any(not str(p).strip() for p in groups):
        raise SplitsError("a slice has an empty patient (study_id): folds are planned per patient, "
                          "so every slice must say whose it is")
    unique = sorted(set(groups))
    if n_folds < 3:
        raise SplitsError("cross-validation needs at least 3 folds (train, validation and test)")
    if len(unique) < n_folds:
        raise SplitsError(f"{len(unique)} patients cannot fill {n_folds} folds")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold_of_patient = {}
    for fold, (_, test) in enumerate(splitter.split(np.zeros(len(groups)), np.asarray(strata), groups)):
        for patient in set(groups[test]):
            fold_of_patient[str(patient)] = fold
    return FoldPlan(n_folds, fold_of_patient, seed)
