"""The labelling web app (Starlette): one page, and a small JSON API the page talks to.

Slices are addressed by their index in the session's catalogue, never by path, so nothing
outside the studies named on the command line can be reached. Every request must carry the
session's random token (query ``token`` or header ``X-Label-Token``) and a loopback Host
header (a page elsewhere cannot reach the server through DNS rebinding). The server log
names methods, routes and slice numbers only: no token, no path, no tag value.

Boxes and outlines travel in the display frame; the store keeps them on the stored grid.
The page is blinded: it only ever gets this rater's labels, and in labelling mode nothing of
the models but (with ``--assist``) a canal box.
"""
from __future__ import annotations

import hmac
import logging
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from grading.label_app.assist import BoxAssist
from grading.label_app.catalogue import DISPLAY_SCALE, Slice, SliceGone
from grading.label_app.store import Label, LabelError, LabelStore, SliceRef, check_label
from grading.label_app.wand import suggest_outline

log = logging.getLogger("grade-label")
TOKEN_HEADER = "x-label-token"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


class RequestError(Exception):
    """A request the server refuses; ``status`` and a message for the page."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Session:
    slices: list[Slice]
    store: LabelStore
    rater: str
    table: Path  # where the label table is exported
    token: str
    mode: str = "label"  # label | review
    assist: BoxAssist | None = None
    export_delay_s: float = 2.0
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    _timer: threading.Timer | None = field(default=None, repr=False)
    _export_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def slice(self, slice_id: int) -> Slice:
        if not 0 <= slice_id < len(self.slices):
            raise RequestError(404, f"there is no slice {slice_id + 1} in this session")
        return self.slices[slice_id]

    def export(self) -> int:
        with self._export_lock:
            return self.store.export(self.table)

    def export_soon(self) -> None:
        """Export a moment after the last change, so the table on disk stays current without
        being rewritten on every key press."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = threading.Timer(self.export_delay_s, self._export_quietly)
        self._timer.daemon = True
        self._timer.start()

    def _export_quietly(self) -> None:
        try:
            self.export()
        except OSError as exc:
            log.error("export failed: %s", exc)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.export()


def _ref(item: Slice) -> SliceRef:
    h = item.header
    return SliceRef(h.sop_uid, item.case_id, item.study_id, h.series_uid, h.rows, h.columns, h.pixel_spacing)


def label_to_display(stored: dict | None, item: Slice) -> dict | None:
    """A stored label as the page sees it: display-frame box and outline."""
    if stored is None:
        return None
    display, shape = item.header.display, item.stored_shape
    box = None
    if stored["box_x0"] is not None:
        box = [round(v, 2) for v in display.box_to_display(
            (stored["box_x0"], stored["box_y0"], stored["box_x1"], stored["box_y1"]), shape)]
    outline = None
    if stored["outline"]:
        outline = display.points_to_display(stored["outline"], shape).round(2).tolist()
    return {"level": stored["level"], "grade": stored["grade"], "box": box, "outline": outline,
            "dsca_mm2": stored["dsca_mm2"], "box_source": stored["box_source"],
            "box_adjusted": bool(stored["box_adjusted"]), "label_source": stored["label_source"]}


def label_from_page(body: object, item: Slice) -> Label:
    """The page's label (display frame) checked there, then taken to the stored grid."""
    if not isinstance(body, dict):
        raise RequestError(400, "a label must be a JSON object")
    try:
        box = body.get("box")
        outline = body.get("outline")
        label = Label(level=str(body.get("level", "")), grade=str(body.get("grade") or ""),
                      box=None if box is None else tuple(float(v) for v in box),
                      outline=None if outline is None else [[float(x), float(y)] for x, y in outline],
                      box_source=str(body.get("box_source", "rater")), box_adjusted=bool(body.get("box_adjusted")),
                      label_source=str(body.get("label_source", "rater")))
    except (TypeError, ValueError):
        raise RequestError(400, "box must be four numbers and outline a list of (x, y) pairs") from None
    if label.box is not None and len(label.box) != 4:
        raise RequestError(400, "box must be four numbers (x0, y0, x1, y1)")
    check_label(label, item.display_shape)
    display, shape = item.header.display, item.stored_shape
    return Label(label.level, label.grade,
                 None if label.box is None else display.box_to_stored(label.box, shape),
                 None if label.outline is None else display.points_to_stored(label.outline, shape).tolist(),
                 label.box_source, label.box_adjusted, label.label_source)


#: The page loads nothing from anywhere but this server.
PAGE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                "Content-Security-Policy": "default-src 'self'; img-src data:; style-src 'unsafe-inline'; "
                                           "script-src 'unsafe-inline'"}


def _page(request: Request) -> HTMLResponse:
    text = resources.files("grading.label_app").joinpath("page.html").read_text(encoding="utf-8")
    return HTMLResponse(text, headers=PAGE_HEADERS)


def _session_json(request: Request) -> JSONResponse:
    session: Session = request.app.state.session
    own = session.store.labels_of(session.rater)
    labels = {s.id: label_to_display(own.get(s.header.sop_uid), s) for s in session.slices}
    return JSONResponse({
        "mode": session.mode, "rater": session.rater, "assist": session.assist is not None,
        "display_scale": DISPLAY_SCALE, "studies": 1 + max(s.study_index for s in session.slices),
        "slices": [s.info() for s in session.slices],
        "labels": {k: v for k, v in labels.items() if v is not None},
        "calls": ({s.id: s.call.to_json() for s in session.slices if s.call is not None}
                  if session.mode == "review" else {}),
    })


async def _pixels(request: Request) -> Response:
    item = request.app.state.session.slice(request.path_params["slice_id"])
    pixels = await run_in_threadpool(item.display_pixels)
    return Response(pixels.tobytes(), media_type="application/octet-stream",
                    headers={"X-Rows": str(pixels.shape[0]), "X-Columns": str(pixels.shape[1]),
                             "Cache-Control": "private, max-age=3600"})


async def _assist(request: Request) -> JSONResponse:
    session: Session = request.app.state.session
    if session.assist is None:
        raise RequestError(404, "this session was started without --assist")
    item = session.slice(request.path_params["slice_id"])
    box = await run_in_threadpool(session.assist.box, item)
    return JSONResponse({"box": None if box is None else [round(v, 2) for v in box]})


async def _outline(request: Request) -> JSONResponse:
    session: Session = request.app.state.session
    item = session.slice(request.path_params["slice_id"])
    body = await _json(request)
    box = body.get("box") if isinstance(body, dict) else None
    try:
        box = tuple(float(v) for v in box)
        assert len(box) == 4
    except (TypeError, ValueError, AssertionError):
        raise RequestError(400, "an outline is suggested inside a box: give box as four numbers") from None
    check_label(Label(level="", box=box), item.display_shape)
    pixels = await run_in_threadpool(item.display_pixels)
    outline = suggest_outline(pixels, box)
    if outline is None:
        raise RequestError(422, "no bright sac found in the box; draw the outline with the pen (p)")
    return JSONResponse({"outline": outline})


async def _put_label(request: Request) -> JSONResponse:
    session: Session = request.app.state.session
    item = session.slice(request.path_params["slice_id"])
    label = label_from_page(await _json(request), item)
    item.check_present()
    stored = await run_in_threadpool(session.store.save, session.rater, _ref(item), label)
    session.export_soon()
    log.debug("slice %d labelled %s", item.id + 1, label.level or "(draft)")
    return JSONResponse({"label": label_to_display(stored, item)})


async def _delete_label(request: Request) -> JSONResponse:
    session: Session = request.app.state.session
    item = session.slice(request.path_params["slice_id"])
    await run_in_threadpool(session.store.delete, session.rater, item.header.sop_uid)
    session.export_soon()
    return JSONResponse({"label": None})


async def _export(request: Request) -> JSONResponse:
    session: Session = request.app.state.session
    rows = await run_in_threadpool(session.export)
    return JSONResponse({"rows": rows, "table": session.table.name})


async def _json(request: Request):
    try:
        return await request.json()
    except ValueError:
        raise RequestError(400, "the request body is not JSON") from None


async def _refused(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, RequestError):
        status, message = exc.status, exc.message
    elif isinstance(exc, LabelError):
        status, message = 400, f"{exc}; nothing was saved"
    else:  # SliceGone
        status, message = 410, f"{exc}; nothing was saved"
    log.warning("%s %s -> %d: %s", request.method, request.url.path, status, message)
    return JSONResponse({"error": message}, status_code=status)


def _hostname(host_header: str) -> str:
    """'127.0.0.1:8000' -> '127.0.0.1', '[::1]:8000' -> '[::1]'."""
    if host_header.startswith("["):
        return host_header.split("]")[0] + "]"
    return host_header.split(":")[0]


class GuardMiddleware:
    """Refuse any request without the session token or with a Host that is not loopback;
    log each request by route only."""

    def __init__(self, app, session: Session):
        self.app, self.session = app, session

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        host = _hostname(request.headers.get("host", ""))
        token = request.headers.get(TOKEN_HEADER) or request.query_params.get("token", "")
        if host not in self.session.allowed_hosts:
            response = JSONResponse({"error": "requests must come from this machine"}, status_code=403)
        elif not hmac.compare_digest(token.encode(), self.session.token.encode()):
            response = JSONResponse({"error": "missing or wrong session token: open the address grade-label printed"},
                                    status_code=403)
        else:
            return await self.app(scope, receive, send)
        log.warning("%s %s refused: %s", request.method, request.url.path, "host" if host not in
                    self.session.allowed_hosts else "token")
        await response(scope, receive, send)


def create_app(session: Session) -> Starlette:
    @asynccontextmanager
    async def lifespan(app):
        yield
        await run_in_threadpool(session.close)

    routes = [
        Route("/", _page),
        Route("/api/session", _session_json),
        Route("/api/slices/{slice_id:int}/pixels", _pixels),
        Route("/api/slices/{slice_id:int}/assist", _assist),
        Route("/api/slices/{slice_id:int}/outline", _outline, methods=["POST"]),
        Route("/api/slices/{slice_id:int}/label", _put_label, methods=["PUT"]),
        Route("/api/slices/{slice_id:int}/label", _delete_label, methods=["DELETE"]),
        Route("/api/export", _export, methods=["POST"]),
    ]
    handlers = {RequestError: _refused, LabelError: _refused, SliceGone: _refused}
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.session = session
    app.add_middleware(GuardMiddleware, session=session)
    return app
