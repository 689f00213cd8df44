"""`newsindex serve`: a JSON API and a search page over one warehouse, both thin layers over
newsindex.api.Index (see its docstring for how the server stays up while an ingest writes).

Safe by default: binds 127.0.0.1, bounds every request (query length, k, SQL length, body size),
gives SQL a time limit and a row cap on a read-only in-memory snapshot, reaches no file through a
parameter (document ids are bound SQL values; static files come from the package's own folder),
loads nothing from another host (the API docs' scripts are served locally too), and sends no CORS headers unless origins are named.
"""

from __future__ import annotations

import datetime as dt
import decimal
import time
from pathlib import Path
from typing import Literal
from urllib.parse import urlencode

from fastapi import Body, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from fastapi_offline import FastAPIOffline
from markupsafe import Markup, escape
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from newsindex import api
from newsindex.api import Index

HERE = Path(__file__).resolve().parent
MAX_BODY_BYTES = 64 * 1024
Mode = Literal["hybrid", "semantic", "keyword"]


class SqlRequest(BaseModel):
    sql: str = Field(max_length=api.MAX_SQL_CHARS, description="One SELECT or EXPLAIN statement")
    params: list | dict | None = Field(default=None, description="Values for ? or $name placeholders")
    max_rows: int = Field(default=api.SQL_MAX_ROWS, ge=0, le=api.SQL_MAX_ROWS)
    seconds: float = Field(default=api.SQL_SECONDS, gt=0, le=api.SQL_SECONDS, description="Time limit (at most the server's)")


def create_app(index: Index, cors_origins: list[str] | None = None) -> FastAPI:
    # /docs and /redoc with Swagger UI's and ReDoc's files served from fastapi-offline's package
    # (under /static-offline-docs), not from a CDN: the docs work where the server has no network.
    app = FastAPIOffline(
        title="newsindex",
        description="Search news articles (semantic, keyword, hybrid) and read the warehouse with read-only SQL.",
        version="1",
    )
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["marked"] = marked
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["GET", "POST"], allow_headers=["content-type"])
    app.add_middleware(_BodyLimit, limit=MAX_BODY_BYTES)
    _errors(app)

    # --- JSON API ----------------------------------------------------------------------------

    @app.get("/api/search", summary="Search passages")
    def api_search(
        q: str = Query(min_length=1, max_length=api.MAX_QUERY_CHARS, description="The question or keywords"),
        k: int = Query(10, ge=1, le=api.MAX_K),
        mode: Mode = "hybrid",
        since: dt.date | None = None,
        until: dt.date | None = None,
        source: str | None = Query(None, max_length=api.MAX_QUERY_CHARS, description="Glob on the source path"),
        per_doc: bool = False,
        offset: int = Query(0, ge=0, le=api.MAX_K - 1),
    ) -> Response:
        hits = index.search(q, k=k, mode=mode, since=since, until=until, source=source, per_doc=per_doc, offset=offset)
        return _json({
            "query": hits.query,
            "mode": hits.mode,
            "took_ms": round(hits.seconds * 1000, 1),
            "offset": offset,
            "results": [hit_json(hit) for hit in hits],
            "warnings": hits.warnings,
            "snapshot": hits.freshness.as_json(),
        })

    @app.get("/api/documents/{doc_id:path}", summary="One article: full text and passages")
    def api_document(doc_id: str) -> Response:
        document = index.document(doc_id)
        return _json({**plain(document.__dict__), "snapshot": index.freshness().as_json()})

    @app.get("/api/related/{doc_id:path}", summary="Articles most like this one")
    def api_related(doc_id: str, k: int = Query(10, ge=1, le=api.MAX_K)) -> Response:
        return _json({"doc_id": doc_id, "results": plain(index.related(doc_id, k)), "snapshot": index.freshness().as_json()})

    @app.post("/api/sql", summary="Read-only SQL on the snapshot (time limit, row cap)")
    def api_sql(request: SqlRequest = Body()) -> Response:
        result = index.sql(request.sql, request.params, max_rows=request.max_rows, seconds=request.seconds)
        return _json({
            "columns": result.columns,
            "rows": plain(result.rows),
            "row_count": len(result.rows),
            "truncated": result.truncated,
            "took_ms": round(result.seconds * 1000, 1),
            "snapshot": index.freshness().as_json(),
        })

    @app.get("/api/stats", summary="What the warehouse holds")
    def api_stats() -> Response:
        return _json({**plain(index.stats()), "snapshot": index.freshness().as_json()})

    @app.get("/api/runs", summary="Recent ingest runs")
    def api_runs(limit: int = Query(20, ge=1, le=api.MAX_K)) -> Response:
        freshness = index.freshness()
        return _json({"runs": plain(index.runs(limit)), "writing": freshness.writer, "snapshot": freshness.as_json()})

    # --- pages -------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page_search(request: Request):
        args = request.query_params
        form = {name: args.get(name, "") for name in ("q", "mode", "since", "until", "source", "k", "offset")}
        form["mode"] = form["mode"] or "hybrid"
        context = {"form": form, "hits": None, "error": None, "freshness": None, "next_url": None, "prev_url": None}
        try:
            context["freshness"] = index.freshness()
            if form["q"].strip():
                k = _int(form["k"], 10, "k")
                offset = _int(form["offset"], 0, "offset")
                hits = index.search(form["q"], k=k, mode=form["mode"], since=form["since"] or None,
                                    until=form["until"] or None, source=form["source"] or None, offset=offset)  # fmt: skip
                context["hits"] = hits
                context["offset"] = offset
                shown = {name: value for name, value in form.items() if value and name != "offset"}
                if len(hits) == k and offset + 2 * k <= api.MAX_K:
                    context["next_url"] = "/?" + urlencode({**shown, "offset": offset + k})
                if offset:
                    context["prev_url"] = "/?" + urlencode({**shown, "offset": max(0, offset - k)})
        except Exception as err:  # noqa: BLE001 - shown on the page as one line
            context["error"] = one_line(err)
        return templates.TemplateResponse(request, "search.html", context, status_code=400 if context["error"] else 200)

    @app.get("/documents/{doc_id:path}", response_class=HTMLResponse, include_in_schema=False)
    def page_document(request: Request, doc_id: str, q: str = "", chunk: str = ""):
        try:
            document = index.document(doc_id)
            related = index.related(doc_id, 5)
        except api.NotFound as err:
            return templates.TemplateResponse(request, "error.html", {"error": str(err)}, status_code=404)
        passage = next((p for p in document.passages if p.chunk_id == chunk), None)
        terms = api.highlight_spans(document.text, q[: api.MAX_QUERY_CHARS]) if q else []
        if passage is not None:  # the matched words are marked within the matched passage only
            terms = [s for s in terms if passage.char_start <= s[0] and s[1] <= passage.char_end]
        body = marked(document.text, terms, (passage.char_start, passage.char_end) if passage else None)
        context = {"document": document, "body": body, "related": related, "q": q, "passage": passage,
                   "freshness": index.freshness()}  # fmt: skip
        return templates.TemplateResponse(request, "article.html", context)

    return app


def _json(data: dict) -> Response:
    """The body serialised once by orjson: FastAPI's own path (jsonable_encoder, then json.dumps)
    costs a few ms per search response of ten passages."""
    import orjson

    return Response(orjson.dumps(data), media_type="application/json")


def hit_json(hit) -> dict:
    data = plain(hit.as_json())
    data["highlights"] = [list(span) for span in (getattr(hit, "highlights", None) or [])]
    return data


def plain(value):
    """JSON-ready: dates as ISO text, decimals as floats, bytes as hex, dataclasses as dicts."""
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return plain(value.__dict__)
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return str(value)  # HUGEINT: JSON numbers past 64 bits are lost by most readers anyway
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def marked(text: str, terms: list, passage: tuple[int, int] | None = None) -> Markup:
    """`text` escaped, with each [start, end) span of `terms` in <mark class="term"> and the
    passage span, if any, in <mark class="passage" id="passage">."""
    cuts = {0, len(text)}
    for start, end in terms:
        cuts.update((start, end))
    if passage:
        cuts.update(passage)
    bounds = sorted(c for c in cuts if 0 <= c <= len(text))
    in_term = set()
    for start, end in terms:
        in_term.update(i for i, b in enumerate(bounds) if start <= b < end)
    out: list[str] = []
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        piece = str(escape(text[a:b]))
        if passage and a == passage[0]:
            out.append('<mark class="passage" id="passage">')
        out.append(f'<mark class="term">{piece}</mark>' if i in in_term else piece)
        if passage and b == passage[1]:
            out.append("</mark>")
    return Markup("".join(out))


def one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _int(value: str, default: int, name: str) -> int:
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise api.BadRequest(f"{name} must be a whole number, got {value[:20]!r}") from None


def _status(err: BaseException) -> int:
    import duckdb

    from newsindex.queries.named import QueryError
    from newsindex.queries.session import ModelMismatch
    from newsindex.warehouse.connection import WarehouseError

    for kind, status in ((api.BadRequest, 400), (api.NotFound, 404), (api.SqlRefused, 403), (api.SqlTimeout, 408),
                         (api.NotReady, 503), (ModelMismatch, 409), (QueryError, 400), (WarehouseError, 503),
                         (duckdb.Error, 400)):  # fmt: skip
        if isinstance(err, kind):
            return status
    return 500


def _errors(app: FastAPI) -> None:
    """Every error as {"error": "<one line>"} with its status code."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "request"
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": one_line(Exception(err.detail))}, status_code=err.status_code)

    async def known(request: Request, err: Exception) -> JSONResponse:
        return JSONResponse({"error": one_line(err)}, status_code=_status(err))

    # Registered per class, not only for Exception: Starlette sends a handler for Exception a
    # response and then re-raises, and uvicorn drops the keep-alive connection.
    for kind in _known_errors():
        app.add_exception_handler(kind, known)

    @app.exception_handler(Exception)
    async def failed(request: Request, err: Exception) -> JSONResponse:
        import logging

        logging.getLogger("newsindex.web").exception("request failed: %s", request.url.path)
        return JSONResponse({"error": f"internal error ({type(err).__name__}); see the server log"}, status_code=500)


def _known_errors() -> tuple[type[BaseException], ...]:
    import duckdb

    from newsindex.queries.named import QueryError
    from newsindex.warehouse.connection import WarehouseError

    return (api.ApiError, QueryError, WarehouseError, duckdb.Error)


class _BodyLimit:
    """Refuse request bodies over `limit` bytes (413) before they are read into memory, whether the
    client says their length or streams them."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await _too_large(send, self.limit)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(413, f"request body over {self.limit // 1024} KB")
            return message

        try:
            return await self.app(scope, limited, send)
        except _TooLarge:
            return await _too_large(send, self.limit)


class _TooLarge(StarletteHTTPException):
    """Raised while FastAPI reads the body; it passes HTTP errors through to the error handler."""


async def _too_large(send, limit: int) -> None:
    await JSONResponse({"error": f"request body over {limit // 1024} KB"}, status_code=413)(
        {"type": "http"}, None, send
    )


def serve(db: str | None, host: str = "127.0.0.1", port: int = 8750, cors_origins: list[str] | None = None,
          on_ready=None) -> None:  # fmt: skip
    """Load the snapshot, keep it fresh from a background thread, and serve until Ctrl-C."""
    import numpy  # noqa: F401 - loaded first, so that the limit below reaches its BLAS
    import uvicorn
    from threadpoolctl import threadpool_limits

    # Concurrency comes from requests; BLAS threads of one request spin-waiting for each other
    # while 20 requests run made every request slower.
    threadpool_limits(limits=1, user_api="blas")
    index = Index(db)
    started = time.perf_counter()
    try:
        freshness = index.freshness()
        loaded = f"{freshness.documents} documents, {freshness.chunks} chunks in memory ({time.perf_counter() - started:.1f}s)"
    except api.NotReady as err:
        loaded = f"not loaded yet ({one_line(err)}); retrying every second"
    index.start_refreshing(1.0)
    if on_ready:
        on_ready(index.path, loaded)
    try:
        uvicorn.run(create_app(index, cors_origins), host=host, port=port, log_level="warning", access_log=False)
    finally:
        index.close()
