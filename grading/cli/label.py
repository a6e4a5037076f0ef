"""grade-label: label slices in the browser (blinded), or review grade-study's calls.

    grade-label STUDY_DIR... --rater A1 -o labels.csv [--assist MODELS] [--port N]
    grade-label --review GRADED_DIR [STUDY_DIR] --rater A1 [-o GRADED_DIR/review_labels.csv]
    grade-label --export-only -o labels.csv

Labels are kept in ``labels.sqlite`` beside the table as they are given; the table is written
from it a moment after each change, on exit, and with ``--export-only``. Several raters may
label the same studies into the same table at once, each running their own grade-label.
"""
from __future__ import annotations

import argparse
import logging
import re
import secrets
import socket
import sys
from pathlib import Path

import uvicorn

from grading.cli.common import EXIT_USAGE, CommandError, run_command
from grading.label_app.catalogue import CatalogueError, from_review, from_studies
from grading.label_app.server import LOOPBACK_HOSTS, Session, create_app
from grading.label_app.store import LabelError, LabelStore
from stages.bundle import BundleError

RATER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def store_path(table: Path) -> Path:
    return table.with_suffix(".sqlite")


def open_store(table: Path) -> LabelStore:
    """The store behind ``table``; refuse to take over a table grade-label did not write."""
    if table.suffix.lower() != ".csv":
        raise CommandError(f"{table}: the label table must be a .csv file", EXIT_USAGE)
    store = store_path(table)
    if table.exists() and not store.exists():
        raise CommandError(f"{table} exists and was not written by grade-label (no {store.name} beside it); "
                           "choose another name", EXIT_USAGE)
    try:
        return LabelStore(store)
    except LabelError as exc:
        raise CommandError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="grade-label", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("studies", nargs="*", type=Path, help="study folders to label (or, with --review, the study)")
    p.add_argument("--rater", help="your name as it goes in the table (letters, digits, _ . -)")
    p.add_argument("-o", "--output", type=Path, help="the label table (.csv) to write")
    p.add_argument("--review", type=Path, metavar="GRADED_DIR", help="review grade-study's calls in this output folder")
    p.add_argument("--assist", type=Path, metavar="MODELS", help="pre-place canal boxes with this bundle's detector")
    p.add_argument("--series", help="label this series of each study (default: the one grade-study would grade)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=0, help="port (default: any free one)")
    p.add_argument("--export-only", action="store_true", help="write the table from the store and exit")
    return p


def _session(args: argparse.Namespace) -> Session:
    if not args.rater or not RATER_NAME.fullmatch(args.rater):
        raise CommandError("--rater NAME is needed: letters, digits, '_', '.' or '-', up to 64", EXIT_USAGE)
    if args.review is not None:
        if len(args.studies) > 1:
            raise CommandError("--review takes one graded folder and at most one study folder", EXIT_USAGE)
        table = args.output or args.review / "review_labels.csv"
    else:
        if not args.studies:
            raise CommandError("name the study folders to label", EXIT_USAGE)
        if args.output is None:
            raise CommandError("-o LABELS.csv is needed", EXIT_USAGE)
        table = args.output
    try:
        if args.review is not None:
            slices = from_review(args.review, args.studies[0] if args.studies else None)
        else:
            slices = from_studies(args.studies, args.series)
    except CatalogueError as exc:
        raise CommandError(str(exc)) from None
    assist = None
    if args.assist is not None:
        if args.review is not None:
            raise CommandError("--assist is for labelling; a review shows grade-study's own boxes", EXIT_USAGE)
        from grading.label_app.assist import BoxAssist  # torch and the detector only when asked for
        try:
            assist = BoxAssist(args.assist)
        except (BundleError, OSError) as exc:
            raise CommandError(f"--assist: {exc}") from None
    allowed = LOOPBACK_HOSTS if args.host in ("127.0.0.1", "localhost", "::1") else None
    return Session(slices=slices, store=open_store(table), rater=args.rater, table=table,
                   token=secrets.token_urlsafe(24), mode="review" if args.review is not None else "label",
                   assist=assist, allowed_hosts=allowed)


def _serve(session: Session, host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise CommandError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    done = sum(1 for row in session.store.labels_of(session.rater).values() if row["level"])
    print(f"grade-label: {len(session.slices)} slices, {done} labelled by {session.rater}; "
          f"labels go to {session.table}")
    if session.allowed_hosts is None:
        print("grade-label: warning: listening beyond this machine; anyone with the address can label", file=sys.stderr)
    print(f"grade-label: open http://{shown if session.allowed_hosts is None else '127.0.0.1'}:{bound}/"
          f"?token={session.token}", flush=True)
    config = uvicorn.Config(create_app(session), log_level="warning", access_log=False, lifespan="on")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down gracefully (exporting), then passes Ctrl-C on
        pass
    print(f"grade-label: labels exported to {session.table}")


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="grade-label: %(message)s", stream=sys.stderr)
    if args.export_only:
        if args.output is None:
            raise CommandError("--export-only needs -o LABELS.csv", EXIT_USAGE)
        if not store_path(args.output).exists():
            raise CommandError(f"{store_path(args.output)}: no label store to export", EXIT_USAGE)
        rows = open_store(args.output).export(args.output)
        print(f"grade-label: {rows} labels written to {args.output}")
        return 0
    session = _session(args)
    session.export()
    _serve(session, args.host, args.port)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("grade-label", lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
