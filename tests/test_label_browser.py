"""grade-label in a real headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium): keyboard-only labelling, a killed server, two raters at once, and training on the
exported table. Skipped where Chromium is not installed, except in CI (.ci/run installs it).
"""
from __future__ import annotations

import json
import os
import statistics
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from browser import CHROMEDRIVER, CHROMIUM, Keys, LabelServer, Page
from study_factory import phantom_series

from grading.cli.train import main as grade_train
from grading.label_app.catalogue import from_studies
from grading.labels import TRAINING_COLUMNS, read_label_table

if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("CI"):
        pytest.fail("chromium and chromium-driver are needed (.ci/run installs them)", pytrace=False)
    pytest.skip("chromium and chromium-driver are not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> tuple[list[Path], pd.DataFrame]:
    """A 20-slice 512-matrix phantom study and two small ones (training needs three patients)."""
    root = tmp_path_factory.mktemp("label_browser")
    folders, rows = [], []
    for index, (n, matrix) in enumerate([(20, 512), (6, 128), (6, 128)], start=1):
        folder, truth = phantom_series(root, index=index, seed=3, n_slices=n, matrix=matrix)
        folders.append(folder)
        rows += [r for r in truth if r["rater"] == "truth"]
    return folders, pd.DataFrame(rows).set_index("sop_uid")


def _scroll_timings(page: Page, n: int) -> tuple[list[float], list[float]]:
    """Milliseconds from an arrow key to the next slice painted: scrolling through the first
    ``n`` slices as a rater does (the page prefetches ahead), then again with the page's cache
    emptied before each move (every slice fetched and decoded on demand)."""
    runs = []
    for cold in (False, True):
        page.press(Keys.HOME)
        page.wait_for("window.labelApp.shown === 0")
        page.js("window.labelApp.timings.splice(0)")
        for k in range(1, n):
            if cold:
                page.js("window.labelApp.cache.clear()")
            page.press(Keys.ARROW_DOWN)
            page.wait_for(f"window.labelApp.shown === {k} && window.labelApp.timings.length === {k}")
        runs.append([t["ms"] for t in page.js("window.labelApp.timings")])
    return runs[0], runs[1]


def test_a_rater_labels_with_the_keyboard_through_a_killed_server_and_trains(studies, tmp_path, record_property):
    folders, truth = studies
    table = tmp_path / "labels.csv"
    args = [*map(str, folders), "--rater", "A1", "-o", str(table)]
    catalogue = from_studies(folders)  # the page's order
    expected = [(truth.loc[s.header.sop_uid, "level"], truth.loc[s.header.sop_uid, "grade"] or "") for s in catalogue]
    server, page = LabelServer(args), Page()
    try:
        page.open(server.url)
        for level, grade in expected[:14]:
            page.label(level, grade, outline=True)
        page.settled()
        server.kill()  # no export, no goodbye: only what the store committed survives
        server = LabelServer(args)
        page.open(server.url)
        assert page.js("window.labelApp.index") == 14  # the first slice without a label
        assert page.driver.find_element("id", "count").text.startswith("14 / 32")
        for level, grade in expected[14:]:
            page.label(level, grade, outline=True)
        page.settled()
        warm, cold = _scroll_timings(page, 20)
    finally:
        page.close()
        server.stop()
    for name, timings in (("prefetched", warm), ("cold", cold)):
        median = statistics.median(timings)
        record_property(f"next_slice_ms_median_512_{name}", round(median, 1))
        print(f"\nnext slice shown, 512 x 512, {name}: median {median:.1f} ms, max {max(timings):.1f} ms "
              f"({len(timings)} moves)")

    labels = read_label_table(table, TRAINING_COLUMNS)
    assert len(labels) == 32 and set(labels.rater) == {"A1"}
    by_case = labels.set_index("case_id")
    assert [(by_case.level[s.case_id], by_case.grade[s.case_id]) for s in catalogue] == expected
    assert labels[["box_x0", "box_y0", "box_x1", "box_y1"]].notna().all().all()
    assert (labels.box_source == "rater").all()

    run = tmp_path / "run"
    code = grade_train(["--labels", str(table), "--images", str(folders[0].parent.parent), "--rater", "A1",
                        "--profile", "smoke", "--folds", "3", "--final-only", "-o", str(run)])
    assert code == 0 and (run / "final" / "bundle" / "manifest.json").is_file()


def test_two_raters_label_the_same_study_at_once(studies, tmp_path):
    folders, _ = studies
    table = tmp_path / "labels.csv"
    servers = {r: LabelServer([str(folders[1]), "--rater", r, "-o", str(table)]) for r in ("A1", "A2")}
    pages = {r: Page() for r in servers}
    typed = {"A1": [("cord", ""), ("rootlet", "B"), ("rootlet", "C")] * 2,
             "A2": [("other", ""), ("rootlet", "A"), ("rootlet", "D")] * 2}
    try:
        for rater in servers:
            pages[rater].open(servers[rater].url)
        for k in range(6):
            for rater in ("A1", "A2"):  # alternating keystrokes: both servers write the one store
                pages[rater].label(*typed[rater][k])
        for rater in servers:
            pages[rater].settled()
            # Blinded: each page holds only its own rater's labels.
            own = pages[rater].js("JSON.stringify(window.labelApp.labels)")
            assert [v["level"] for v in json.loads(own).values()] == [level for level, _ in typed[rater]]
        url = servers["A1"].url.split("?")[0]
        for bad in (url + "api/session", url + "api/session?token=wrong", url + "../../etc/passwd"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(bad, timeout=10)
            assert refused.value.code == 403
    finally:
        for rater in servers:
            pages[rater].close()
            servers[rater].stop()
    labels = read_label_table(table, TRAINING_COLUMNS)
    for rater in ("A1", "A2"):
        mine = labels[labels.rater == rater].sort_values("case_id")
        assert list(zip(mine.level, mine.grade)) == typed[rater]
