"""The routes: ``/metrics``, ``/export``, the landing page, health, readiness and reload.

Handlers only read ``store.snapshot``; they never talk to Ollama (no URL from a request is ever
fetched) and heavy work (gzip, CSV/JSON of many rows) happens off the event loop or once per
snapshot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Final

from aiohttp import web

from ometer_exporter import __version__
from ometer_exporter.config.settings import DEFAULT_DISPLAY, Settings
from ometer_exporter.store.records import Snapshot
from ometer_exporter.views import history, page
from ometer_exporter.views.query import ExportError, Query
from ometer_exporter.views.rows import (
    CAPACITY_COLUMNS,
    LENGTH_COLUMNS,
    Row,
    capacity_rows,
    length_rows,
    rows,
    to_csv,
    to_json,
)
from ometer_exporter.web.lifecycle import EXPORTER
from ometer_exporter.web.negotiate import accepts_gzip, wants_openmetrics

# ``--web.enable-lifecycle``: whether ``POST /-/reload`` works (off by default, as Prometheus).
LIFECYCLE_API: Final = web.AppKey("enable_lifecycle", bool)

# ``/export?view=``: how its rows are made, and their fixed columns (the models view's depend
# on ``verbose``).
ROWS_OF: Final[Mapping[str, Callable[[Snapshot, Query], list[Row]]]] = {
    "models": rows, "prompt_length": length_rows, "capacity": capacity_rows,
}  # fmt: skip
COLUMNS_OF: Final[Mapping[str, Sequence[str]]] = {
    "prompt_length": LENGTH_COLUMNS, "capacity": CAPACITY_COLUMNS,
}  # fmt: skip

TEXT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE: Final = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/export", export)
    app.router.add_get("/api/history", api_history)
    app.router.add_get("/", landing)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)


async def metrics(request: web.Request) -> web.Response:
    exporter = request.app[EXPORTER]
    openmetrics = wants_openmetrics(request.headers.get("Accept", ""))
    gzip = accepts_gzip(request.headers.get("Accept-Encoding", ""))
    body = await exporter.exposition.render(
        exporter.store.snapshot, openmetrics=openmetrics, gzip=gzip
    )
    response = web.Response(body=body)
    response.headers["Content-Type"] = OPENMETRICS_TYPE if openmetrics else TEXT_TYPE
    if gzip:
        response.headers["Content-Encoding"] = "gzip"
    response.headers["Vary"] = "Accept, Accept-Encoding"
    return response


def _params(request: web.Request) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for key, value in request.query.items():
        params.setdefault(key, []).append(value)
    return params


async def api_history(request: web.Request) -> web.Response:
    """``/api/history``: each model's stored results (``views.history``), read and encoded in
    worker threads (a model's series is kept encoded until it is measured again), bounded in
    points per model and in all."""
    try:
        query = history.HistoryQuery.parse(_params(request))
    except ExportError as exc:
        return web.Response(status=400, text=f"bad request: {exc}\n")
    exporter = request.app[EXPORTER]
    text = await history.answer(exporter.store, query, exporter.history_cache)
    return web.Response(
        text=text, content_type="application/json", charset="utf-8",
        headers={"Cache-Control": "no-store"},
    )  # fmt: skip


async def export(request: web.Request) -> web.Response:
    params = _params(request)
    try:
        query = Query.parse(params)
    except ExportError as exc:
        return web.Response(status=400, text=f"bad request: {exc}\n")
    snapshot = request.app[EXPORTER].store.snapshot
    items, columns = ROWS_OF[query.view](snapshot, query), COLUMNS_OF.get(query.view)
    if query.format == "csv":
        text = await asyncio.to_thread(lambda: to_csv(items, columns=columns))
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return web.Response(
            text=text,
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="ometer-{stamp}.csv"'},
        )
    text = await asyncio.to_thread(lambda: to_json(items, columns=columns))
    return web.Response(text=text, content_type="application/json", charset="utf-8")


async def healthy(request: web.Request) -> web.Response:
    return web.Response(text="Healthy.\n")


async def ready(request: web.Request) -> web.Response:
    exporter = request.app[EXPORTER]
    if not exporter.ready:
        return web.Response(status=503, text="Not ready: restoring results or starting the loop.\n")
    if not exporter.scheduler.running:
        return web.Response(status=503, text="Not ready: a benchmark worker is being restarted.\n")
    return web.Response(text="Ready.\n")


async def reload(request: web.Request) -> web.Response:
    """``POST /-/reload``: only with ``--web.enable-lifecycle``, and never from another site's
    page (a form post carries the browser's cached basic-auth credentials)."""
    if not request.app[LIFECYCLE_API]:
        return web.Response(
            status=403,
            text="Lifecycle API is not enabled: start with --web.enable-lifecycle to reload "
            "over HTTP, or send SIGHUP.\n",
        )
    if _cross_site(request):
        return web.Response(status=403, text="Cross-site reload refused.\n")
    problem = await request.app[EXPORTER].reload()
    if problem is not None:
        return web.Response(status=500, text=f"reload failed, old configuration kept:\n{problem}\n")
    return web.Response(text="Reloaded.\n")


def _cross_site(request: web.Request) -> bool:
    """A browser says where a request comes from: ``Sec-Fetch-Site``, or an ``Origin`` whose
    host is not this one. curl, Prometheus and scripts send neither."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    host = origin.partition("://")[2]
    return origin == "null" or host.lower() != request.host.lower()


async def landing(request: web.Request) -> web.Response:
    exporter = request.app[EXPORTER]
    # A big table: off the loop.
    text = await asyncio.to_thread(render_landing, exporter.store.snapshot, exporter.settings)
    return web.Response(
        # Every model row is checked (``views.isolation``); any other text the page shows
        # (a server's version string) never fails the page: "?" for what UTF-8 cannot hold.
        body=text.encode("utf-8", "replace"),
        content_type="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": page.CONTENT_SECURITY_POLICY,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


def render_landing(snapshot: Snapshot, settings: Settings | None = None) -> str:
    display = settings.display if settings is not None else DEFAULT_DISPLAY
    return page.render(snapshot, version=__version__, display=display)
