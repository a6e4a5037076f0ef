"""Screenshots of grade-label for the docs: the blinded labelling page and the review page.

    uv run python scripts/label_screenshots.py --models BUNDLE -o docs

Generates one phantom study, labels a few slices with the keyboard as a rater would (box
carried from slice to slice, suggested sac outline accepted, grade keys), grades the study
with BUNDLE and opens the review of its calls. Needs Debian's chromium and chromium-driver.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from browser import Keys, LabelServer, Page  # noqa: E402
from study_factory import phantom_series  # noqa: E402

from grading.cli.study import main as grade_study  # noqa: E402
from grading.label_app.catalogue import from_studies  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", required=True, type=Path, help="bundle for the review page")
    p.add_argument("-o", "--output", type=Path, default=Path("docs"))
    p.add_argument("--seed", type=int, default=11)
    args = p.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        study, rows = phantom_series(root, index=1, seed=args.seed, n_slices=24)
        truth = {r["sop_uid"]: r for r in rows if r["rater"] == "truth"}
        catalogue = from_studies([study])
        order = [(truth[s.header.sop_uid]["level"], truth[s.header.sop_uid]["grade"]) for s in catalogue]
        shown = next(k for k, (level, grade) in enumerate(order) if level == "rootlet" and grade in "BC" and k > 4)

        server, page = LabelServer([str(study), "--rater", "A1", "-o", str(root / "labels.csv")]), Page((1400, 860))
        try:
            page.open(server.url)
            for k, (level, grade) in enumerate(order[:shown + 1]):
                page.wait_for(f"window.labelApp.shown === {k}")
                if k % 4 == 0:  # now and then the rater redraws the box on the canal
                    row, s = truth[catalogue[k].header.sop_uid], catalogue[k]
                    stored = tuple(float(row[c]) for c in ("box_x0", "box_y0", "box_x1", "box_y1"))
                    page.drag_box(s.header.display.box_to_display(stored, s.stored_shape))
                    page.settled()
                page.label(level, grade, outline=level == "rootlet")
            page.settled()
            page.press(Keys.ARROW_UP)
            page.wait_for(f"window.labelApp.shown === {shown}")
            page.press("f")
            page.driver.save_screenshot(str(args.output / "label_page.png"))
        finally:
            page.close()
            server.stop()

        graded = root / "graded"
        if grade_study([str(study), "--models", str(args.models), "-o", str(graded)]) != 0:
            raise SystemExit("grade-study failed")
        server, page = LabelServer(["--review", str(graded), "--rater", "S1"]), Page((1400, 860))
        try:
            page.open(server.url)
            page.press(*[Keys.ARROW_DOWN] * shown)
            page.wait_for(f"window.labelApp.shown === {shown}")
            page.press("f")
            page.driver.save_screenshot(str(args.output / "review_page.png"))
        finally:
            page.close()
            server.stop()
    print(f"wrote {args.output / 'label_page.png'} and {args.output / 'review_page.png'}")


if __name__ == "__main__":
    main()
