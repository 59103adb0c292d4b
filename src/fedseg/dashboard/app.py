"""The dashboard's web app: a FastAPI factory serving one read-only page of a run.

Routes, all ``GET`` (the app has no route that writes, and the store is opened with
SQLite's read-only mode):

- ``/``: the page (``static/index.html``), its script and style under ``/static/``;
- ``/static/plotly.min.js``: plotly.js from the installed ``plotly`` wheel, served here so
  the page needs nothing from the internet;
- ``/api/state``: the run's JSON snapshot (``dashboard.state.run_state``) and its version;
- ``/api/events``: server-sent events; one ``state`` event ``{"version": n}`` when a client
  connects and one each time the store changes. The page then fetches ``/api/state``.

One watcher thread per app (:class:`StoreWatch`) checks the store every ``poll_s``
seconds: SQLite's ``PRAGMA data_version`` on its own read-only connection (it changes when
another connection commits) and whether the run's lock is held (a run whose writer died
changes state without a write). Clients only read its version, so the store is checked
once per interval whatever the number of pages open.

Access (:func:`guard`): with a ``token``, every request must carry it, as
``Authorization: Bearer TOKEN``, as the HttpOnly SameSite=Strict cookie set on the first
request that gave it, or as ``?token=TOKEN`` (an ``EventSource`` cannot set headers);
compared with ``hmac.compare_digest``; anything else gets 401 and no run data. Without a
token the server listens on loopback only (``dashboard.serve.check_bind``), and requests
must name a loopback host (``Host`` header), so a web page elsewhere cannot read the run
through a DNS name pointed at 127.0.0.1. Any method but GET/HEAD gets 405.
"""

from __future__ import annotations

import hmac
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

from fedseg.dashboard.state import run_state
from fedseg.errors import FedsegError
from fedseg.run_folder import STORE_FILE, probe_lock
from fedseg.tracking.status import open_run

TOKEN_COOKIE = "fedseg_dashboard_token"
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
#: the page's own files (package data)
STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}


class StoreWatch:
    """A version number that grows each time the run store (or its lock) changes, kept by
    one daemon thread that checks every ``poll_s`` seconds."""

    def __init__(self, run: Path, poll_s: float = 1.0) -> None:
        self.run = Path(run)
        self.poll_s = poll_s
        self.version = 0
        self._seen: tuple[Any, ...] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the thread (once); the first check is done before this returns."""
        with self._lock:
            if self._thread is not None:
                return
            db = _read_only(self.run / STORE_FILE)
            self._check(db)
            self._thread = threading.Thread(
                target=self._loop, args=(db,), name="dashboard-watch", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self, db: sqlite3.Connection) -> None:
        try:
            while not self._stop.wait(self.poll_s):
                self._check(db)
        finally:
            db.close()

    def _check(self, db: sqlite3.Connection) -> None:
        try:
            (data_version,) = db.execute("PRAGMA data_version").fetchone()
        except sqlite3.Error:  # busy or gone for a moment: the next check sees it
            return
        lock = probe_lock(self.run)
        seen = (data_version, lock.held, lock.hung)
        if seen != self._seen:
            self._seen = seen
            self.version += 1


def _read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection (SQLite ``mode=ro``) usable from the watcher thread."""
    uri = path.resolve().as_uri() + "?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)


def plotly_js() -> Path:
    """``plotly.min.js`` of the installed ``plotly`` wheel."""
    try:
        found = resources.files("plotly") / "package_data" / "plotly.min.js"
    except ModuleNotFoundError:
        found = None
    if found is None or not found.is_file():
        raise FedsegError(
            "plotly.min.js not found: install the plotly package (pip install plotly)"
        )
    return Path(str(found))


def create_app(run: Path, token: str | None = None, *, poll_s: float = 1.0) -> FastAPI:
    """The dashboard of the run folder ``run`` (``token``: required on every request; see
    the module docstring). ``poll_s``: seconds between two checks of the store."""
    run = Path(run)
    open_run(run).close()  # a folder that is not a run: one line, before anything serves
    watch = StoreWatch(run, poll_s)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        watch.stop()

    app = FastAPI(
        title="fedseg dashboard", docs_url=None, redoc_url=None, openapi_url=None,
        lifespan=lifespan,
    )  # fmt: skip
    app.state.watch = watch
    app.middleware("http")(guard(token))
    static = resources.files("fedseg.dashboard") / "static"

    @app.get("/")
    def index() -> Response:
        return _static(static, "index.html")

    @app.get("/static/plotly.min.js")
    def plotly() -> Response:
        try:
            path = plotly_js()
        except FedsegError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        return FileResponse(path, media_type="text/javascript", headers=_CACHE)

    @app.get("/static/{name}")
    def static_file(name: str) -> Response:
        if name not in STATIC_FILES:
            return JSONResponse({"error": "not found"}, status_code=404)
        return _static(static, name)

    @app.get("/api/state")
    def state() -> dict[str, Any]:
        watch.start()
        version = watch.version
        store = open_run(run)
        try:
            return {"version": version, **run_state(run, store)}
        finally:
            store.close()

    @app.get("/api/events", response_class=EventSourceResponse)
    async def events() -> AsyncIterator[ServerSentEvent]:
        await anyio.to_thread.run_sync(watch.start)
        sent = None
        while True:
            if watch.version != sent:
                sent = watch.version
                yield ServerSentEvent(
                    event="state", data={"version": sent}, id=str(sent), retry=2000
                )
            await anyio.sleep(min(poll_s, 0.25))

    return app


_CACHE = {"Cache-Control": "public, max-age=86400"}


def _static(folder: Any, name: str) -> Response:
    body = (folder / name).read_bytes()
    return Response(body, media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})


Next = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Next], Awaitable[Response]]


def guard(token: str | None) -> Handler:
    """The middleware that admits a request (see the module docstring)."""
    expected = token.encode() if token else None

    async def check(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.method not in ("GET", "HEAD"):
            return JSONResponse(
                {"error": "read-only: only GET"}, status_code=405, headers={"Allow": "GET"}
            )
        if expected is None:
            if _host_name(request.headers.get("host", "")) not in LOOPBACK_NAMES:
                return JSONResponse({"error": "loopback host names only"}, status_code=403)
            return await call_next(request)
        header = request.headers.get("authorization", "")
        bearer = header[7:] if header[:7].lower() == "bearer " else None
        cookie = request.cookies.get(TOKEN_COOKIE)
        query = request.query_params.get("token")
        if not any(_same(given, expected) for given in (bearer, cookie, query)):
            return JSONResponse(
                {"error": "token required"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        response = await call_next(request)
        if cookie is None or not _same(cookie, expected):
            response.set_cookie(
                TOKEN_COOKIE, token or "", httponly=True, samesite="strict", path="/"
            )
        return response

    return check


def _same(given: str | None, expected: bytes) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected)


def _host_name(host: str) -> str:
    """The name of a ``Host`` header without its port (``[::1]:8765`` -> ``[::1]``)."""
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
