"""grade-agreement end to end: outputs, SPEC keys, merged tables with folds, one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from paper_tables import paper_tables
from PIL import Image

from grading.cli.agreement import main as grade_agreement

LEVEL_KEYS = {"task", "rater_a", "rater_b", "n", "accuracy", "f1_macro", "kappa", "kappa_linear", "kappa_quadratic",
              "kappa_ci95", "ttest_t", "ttest_p", "per_class", "labels", "confusion"}
DSCA_KEYS = {"task", "rater_a", "rater_b", "n", "mae_mm2", "pearson_r", "bias_mm2", "loa_low_mm2", "loa_high_mm2", "icc"}


@pytest.fixture
def study_tables(tmp_path):
    """Raters' labels in one file; a classifier's out-of-fold predictions, with folds, in another."""
    rng = np.random.default_rng(0)
    raters, predictions = [], []
    for case in range(240):
        level = "cord" if case % 6 == 0 else "rootlet"
        grade = "" if level == "cord" else "ABCD"[min(3, int(rng.exponential(0.7)))]
        area = rng.uniform(40, 220)
        shift = lambda g: "ABCD"[min(3, "ABCD".index(g) + 1)] if g and rng.random() < 0.1 else g  # noqa: E731
        base = {"case_id": f"P{case // 24:02d}-{case:03d}", "level": level}
        raters.append({**base, "rater": "A1", "grade": grade, "dsca_mm2": round(area, 1)})
        raters.append({**base, "rater": "A2", "grade": shift(grade), "dsca_mm2": round(area + rng.normal(2, 6), 1)})
        predictions.append({**base, "rater": "C1", "grade": shift(grade), "dsca_mm2": round(area + rng.normal(0, 4), 1),
                            "fold": case // 24})
    pd.DataFrame(raters).to_csv(tmp_path / "raters.csv", index=False)
    pd.DataFrame(predictions).to_csv(tmp_path / "oof.csv", index=False)
    return tmp_path / "raters.csv", tmp_path / "oof.csv"


def test_outputs_and_spec_keys(study_tables, tmp_path, capsys):
    raters, oof = study_tables
    out = tmp_path / "out"
    assert grade_agreement([str(raters), str(oof), "--pair", "A1:A2", "--pair", "A1:C1", "-o", str(out)]) == 0
    records = json.loads((out / "agreement.json").read_text())
    assert [(r["task"], r["rater_a"], r["rater_b"]) for r in records] == [
        ("level", "A1", "A2"), ("grade", "A1", "A2"), ("dsca", "A1", "A2"),
        ("level", "A1", "C1"), ("grade", "A1", "C1"), ("dsca", "A1", "C1")]
    for r in records:
        if r["task"] == "level":
            assert LEVEL_KEYS | {"mcnemar_p"} <= set(r)
        elif r["task"] == "grade":
            assert LEVEL_KEYS | {"stuart_maxwell_p", "bowker_p"} <= set(r) and r["labels"] == list("ABCD")
        else:
            assert set(r) == DSCA_KEYS
    assert len(records[4]["per_fold"]) == 10  # the oof table's folds reach every pair with C1
    comparison = json.loads((out / "fold_comparison.json").read_text())
    assert {c["compared"] for c in comparison} == {"A1:C1"}
    for name in ("confusion_grade_A1_C1.png", "confusion_level_A1_A2.png", "bland_altman_dsca_A1_A2.png",
                 "scatter_dsca_A1_C1.png"):
        assert Image.open(out / name).size[0] > 300
    csv = pd.read_csv(out / "confusion_grade_A1_A2.csv", index_col=0)
    assert csv.to_numpy().tolist() == records[1]["confusion"] and list(csv.index)[0] == "A1:A"
    report = (out / "report.md").read_text()
    assert "Table 4" in report and f"{records[1]['accuracy'] * 100:.1f}" in report
    assert "<table>" in (out / "report.html").read_text()
    assert not list(out.glob(".*"))  # no temporary files left


def test_reproduces_paper_through_the_command(tmp_path):
    tables = paper_tables()
    grades = pd.concat([tables[("grade", "A1", "A2")],
                        tables[("grade", "A1", "C1")][lambda t: t.rater == "C1"]])
    grades.to_csv(tmp_path / "grades.csv", index=False)
    assert grade_agreement([str(tmp_path / "grades.csv"), "--pair", "A1:A2", "-o", str(tmp_path / "o")]) == 0
    records = json.loads((tmp_path / "o" / "agreement.json").read_text())
    level, record = records  # every case is rootlet: level agreement is perfect, on one class
    assert (level["accuracy"], level["f1_macro"]) == (1.0, 1.0)
    assert (round(record["accuracy"] * 100, 1), round(record["f1_macro"] * 100, 1)) == (89.2, 76.5)


def test_unknown_rater_is_a_one_line_error(study_tables, tmp_path, capsys):
    raters, _ = study_tables
    assert grade_agreement([str(raters), "--pair", "A1:Z9", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown rater 'Z9' (the tables have: A1, A2)" in err and len(err.splitlines()) == 1


def test_malformed_pair_is_a_usage_error(study_tables, tmp_path, capsys):
    raters, _ = study_tables
    with pytest.raises(SystemExit) as exit_info:
        grade_agreement([str(raters), "--pair", "A1", "-o", str(tmp_path / "o")])
    assert exit_info.value.code == 2 and "expected RATER_A:RATER_B" in capsys.readouterr().err


def test_duplicates_and_bad_grades_are_refused(study_tables, tmp_path, capsys):
    raters, _ = study_tables
    assert grade_agreement([str(raters), str(raters), "--pair", "A1:A2", "-o", str(tmp_path / "o")]) == 2
    assert "duplicate rows" in capsys.readouterr().err
    table = pd.read_csv(raters, keep_default_na=False)
    table.loc[1, "grade"] = "E"
    table.to_csv(tmp_path / "bad.csv", index=False)
    assert grade_agreement([str(tmp_path / "bad.csv"), "--pair", "A1:A2", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "line 3, column grade: 'E'" in err and len(err.splitlines()) == 1
