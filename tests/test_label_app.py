"""grade-label without a browser: the label store, frames, the outline tools and the web API."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from starlette.testclient import TestClient
from study_factory import phantom_series

from grading.cli.label import main as label_main
from grading.label_app.catalogue import from_studies, outline_of
from grading.label_app.server import Session, create_app
from grading.label_app.store import Label, LabelError, LabelStore, SliceRef, check_label, outline_mask
from grading.label_app.wand import suggest_outline
from grading.labels import TRAINING_COLUMNS, read_label_table
from stages.orientation import DisplayTransform

REF = SliceRef("1.2.3.4", "case-1", "study-1", "1.2.3", rows=40, columns=30, spacing=(0.5, 0.8))


def test_check_label_refuses_what_the_table_cannot_hold():
    check_label(Label("rootlet", "B", box=(1, 2, 10, 12)), (40, 30))
    check_label(Label("", box=(1, 2, 10, 12)), (40, 30))  # a draft: box before level
    for label, words in [
        (Label("stenotic"), "level 'stenotic'"),
        (Label("rootlet", "E"), "grade 'E'"),
        (Label("cord", "A"), "rootlet slices only"),
        (Label("rootlet", box=(1, 2, 31, 12)), "not inside the 30 x 40 image"),
        (Label("rootlet", box=(10, 2, 5, 12)), "not inside"),
        (Label("rootlet", outline=[[1, 1], [2, 2]]), "three"),
        (Label("rootlet", outline=[[1, 1], [2, 41], [3, 1]]), "leaves the 30 x 40 image"),
        (Label("rootlet", box_source="model"), "box source"),
    ]:
        with pytest.raises(LabelError, match=words):
            check_label(label, (40, 30))


def test_store_keeps_one_label_per_rater_and_slice_and_measures_the_outline(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    square = [[5, 5], [15, 5], [15, 25], [5, 25]]  # 10 x 20 pixels
    store.save("A1", REF, Label("rootlet", "A", box=(2, 2, 20, 30), outline=square))
    stored = store.save("A1", REF, Label("rootlet", "C", box=(3, 3, 20, 30), outline=square))
    store.save("A2", REF, Label("cord"))
    assert stored["grade"] == "C" and stored["box_x0"] == 3
    assert stored["dsca_mm2"] == pytest.approx(10 * 20 * 0.5 * 0.8)
    assert store.get("A2", REF.sop_uid)["level"] == "cord"
    assert set(store.labels_of("A1")) == {REF.sop_uid}
    with pytest.raises(LabelError):
        store.save("A1", REF, Label("rootlet", "Z"))
    assert store.get("A1", REF.sop_uid)["grade"] == "C"  # a refused label changes nothing
    store.delete("A2", REF.sop_uid)
    assert store.get("A2", REF.sop_uid) is None


def test_export_is_a_valid_label_table_with_masks_and_without_drafts(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    outline = [[5, 5], [15, 5], [15, 25], [5, 25]]
    store.save("A1", REF, Label("rootlet", "B", box=(2, 2, 20, 30), outline=outline, box_source="assist"))
    store.save("A2", REF, Label("", box=(2, 2, 20, 30)))  # a draft: not a row yet
    other = SliceRef("1.2.3.5", "case-2", "study-1", "1.2.3", 40, 30, (0.5, 0.8))
    store.save("A2", other, Label("other"))
    table_path = tmp_path / "out" / "labels.csv"
    assert store.export(table_path) == 2
    table = read_label_table(table_path, TRAINING_COLUMNS)
    assert list(table.rater) == ["A1", "A2"] and list(table.level) == ["rootlet", "other"]
    first = table.iloc[0]
    assert first.box_source == "assist" and first.label_source == "rater"
    mask = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(table_path.parent / first["mask"])) > 0
    assert mask.shape == (40, 30) and mask.sum() == 200 and mask[5:25, 5:15].all()
    assert "1.2.3.4" not in first["mask"]  # no tag value in a file name


def test_empty_store_exports_the_header(tmp_path):
    path = tmp_path / "labels.csv"
    assert LabelStore(tmp_path / "labels.sqlite").export(path) == 0
    assert read_label_table(path, TRAINING_COLUMNS).empty


def test_two_raters_saving_at_once_lose_nothing(tmp_path):
    """Two servers (two connections) writing the same file from many threads at once."""
    stores = [LabelStore(tmp_path / "labels.sqlite"), LabelStore(tmp_path / "labels.sqlite")]

    def label(rater: str, store: LabelStore) -> None:
        for k in range(60):
            ref = SliceRef(f"1.2.{k}", f"case-{k}", "s", "1.2", 40, 30, (0.5, 0.5))
            store.save(rater, ref, Label("rootlet", "ABCD"[k % 4], box=(1, 1, 10, 10)))

    threads = [threading.Thread(target=label, args=(rater, store)) for rater, store in zip(("A1", "A2"), stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stores[0].export(tmp_path / "labels.csv") == 120


def test_a_killed_writer_loses_no_committed_label(tmp_path):
    """Save in a child process, kill it hard at once: the label is in the store."""
    code = f"""
import sys, os, signal
sys.path.insert(0, {str(Path(__file__).parent)!r})
from grading.label_app.store import Label, LabelStore, SliceRef
store = LabelStore({str(tmp_path / 'labels.sqlite')!r})
for k in range(20):
    store.save("A1", SliceRef(f"1.2.{{k}}", f"c{{k}}", "s", "1.2", 40, 30, (0.5, 0.5)), Label("cord"))
print("saved", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL and "saved" in result.stdout
    assert len(LabelStore(tmp_path / "labels.sqlite").labels_of("A1")) == 20


@pytest.mark.parametrize("transpose,flip_rows,flip_cols", list(product([False, True], repeat=3)))
def test_outline_points_go_to_the_stored_grid_and_back(transpose, flip_rows, flip_cols):
    display = DisplayTransform(transpose, flip_rows, flip_cols)
    shape = (20, 30)
    stored = np.zeros(shape, bool)
    stored[3:9, 4:15] = True
    box = (4.0, 3.0, 15.0, 9.0)
    points = display.points_to_display(outline_of(stored), shape)
    np.testing.assert_allclose(display.points_to_stored(points, shape), outline_of(stored))
    # The outline drawn on the display frame fills the displayed mask, and its corners are the box's.
    assert np.array_equal(outline_mask(points.tolist(), display.display_shape(shape)), display.apply(stored))
    x0, y0, x1, y1 = display.box_to_display(box, shape)
    assert (points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max()) == (x0, y0, x1, y1)


def test_outline_of_a_disc_rasterises_back_to_it():
    yy, xx = np.mgrid[:64, :64]
    disc = (yy - 30.3) ** 2 + (xx - 33.1) ** 2 < 12 ** 2
    again = outline_mask(outline_of(disc), disc.shape)
    assert (again & disc).sum() / (again | disc).sum() > 0.97


def test_suggested_outline_finds_the_bright_sac_in_the_box():
    rng = np.random.default_rng(0)
    image = rng.normal(0.3, 0.03, (80, 80))
    yy, xx = np.mgrid[:80, :80]
    sac = (yy - 42) ** 2 / 7 ** 2 + (xx - 38) ** 2 / 9 ** 2 < 1
    image[sac] = 1.0
    image[10:14, 10:14] = 1.0  # a bright spot outside the box is ignored
    outline = suggest_outline(image, (25, 30, 52, 55))
    found = outline_mask(outline, image.shape)
    assert (found & sac).sum() / (found | sac).sum() > 0.9
    assert suggest_outline(np.zeros((80, 80)), (25, 30, 52, 55)) is None


# ---- the web API ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    folder, _ = phantom_series(tmp_path_factory.mktemp("label_api"), n_slices=6, matrix=96)
    return folder


def _client(study: Path, table: Path, rater: str = "A1", **kwargs) -> TestClient:
    session = Session(slices=from_studies([study]), store=LabelStore(table.with_suffix(".sqlite")), rater=rater,
                      table=table, token="secret-token", export_delay_s=0.05, **kwargs)
    client = TestClient(create_app(session), base_url="http://127.0.0.1:8000")
    client.headers["X-Label-Token"] = "secret-token"
    return client


def test_api_refuses_requests_without_the_token_or_from_elsewhere(study, tmp_path):
    client = _client(study, tmp_path / "labels.csv")
    assert client.get("/api/session").status_code == 200
    assert client.get("/api/session", headers={"X-Label-Token": "guess"}).status_code == 403
    assert client.get("/api/session?token=secret-token", headers={"X-Label-Token": ""}).status_code == 200
    assert client.get("/api/session", headers={"Host": "attacker.example"}).status_code == 403
    # No route reads a path: traversal finds nothing, and slices are numbers inside the session.
    for path in ("/../../etc/passwd", "/api/slices/..%2F..%2Fetc%2Fpasswd/pixels", "/api/slices/99/pixels"):
        response = client.get(path)
        assert response.status_code == 404 and b"root:" not in response.content


def test_api_saves_labels_in_the_display_frame_and_explains_refusals(study, tmp_path):
    table = tmp_path / "labels.csv"
    with _client(study, table) as client:
        info = client.get("/api/session").json()
        assert info["mode"] == "label" and len(info["slices"]) == 6 and info["calls"] == {}
        pixels = client.get("/api/slices/2/pixels")
        rows, cols = int(pixels.headers["X-Rows"]), int(pixels.headers["X-Columns"])
        assert len(pixels.content) == rows * cols * 2
        reply = client.put("/api/slices/2/label", json={"level": "rootlet", "grade": "B", "box": [30, 40, 50, 60]})
        assert reply.status_code == 200 and reply.json()["label"]["box"] == [30, 40, 50, 60]
        bad = client.put("/api/slices/2/label", json={"level": "rootlet", "grade": "Q"})
        assert bad.status_code == 400
        assert "grade 'Q'" in bad.json()["error"] and "nothing was saved" in bad.json()["error"]
        outside = client.put("/api/slices/3/label", json={"level": "cord", "box": [0, 0, cols + 5, 10]})
        assert outside.status_code == 400 and "not inside" in outside.json()["error"]
        assert client.put("/api/slices/3/label", content=b"{not json").status_code == 400
        assert client.put("/api/slices/3/label", json={"level": "cord", "box": [1, 2]}).status_code == 400
    table_rows = read_label_table(table, TRAINING_COLUMNS)  # exported when the server stopped
    assert len(table_rows) == 1 and table_rows.iloc[0].grade == "B"


def test_api_blinds_each_rater_to_the_others(study, tmp_path):
    table = tmp_path / "labels.csv"
    first, second = _client(study, table, "A1"), _client(study, table, "A2")
    first.put("/api/slices/0/label", json={"level": "cord"})
    assert second.get("/api/session").json()["labels"] == {}
    second.put("/api/slices/0/label", json={"level": "other"})
    assert first.get("/api/session").json()["labels"]["0"]["level"] == "cord"


def test_api_refuses_a_slice_whose_file_is_gone(study, tmp_path):
    import shutil

    copy = tmp_path / "study"
    shutil.copytree(study, copy)
    client = _client(copy, tmp_path / "labels.csv")
    doomed = client.app.state.session.slices[4].header.path
    doomed.unlink()
    reply = client.put("/api/slices/4/label", json={"level": "cord"})
    assert reply.status_code == 410 and "no longer exists" in reply.json()["error"]
    assert client.get("/api/slices/4/pixels").status_code == 410
    assert client.get("/api/session").json()["labels"] == {}


def test_cli_refuses_to_take_over_a_table_it_did_not_write(study, tmp_path, capsys):
    table = tmp_path / "labels.csv"
    table.write_text("case_id,rater,level,grade\n")
    assert label_main([str(study), "--rater", "A1", "-o", str(table)]) == 2
    assert "not written by grade-label" in capsys.readouterr().err
    assert label_main([str(study), "--rater", "A 1", "-o", str(tmp_path / "x.csv")]) == 2


def test_review_shows_grade_study_calls_and_records_corrections(study, tmp_path):
    from study_factory import untrained_bundle

    from grading.cli.study import main as grade_study

    bundle = untrained_bundle(tmp_path / "bundle")
    graded = tmp_path / "graded"
    assert grade_study([str(study), "--models", str(bundle), "-o", str(graded)]) == 0
    report = json.loads((graded / "report.json").read_text())
    assert report["source"]["study_dir"] == str(study.resolve())
    from grading.label_app.catalogue import from_review

    slices = from_review(graded)
    calls = pd.read_csv(graded / "slices.csv", keep_default_na=False)
    assert [s.call.grade for s in slices] == list(calls.grade)
    table = tmp_path / "review.csv"
    session = Session(slices=slices, store=LabelStore(tmp_path / "review.sqlite"), rater="S1", table=table,
                      token="t", mode="review")
    client = TestClient(create_app(session), base_url="http://127.0.0.1")
    client.headers["X-Label-Token"] = "t"
    shown = client.get("/api/session").json()["calls"]
    assert set(shown) == {str(s.id) for s in slices} and "box" in shown["0"] and shown["0"]["outline"]
    client.put("/api/slices/0/label", json={"level": "rootlet", "grade": "D", "box": shown["0"]["box"],
                                            "box_source": "call", "label_source": "review-corrected"})
    session.export()
    row = read_label_table(table, TRAINING_COLUMNS).iloc[0]
    assert (row.rater, row.grade, row.label_source, row.box_source) == ("S1", "D", "review-corrected", "call")
    box = tuple(row[c] for c in ("box_x0", "box_y0", "box_x1", "box_y1"))
    call_box = tuple(float(v) for v in calls.loc[0, ["box_x0", "box_y0", "box_x1", "box_y1"]])
    assert box == pytest.approx(call_box, abs=0.01)


def test_export_only_writes_the_table_from_the_store(tmp_path):
    table = tmp_path / "labels.csv"
    LabelStore(table.with_suffix(".sqlite")).save("A1", REF, Label("cord"))
    assert label_main(["--export-only", "-o", str(table)]) == 0
    assert len(read_label_table(table)) == 1
    assert os.path.exists(table)
