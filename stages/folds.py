"""Cross-validation folds: grouped by patient, stratified by grade; per fold 7 train / 2 val / 1 test."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from stages.records import SliceRecord


@dataclass(frozen=True)
class FoldPlan:
    n_folds: int
    fold_of_patient: dict[str, int]

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
        """(train, validation) patients for the model trained on everything."""
        val_folds = set(range(self.n_val_folds))
        val = {p for p, f in self.fold_of_patient.items() if f in val_folds}
        return set(self.fold_of_patient) - val, val


def stratum(record: SliceRecord) -> str:
    return record.grade if record.level == "rootlet" and record.grade else record.level


def plan_folds(records: list[SliceRecord], n_folds: int, seed: int = 0) -> FoldPlan:
    """Assign each patient to a fold so grades are spread evenly (StratifiedGroupKFold)."""
    patients = sorted({r.patient for r in records})
    if n_folds < 3:
        raise ValueError("cross-validation needs at least 3 folds (train, validation and test)")
    if len(patients) < n_folds:
        raise ValueError(f"{len(patients)} patients cannot fill {n_folds} folds")
    groups = np.array([r.patient for r in records])
    strata = np.array([stratum(r) for r in records])
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold_of_patient = {}
    for fold, (_, test) in enumerate(splitter.split(np.zeros(len(records)), strata, groups)):
        for patient in set(groups[test]):
            fold_of_patient[str(patient)] = fold
    return FoldPlan(n_folds, fold_of_patient)
