"""The search service's HTTP API (FastAPI): search, health, pages and their images, the page viewer.

Every answer names the index version that produced it and the model that encoded the query; every
refusal is a 4xx with a one-line JSON body ``{"error": "..."}`` (5xx only for a broken index or a bug,
also one line, the traceback in the server's log).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from anchorprune.serving.catalog import Catalog, snippet
from anchorprune.serving.errors import ClientError
from anchorprune.serving.state import SearchState

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 1000          # a query is a question, not a document
MAX_K = 100
MAX_BATCH = 64
DEFAULT_K = 10


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:500]


def check_query(q: Any, where: str = "q") -> str:
    if not isinstance(q, str):
        raise ClientError(f"{where} must be a string")
    if not q.strip():
        raise ClientError(f"{where} is empty: pass the text to search for, e.g. ?q=how+do+I+install+R+packages")
    if len(q) > MAX_QUERY_CHARS:
        raise ClientError(f"{where} is {len(q)} characters long; at most {MAX_QUERY_CHARS}", 413)
    if "\x00" in q:
        raise ClientError(f"{where} holds a NUL character")
    return q


def check_k(k: Any) -> int:
    try:
        if isinstance(k, bool) or (isinstance(k, float) and not k.is_integer()):
            raise ValueError
        k = int(k)
    except (TypeError, ValueError):
        raise ClientError(f"k must be an integer from 1 to {MAX_K}, got {str(k)[:20]!r}") from None
    if not 1 <= k <= MAX_K:
        raise ClientError(f"k must be from 1 to {MAX_K}, got {k}")
    return k


def _query_params(request: Request) -> dict[str, str]:
    """The query string decoded strictly as UTF-8 (Starlette would replace bad bytes silently)."""
    raw = request.scope.get("query_string", b"")
    try:
        pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise ClientError("the query string is not valid UTF-8") from None
    return dict(pairs)


def create_app(state: SearchState, catalog: Catalog | None = None) -> FastAPI:
    """The API over a loaded :class:`SearchState` (tests build one over a fixture workspace)."""
    from anchorprune.serving import viewer

    catalog = catalog if catalog is not None else Catalog(state.ws)
    app = FastAPI(title="anchorprune search", docs_url="/docs", redoc_url=None)
    app.state.search = state
    app.state.catalog = catalog

    @app.exception_handler(ClientError)
    async def _client_error(request: Request, exc: ClientError):
        return JSONResponse({"error": _one_line(str(exc))}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x not in ("query", "path", "body"))
        return JSONResponse({"error": _one_line(f"{where or 'request'}: {first.get('msg', 'invalid')}")},
                            status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": _one_line(exc.detail or "error")}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        from anchorprune.index.base import IndexInputError, IndexStoreError

        if isinstance(exc, IndexInputError):
            return JSONResponse({"error": _one_line(str(exc))}, status_code=400)
        if isinstance(exc, IndexStoreError):
            log.error("search service: %s", exc)
            return JSONResponse({"error": _one_line(str(exc))}, status_code=503)
        log.exception("search service: %s %s failed", request.method, request.url.path)
        return JSONResponse({"error": _one_line(f"internal error ({type(exc).__name__}); see the server log")},
                            status_code=500)

    def answer(queries: list[str], k: int) -> tuple[Any, list[list[dict[str, Any]]], Any]:
        try:
            pinned, hits, report = state.search(queries, k)
        except ValueError as exc:                    # e.g. a query with no tokens for this encoder
            from anchorprune.index.base import IndexStoreError

            if isinstance(exc, IndexStoreError):
                raise
            raise ClientError(str(exc)) from None
        catalog.ensure([h.page_id for row in hits for h in row])
        out = []
        for q, row in zip(queries, hits, strict=True):
            rows = []
            for rank, h in enumerate(row, 1):
                rec = catalog.get(h.page_id)
                rows.append({"rank": rank, "page_id": h.page_id, "score": float(h.score),
                             "document": rec.document if rec else "?",
                             "page_number": rec.page_number if rec else None,
                             "title": rec.title if rec else "(not in the dataset)",
                             "snippet": snippet(rec.text, q) if rec else ""})
            out.append(rows)
        return pinned, out, report

    def envelope(pinned, report, took: float) -> dict[str, Any]:
        first = None
        if report is not None:
            first = {"stage": report.first_stage, "candidates": report.candidates, "pages": report.pages,
                     "configured": report.configured}
        return {"index": state.index.name, "backend": state.backend, "version": pinned.number,
                "model": pinned.model, "first_stage": first, "took_ms": round(took * 1000, 2)}

    @app.get("/search")
    def search_get(request: Request):
        params = _query_params(request)
        q = check_query(params.get("q", ""))
        k = check_k(params.get("k", DEFAULT_K))
        t0 = time.perf_counter()
        pinned, rows, report = answer([q], k)
        return {**envelope(pinned, report, time.perf_counter() - t0), "query": q, "hits": rows[0]}

    @app.post("/search")
    async def search_post(request: Request):
        raw = await request.body()
        try:
            body = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ClientError("the request body is not valid UTF-8") from None
        except ValueError:
            raise ClientError('the request body is not JSON; send {"queries": ["..."], "k": 10}') from None
        if not isinstance(body, dict) or not isinstance(body.get("queries"), list):
            raise ClientError('send {"queries": ["...", ...], "k": 10}')
        queries = body["queries"]
        if not queries:
            raise ClientError("queries is empty")
        if len(queries) > MAX_BATCH:
            raise ClientError(f"{len(queries)} queries in one request; at most {MAX_BATCH}", 413)
        queries = [check_query(q, f"queries[{i}]") for i, q in enumerate(queries)]
        k = check_k(body.get("k", DEFAULT_K))
        from starlette.concurrency import run_in_threadpool

        t0 = time.perf_counter()
        pinned, rows, report = await run_in_threadpool(answer, queries, k)
        env = envelope(pinned, report, time.perf_counter() - t0)
        return {**env, "results": [{"query": q, "hits": r} for q, r in zip(queries, rows, strict=True)]}

    @app.get("/health")
    def health():
        return state.health()

    @app.get("/pages/{page_id}")
    def page(page_id: str):
        if catalog.get(page_id) is None:
            raise ClientError(f"unknown page {page_id[:80]!r}", 404)
        return catalog.describe(page_id)

    @app.get("/pages/{page_id}/image")
    def page_image(page_id: str):
        if catalog.get(page_id) is None:
            raise ClientError(f"unknown page {page_id[:80]!r}", 404)
        got = catalog.image(page_id)
        if got is None:
            raise ClientError(f"page {page_id[:80]!r} has no rendered image in the dataset", 404)
        data, media = got
        return Response(data, media_type=media, headers={"Cache-Control": "max-age=3600"})

    viewer.mount(app, state, catalog)
    return app
