"""A plain-ASGI front for the hottest routes, ``POST /api/v1/decide`` and
``/api/v1/decide/batch``.

Quart's request machinery costs several times what deciding does, and these two routes are
called on every request of every service using assay. This front answers them directly,
with the same route table entries, the same helpers (authentication, query, body, errors)
and the same endpoint functions as the Quart app, so behaviour cannot differ; everything
else passes through to Quart untouched.
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import msgspec
import trio
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from assay.adapters.http._errors import ErrorResponse, describe, unexpected
from assay.adapters.http._request import (
    authenticate,
    check_content_type,
    check_text,
    decode_body,
    parse_query,
)
from assay.adapters.http._routing import Call, JsonBody, Route
from assay.adapters.http.routes import ROUTES
from assay.engine import LatencyRecorder

if TYPE_CHECKING:
    from assay.adapters.http._routing import Documents
    from assay.engine import Engine

# ASGI's own types are hypercorn's and Quart's TypedDicts; this module only reads a few
# keys, so it speaks plain mappings.
Scope = Any
Receive = Any
Send = Any
ASGIApp = Any

FAST_PATHS = ("/api/v1/decide", "/api/v1/decide/batch")
_JSON_HEADERS = [(b"content-type", b"application/json")]
_encode = msgspec.json.Encoder().encode


_LAST_SEND_SECONDS = 10.0
"""How long the last send of a response may take once shielded (a client that reads
nothing must not hold a task forever)."""


def _shield_last_send(send: Send) -> Send:
    """``send`` with the response's last message shielded from cancellation.

    When a response is complete before its request's body has arrived (a 404, 405, 401 or
    413 answered from the headers), hypercorn closes the connection from inside that last
    send, since the rest of the body would be read as the next request. Quart cancels its
    request tasks as soon as the response is out, which cancelled the close half-way:
    the connection stayed open and the next request on it was never answered. Shielded
    (with a deadline of its own), the close completes."""

    async def shielded(message: Any) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            deadline = trio.current_time() + _LAST_SEND_SECONDS
            with trio.CancelScope(shield=True, deadline=deadline):
                await send(message)
            return
        await send(message)

    return shielded


class DecideFrontend:
    """ASGI app: the decide routes here, everything else through ``app``."""

    def __init__(self, engine: Engine, app: ASGIApp, documents: Documents) -> None:
        self._engine = engine
        self._app = app
        self._documents = documents
        self._max_body = engine.config.max_body_bytes
        self._routes: dict[str, Route] = {
            r.path: r for r in ROUTES if r.method == "POST" and r.path in FAST_PATHS
        }
        self._latency = {
            path: engine.latency.setdefault(f"POST {path}", LatencyRecorder())
            for path in self._routes
        }
        # What parse_query makes of no query string, the usual case: parsed once.
        self._no_query = {path: parse_query(r, MultiDict()) for path, r in self._routes.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = (
            self._routes.get(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        if route is None:
            await self._app(scope, receive, _shield_last_send(send))
            return
        started = perf_counter()
        try:
            status, payload, headers = await self._answer(route, scope, receive)
        finally:
            self._latency[route.path].observe(perf_counter() - started)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*_JSON_HEADERS, (b"content-length", b"%d" % len(payload)), *headers],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _answer(
        self, route: Route, scope: Scope, receive: Receive
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        try:
            # ASGI servers give header names lowercased (the spec requires it).
            headers = dict(scope["headers"])
            declared = headers.get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self._max_body:
                raise RequestEntityTooLarge()
            authorization = headers.get(b"authorization")
            principal = await authenticate(
                self._engine.service,
                None if authorization is None else authorization.decode("latin-1"),
            )
            raw_query = scope["query_string"]
            query = (
                parse_query(route, MultiDict(parse_qsl(raw_query.decode("latin-1"), True)))
                if raw_query
                else dict(self._no_query[route.path])
            )
            if raw_query:
                check_text("query", query)
            raw = await self._read_body(receive)
            content_type = headers.get(b"content-type")
            check_content_type(
                None if content_type is None else content_type.decode("latin-1"), raw
            )
            assert isinstance(route.body, JsonBody)
            call = Call(
                engine=self._engine,
                principal=principal,
                path={},
                query=query,
                body=decode_body(route.body, raw),
                expected_revision=None,
                documents=self._documents,
            )
            # A newline after the JSON, as the Quart app's answers have.
            return route.status, _encode(await route.endpoint(call)) + b"\n", []
        except Exception as error:
            status, body, extra = describe(error)
            if status >= 500 and body.code == "internal_error":
                unexpected(error)
            if body.code == "body_too_large":
                body = msgspec.structs.replace(body, details={"max_bytes": self._max_body})
            return (
                status,
                _encode(ErrorResponse(error=body)) + b"\n",
                [(k.lower().encode(), v.encode()) for k, v in extra.items()],
            )

    async def _read_body(self, receive: Receive) -> bytes:
        """The whole body, refused (413, the very error Quart raises for the other routes)
        as soon as it grows past the limit, before any of it is parsed."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest("the client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise RequestEntityTooLarge()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
