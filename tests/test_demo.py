"""grade-demo's own bookkeeping (the demo itself is measured by hand: it trains for minutes)."""
from __future__ import annotations

from grading.cli.demo import _forget_other_folds
from stages.folds import plan_folds


def test_a_cached_fold_plan_for_other_folds_is_replanned_not_an_error(tmp_path):
    patients = [f"P{k}" for k in range(20)]
    splits = tmp_path / "splits_final.json"
    plan_folds(patients, ["A"] * 20, 10).save(splits)
    _forget_other_folds(splits, 10)
    assert splits.is_file()  # the same folds: kept, so every rater's run shares it
    _forget_other_folds(splits, 5)
    assert not splits.is_file()  # grade-train plans 5 folds afresh instead of refusing the 10-fold plan
    splits.write_text("not json")
    _forget_other_folds(splits, 5)
    assert splits.read_text() == "not json"  # left for grade-train to name
