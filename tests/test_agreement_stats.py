"""Agreement statistics against the paper's tables, textbook values and independent computations."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from paper_tables import TABLE4, paper_tables
from scipy import stats
from sklearn.metrics import cohen_kappa_score

from eval.area import area_agreement, icc_2_1
from eval.classification import (
    bowker_p,
    categorical_agreement,
    kappa,
    mcnemar_p,
    stuart_maxwell_p,
)
from eval.pairs import AgreementInputError, merge_tables, paired
from eval.study import agreement_study, fold_comparisons, pair_records


@pytest.mark.parametrize("key", list(TABLE4), ids=lambda k: "-".join(k))
def test_reproduces_paper_table4_accuracy_and_fscore(key):
    task, a, b = key
    table = paper_tables()[key]
    record = next(r for r in pair_records(table, a, b) if r["task"] == task)
    f_score, accuracy = TABLE4[key]
    assert record["f1_macro"] * 100 == pytest.approx(f_score, abs=0.1)
    assert record["accuracy"] * 100 == pytest.approx(accuracy, abs=0.1)
    assert record["n"] == (10965 if task == "level" else 7282)


def test_confusion_rows_are_rater_a():
    table = paper_tables()[("grade", "A1", "A2")]
    record = next(r for r in pair_records(table, "A1", "A2") if r["task"] == "grade")
    confusion = np.array(record["confusion"])
    assert confusion.sum(axis=1).tolist() == [5739, 1122, 306, 115]  # Analyzer1's totals (Table 3)
    assert confusion.sum(axis=0).tolist() == [5422, 1280, 434, 146]
    assert record["per_class"]["A"]["support"] == 5739


def _random_labels(seed, n=300, k=4):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, k, n)
    b = np.where(rng.random(n) < 0.7, a, np.clip(a + rng.choice([-1, 1], n), 0, k - 1))
    return np.array(list("ABCD"))[a], np.array(list("ABCD"))[b]


@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_kappa_matches_scikit_learn(weights):
    a, b = _random_labels(1)
    record = categorical_agreement(a, b, list("ABCD"))
    key = {None: "kappa", "linear": "kappa_linear", "quadratic": "kappa_quadratic"}[weights]
    assert record[key] == pytest.approx(cohen_kappa_score(a, b, weights=weights), abs=1e-12)


def test_kappa_ci_covers_the_bootstrap_spread():
    a, b = _random_labels(2, n=400)
    k, low, high = kappa(np.array(categorical_agreement(a, b, list("ABCD"))["confusion"]))
    rng = np.random.default_rng(0)
    boot = [cohen_kappa_score(a[i], b[i]) for i in (rng.integers(0, len(a), len(a)) for _ in range(400))]
    b_low, b_high = np.percentile(boot, [2.5, 97.5])
    assert low < k < high
    assert (high - low) == pytest.approx(b_high - b_low, rel=0.2)


def test_mcnemar_textbook_value():
    # Agresti, Categorical Data Analysis (2002), Table 10.1: approval ratings, n = 1600.
    table = np.array([[794, 150], [86, 570]])
    continuity = (abs(150 - 86) - 1) ** 2 / (150 + 86)  # 16.82
    assert mcnemar_p(table) == pytest.approx(stats.chi2.sf(continuity, 1), rel=1e-9)
    assert mcnemar_p(table) < 1e-4
    small = np.array([[10, 7], [1, 12]])  # 8 discordant: exact binomial
    assert mcnemar_p(small) == pytest.approx(stats.binomtest(1, 8, 0.5).pvalue, rel=1e-9)


def _bowker_by_hand(n):
    """Bowker (1948): sum over i<j of (n_ij - n_ji)^2 / (n_ij + n_ji), df = k(k-1)/2."""
    k = n.shape[0]
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    chi2 = sum((n[i, j] - n[j, i]) ** 2 / (n[i, j] + n[j, i]) for i, j in pairs if n[i, j] + n[j, i])
    return stats.chi2.sf(chi2, len(pairs))


def _stuart_maxwell_by_hand(n):
    k = n.shape[0]
    d = (n.sum(axis=1) - n.sum(axis=0))[: k - 1]
    s = np.array([[n[i].sum() + n[:, i].sum() - 2 * n[i, i] if i == j else -(n[i, j] + n[j, i])
                   for j in range(k - 1)] for i in range(k - 1)], float)
    return stats.chi2.sf(d @ np.linalg.solve(s, d), k - 1)


def test_bowker_and_stuart_maxwell_against_hand_formulas():
    from paper_tables import GRADE_A1_C1, GRADE_A2_C2

    for table in (GRADE_A1_C1, GRADE_A2_C2):
        assert bowker_p(table) == pytest.approx(_bowker_by_hand(table), rel=1e-6)
        assert stuart_maxwell_p(table) == pytest.approx(_stuart_maxwell_by_hand(table), rel=1e-6)


def test_marginal_tests_survive_unused_grades():
    table = np.array([[50, 3, 0, 0], [4, 20, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert stuart_maxwell_p(table) == pytest.approx(_stuart_maxwell_by_hand(table[:2, :2]), rel=1e-6)
    assert bowker_p(table) is not None
    singular = np.array([[5, 0, 0], [0, 3, 2], [0, 0, 4]])  # class A never confused: covariance singular
    assert stuart_maxwell_p(singular) is None


def test_paired_ttest_on_codes_matches_scipy():
    a, b = _random_labels(3)
    record = categorical_agreement(a, b, list("ABCD"))
    codes = lambda x: np.searchsorted(list("ABCD"), x)  # noqa: E731
    t, p = stats.ttest_rel(codes(a), codes(b))
    assert (record["ttest_t"], record["ttest_p"]) == pytest.approx((t, p))
    same = categorical_agreement(a, a, list("ABCD"))
    assert same["ttest_p"] is None and same["accuracy"] == 1.0


def test_macro_f1_ignores_classes_neither_rater_used():
    record = categorical_agreement(["A", "A", "B", "B"], ["A", "B", "B", "B"], list("ABCD"))
    assert record["f1_macro"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert record["per_class"]["C"]["support"] == 0


def test_icc_shrout_fleiss_textbook_value():
    # Shrout & Fleiss (1979), Table 2: 6 targets, 4 judges; ICC(2,1) = .29
    ratings = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])
    assert icc_2_1(ratings) == pytest.approx(0.29, abs=0.005)


def test_area_agreement_bland_altman():
    rng = np.random.default_rng(4)
    a = rng.uniform(40, 220, 200)
    b = a + 3 + rng.normal(0, 5, 200)
    record = area_agreement(a, b)
    diff = b - a
    assert record["bias_mm2"] == pytest.approx(diff.mean())
    assert record["loa_high_mm2"] - record["loa_low_mm2"] == pytest.approx(2 * 1.96 * diff.std(ddof=1))
    assert record["mae_mm2"] == pytest.approx(np.abs(diff).mean())
    assert record["pearson_r"] == pytest.approx(np.corrcoef(a, b)[0, 1])
    assert 0.95 < record["icc"] < record["pearson_r"]  # the bias costs absolute agreement


def test_other_excluded_and_grade_needs_both_rootlet():
    table = pd.DataFrame([
        {"case_id": "1", "rater": "A1", "level": "rootlet", "grade": "A"},
        {"case_id": "1", "rater": "A2", "level": "rootlet", "grade": "B"},
        {"case_id": "2", "rater": "A1", "level": "rootlet", "grade": "A"},
        {"case_id": "2", "rater": "A2", "level": "cord", "grade": ""},
        {"case_id": "3", "rater": "A1", "level": "other", "grade": ""},
        {"case_id": "3", "rater": "A2", "level": "rootlet", "grade": "C"},
    ])
    level, grade = pair_records(table, "A1", "A2")
    assert level["n"] == 2 and level["excluded"] == {"A1": {"other": 1}, "A2": {}}
    assert grade["n"] == 1 and grade["confusion"][0][1] == 1


def test_classifier_misses_are_reported_and_copied_levels_never_scored():
    """A detector miss is a case the classifier could not label (its own count, and a
    disagreement in the second figure); a level copied from labels is not agreement."""
    rows = []
    for case in range(10):
        rows.append({"case_id": str(case), "study_id": f"P{case // 2}", "rater": "A1", "level": "rootlet", "grade": "A"})
    for case in range(10):
        status = "no canal" if case < 2 else "classified"
        level = "other" if case < 2 else "rootlet"
        rows.append({"case_id": str(case), "study_id": f"P{case // 2}", "rater": "C1", "level": level,
                     "grade": "" if case < 2 else ("A" if case < 8 else "B"), "status": status,
                     "level_source": "" if case < 2 else "classifier"})
        rows.append({"case_id": str(case), "study_id": f"P{case // 2}", "rater": "C0", "level": "rootlet",
                     "grade": "A", "status": "not classified", "level_source": "labels"})
    table = pd.DataFrame(rows)
    level, grade = pair_records(table, "A1", "C1")
    assert level["n"] == 8 and level["accuracy"] == 1.0
    assert level["excluded"]["C1"] == {"no canal": 2} and level["misses"] == 2
    assert level["accuracy_counting_misses"] == pytest.approx(8 / 10)
    assert grade["n"] == 8 and grade["accuracy"] == pytest.approx(6 / 8)
    assert grade["accuracy_counting_misses"] == pytest.approx(6 / 10)
    copied = pair_records(table, "A1", "C0")
    assert [r["task"] for r in copied] == ["grade"]  # no level record: C0's levels are A1's own


def test_fold_comes_from_the_classifiers_side():
    rows = []
    for case in range(6):
        rows.append({"case_id": str(case), "rater": "C2", "level": "rootlet", "grade": "A", "fold": 9})
        rows.append({"case_id": str(case), "rater": "A1", "level": "rootlet", "grade": "A"})
        rows.append({"case_id": str(case), "rater": "C1", "level": "rootlet", "grade": "B", "fold": case % 3})
    both = paired(pd.DataFrame(rows), "A1", "C1")
    assert list(both.fold) == [0, 1, 2, 0, 1, 2]  # C1's folds, whatever came first in the table
    rows += [{"case_id": str(case), "rater": "A2", "level": "rootlet", "grade": "A"} for case in range(6)]
    with pytest.raises(AgreementInputError, match="tested in different folds"):
        paired(pd.DataFrame(rows), "A1", "A2")  # C1 and C2 disagree on the cases' folds


def test_cluster_bootstrap_is_wider_when_patients_cluster():
    """Agreement that is all-or-nothing per patient is less certain than the same agreement
    spread over independent slices; singleton clusters give the ordinary bootstrap."""
    from eval.bootstrap import cluster_bootstrap, confusion_metrics

    a = np.array(["A"] * 200 + ["B"] * 200)
    b = a.copy()
    b[:60] = "B"  # 60 disagreements
    clustered = np.repeat(np.arange(40), 10)  # ...all within patients 0-5
    independent = np.arange(400)
    wide = cluster_bootstrap(a, b, clustered, ["A", "B"], n_resamples=800)
    narrow = cluster_bootstrap(a, b, independent, ["A", "B"], n_resamples=800)
    point = confusion_metrics(np.array([[140, 60], [0, 200]]))
    assert point["accuracy"][0] == pytest.approx(0.85)
    for ci in (wide["accuracy"], narrow["accuracy"]):
        assert ci[0] < 0.85 < ci[1]
    assert wide["accuracy"][1] - wide["accuracy"][0] > 1.5 * (narrow["accuracy"][1] - narrow["accuracy"][0])
    assert wide["n_patients"] == 40 and narrow["n_patients"] == 400


def test_bootstrap_metrics_match_the_point_statistics():
    from eval.bootstrap import confusion_metrics

    confusion = np.array([[50, 5, 1, 0], [6, 20, 3, 0], [0, 2, 8, 1], [0, 0, 1, 3]])
    a = np.repeat(np.repeat(list("ABCD"), 4), confusion.ravel())
    b = np.repeat(np.tile(list("ABCD"), 4), confusion.ravel())
    reference = categorical_agreement(a, b, list("ABCD"))
    mine = {k: float(v[0]) for k, v in confusion_metrics(confusion).items()}
    for key in ("accuracy", "f1_macro", "kappa", "kappa_linear", "kappa_quadratic"):
        assert mine[key] == pytest.approx(reference[key], abs=1e-9), key


def test_nadeau_bengio_correction_widens_the_fold_test():
    from scipy import stats as st

    from eval.bootstrap import corrected_resampled_ttest

    d = np.array([0.02, 0.03, 0.01, 0.04, 0.02, 0.03, 0.02, 0.05, 0.01, 0.03])
    t, p = corrected_resampled_ttest(d, 1 / 7)
    expected = d.mean() / np.sqrt((1 / 10 + 1 / 7) * d.var(ddof=1))
    assert t == pytest.approx(expected)
    plain = st.ttest_1samp(d, 0)
    assert p == pytest.approx(2 * st.t.sf(expected, 9)) and p > plain.pvalue


def test_clear_errors():
    table = pd.DataFrame([
        {"case_id": "1", "rater": "A1", "level": "rootlet", "grade": "A"},
        {"case_id": "2", "rater": "A2", "level": "rootlet", "grade": "A"},
    ])
    with pytest.raises(AgreementInputError, match="unknown rater 'C9'"):
        paired(table, "A1", "C9")
    with pytest.raises(AgreementInputError, match="no case_id in common"):
        paired(table, "A1", "A2")
    with pytest.raises(AgreementInputError, match="duplicate rows for case '1', rater 'A1'"):
        merge_tables([table, table.iloc[:1]])
    bad = pd.concat([table, pd.DataFrame([{"case_id": "1", "rater": "A2", "level": "rootlet", "grade": "E"}])])
    with pytest.raises(AgreementInputError, match="outside A-D"):
        agreement_study(bad, [("A1", "A2")])


def test_per_fold_agreement_and_fold_comparison():
    rng = np.random.default_rng(5)
    rows = []
    for case in range(400):
        truth = "ABCD"[rng.integers(0, 4)]
        fold = case % 5
        noisy = lambda p: truth if rng.random() > p else "ABCD"[rng.integers(0, 4)]  # noqa: E731
        rows += [{"case_id": str(case), "rater": "A1", "level": "rootlet", "grade": truth},
                 {"case_id": str(case), "rater": "A2", "level": "rootlet", "grade": noisy(0.4)},
                 {"case_id": str(case), "rater": "C1", "level": "rootlet", "grade": noisy(0.05), "fold": fold}]
    table = pd.DataFrame(rows)
    records = agreement_study(table, [("A1", "A2"), ("A1", "C1")])
    grade_records = [r for r in records if r["task"] == "grade"]
    assert all(len(r["per_fold"]) == 5 for r in grade_records)
    assert sum(f["n"] for f in grade_records[0]["per_fold"].values()) == 400
    comparison = next(c for c in fold_comparisons(records) if c["task"] == "grade" and c["metric"] == "accuracy")
    assert comparison["reference"] == "A1:A2" and comparison["compared"] == "A1:C1"
    assert comparison["mean_difference"] > 0.2 and comparison["ttest_p"] < 0.01
