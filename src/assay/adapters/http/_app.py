"""The Quart-Trio app: registers every route of the table and turns errors into JSON."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any

import msgspec
from quart import Response, request
from quart_trio import QuartTrio

from assay.adapters.http._docs import render_docs
from assay.adapters.http._errors import ErrorResponse, describe, unexpected
from assay.adapters.http._openapi import build_openapi
from assay.adapters.http._request import (
    authenticate,
    check_content_type,
    check_text,
    decode_body,
    parse_if_match,
    parse_query,
)
from assay.adapters.http._routing import JSON, Call, Documents, Route
from assay.adapters.http.console import register_console
from assay.adapters.http.routes import ROUTES
from assay.engine import LatencyRecorder

if TYPE_CHECKING:
    from assay.adapters.growthbook.routes import SdkFrontend
    from assay.engine import Engine

View = Callable[..., Awaitable[Response]]


def build_documents(routes: Sequence[Route] = ROUTES) -> Documents:
    document = build_openapi(routes)
    return Documents(openapi_json=msgspec.json.encode(document), docs_html=render_docs(document))


@functools.cache
def _documents() -> Documents:
    # The table is fixed at import, so the documents are built once per process.
    return build_documents()


def create_app(engine: Engine) -> QuartTrio:
    """An ASGI app serving ``engine`` over HTTP. Serve it with ``serve`` (hypercorn's trio
    worker) or drive it in tests with ``app.test_client()``."""
    app = QuartTrio("assay.adapters.http", static_folder=None)
    # Quart refuses a body over this size both from Content-Length and while a chunked
    # body streams in, before any of it is parsed.
    app.config["MAX_CONTENT_LENGTH"] = engine.config.max_body_bytes
    documents = _documents()
    for route in ROUTES:
        if route.raw:
            continue
        app.add_url_rule(
            route.rule,
            endpoint=route.operation_id,
            view_func=_view(engine, route, documents),
            methods=[route.method],
        )

    async def handle_error(error: Exception) -> Response:
        return error_response(error, max_body_bytes=engine.config.max_body_bytes)

    app.register_error_handler(Exception, handle_error)
    register_console(app, engine)
    from assay.adapters.growthbook.routes import register

    register(app, engine)
    return app


def create_asgi(engine: Engine) -> SdkFrontend:
    """What the server runs: GrowthBook's SDK protocol and the decide routes answered in
    plain ASGI, everything else by the Quart app (all from the same route table)."""
    from assay.adapters.growthbook.routes import SdkFrontend
    from assay.adapters.http._fast_path import DecideFrontend

    return SdkFrontend(engine, DecideFrontend(engine, create_app(engine), _documents()))


def _view(engine: Engine, route: Route, documents: Documents) -> View:
    # Every route's latency, successes and errors alike, for /metrics.
    latency = engine.latency.setdefault(f"{route.method} {route.path}", LatencyRecorder())

    async def view(**path: str) -> Response:
        started = perf_counter()
        try:
            return await respond(**path)
        finally:
            latency.observe(perf_counter() - started)

    async def respond(**path: str) -> Response:
        principal = (
            None
            if route.public
            else await authenticate(engine.service, request.headers.get("Authorization"))
        )
        query = parse_query(route, request.args)
        check_text("path", path)
        check_text("query", query)
        expected_revision = None
        if route.if_match:
            expected_revision = parse_if_match(request.headers.get("If-Match"))
        body = None
        if route.body is not None:
            # Raises RequestEntityTooLarge (413) past MAX_CONTENT_LENGTH, before decoding.
            raw = await request.get_data(cache=False, as_text=False, parse_form_data=False)
            check_content_type(request.headers.get("Content-Type"), raw)
            body = decode_body(route.body, raw)
        call = Call(
            engine=engine,
            principal=principal,
            path=path,
            query=query,
            body=body,
            expected_revision=expected_revision,
            documents=documents,
        )
        return _response(route, await route.endpoint(call))

    view.__name__ = route.operation_id
    return view


def _response(route: Route, result: Any) -> Response:
    if route.status == 204:
        response = Response(b"", status=204)
        del response.headers["Content-Type"]  # no content, so no content type
        return response
    if isinstance(result, str):
        return Response(result, status=route.status, content_type=route.media_type)
    payload = result if isinstance(result, bytes) else msgspec.json.encode(result)
    # Every JSON answer ends with a newline, so curl's output does not run into the prompt.
    response = Response(payload + b"\n", status=route.status, content_type=JSON)
    revision = getattr(result, "revision", None)
    if isinstance(revision, int):
        # The revision is the entity tag: send it back as If-Match to change this object.
        response.headers["ETag"] = f'"{revision}"'
    return response


def error_response(error: BaseException, *, max_body_bytes: int | None = None) -> Response:
    status, body, headers = describe(error)
    if status >= 500 and body.code == "internal_error":
        unexpected(error)
    if body.code == "body_too_large" and max_body_bytes is not None:
        body = msgspec.structs.replace(body, details={"max_bytes": max_body_bytes})
    response = Response(
        msgspec.json.encode(ErrorResponse(error=body)) + b"\n", status=status, content_type=JSON
    )
    response.headers.update(headers)
    return response
