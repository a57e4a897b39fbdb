"""Where GrowthBook's SDKs reach assay: the protocol's routes (``protocol``) served in plain
ASGI in front of the Quart app, and the same answers registered in the Quart app (its test
client and any server running ``create_app`` alone).

The route table's entries for these routes (what the OpenAPI document says of them) are in
``adapters/http/routes/sdk_protocol.py``, with the rest of the table, so the HTTP adapter
never imports this module at import time (no import cycle). The plain-ASGI front exists
for speed: ``GET /api/features/{clientKey}`` is polled by every
SDK of every client, and Quart's request machinery costs several times a dictionary
lookup and a send. ``answer`` is the one dispatch both paths call, so they cannot differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from assay.adapters.growthbook.protocol import (
    CORS,
    EVAL,
    EVENTS,
    FEATURES,
    NOT_FOUND,
    PREFIXES,
    PREFLIGHT,
    Answer,
    BodyReader,
    EvalRequest,
    ExposureBatch,
    SdkProtocol,
    client_key_of,
)
from assay.adapters.http._errors import ErrorResponse, HttpError, describe, unexpected
from assay.adapters.http._request import check_content_type, decode_body
from assay.adapters.http._routing import JsonBody
from assay.adapters.http.routes.sdk_protocol import ROUTES

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from assay.engine import Engine

_encode = msgspec.json.Encoder().encode
_JSON = (b"content-type", b"application/json")
_EVAL_BODY = JsonBody(EvalRequest)
_EVENTS_BODY = JsonBody(ExposureBatch)


async def answer(
    protocol: SdkProtocol,
    method: str,
    path: str,
    headers: Mapping[bytes, bytes],
    read_body: BodyReader,
) -> Answer:
    """The answer to one request on a protocol path (one of ``PREFIXES``)."""
    if method == "OPTIONS":
        # A preflight says nothing about keys: the same answer for every one.
        return 204, PREFLIGHT, b""
    try:
        if path.startswith(FEATURES):
            if method not in ("GET", "HEAD"):
                raise _method_not_allowed("GET")
            status, out, body = protocol.features(
                client_key_of(path, FEATURES), headers.get(b"if-none-match")
            )
            return status, out, b"" if method == "HEAD" else body
        prefix = EVAL if path.startswith(EVAL) else EVENTS
        if method != "POST":
            raise _method_not_allowed("POST")
        connection = protocol.connection(client_key_of(path, prefix))
        if connection is None:
            return NOT_FOUND
        raw = await read_body()
        content_type = headers.get(b"content-type")
        if prefix != EVENTS or not _is_text(content_type):
            check_content_type(
                None if content_type is None else content_type.decode("latin-1"), raw
            )
        result: Any
        if prefix == EVAL:
            result = await protocol.evaluate(connection, decode_body(_EVAL_BODY, raw))
        else:
            result = await protocol.record(connection, decode_body(_EVENTS_BODY, raw))
        body = _encode(result) + b"\n"
        return 200, [_JSON, (b"content-length", b"%d" % len(body)), *CORS], body
    except Exception as error:
        return _error(error, protocol)


def _is_text(content_type: bytes | None) -> bool:
    """Whether a body is sent as ``text/plain``: exposures may be, read as JSON, because a
    page's last exposures leave with ``navigator.sendBeacon``, and a beacon to another
    origin may carry only a type that needs no CORS preflight."""
    if content_type is None:
        return False
    return content_type.split(b";", 1)[0].strip().lower() == b"text/plain"


def _method_not_allowed(allowed: str) -> HttpError:
    return HttpError(
        405,
        "method_not_allowed",
        f"this route answers {allowed} (and OPTIONS)",
        {"allowed": [allowed, "OPTIONS"]},
    )


def _error(error: Exception, protocol: SdkProtocol) -> Answer:
    status, body, extra = describe(error)
    if status >= 500 and body.code == "internal_error":
        unexpected(error)
    payload = _encode(ErrorResponse(error=body)) + b"\n"
    headers = [
        _JSON,
        (b"content-length", b"%d" % len(payload)),
        *CORS,
        *[(k.lower().encode(), v.encode()) for k, v in extra.items()],
    ]
    if status == 405:
        headers.append((b"allow", b"GET, POST, OPTIONS"))
    return status, headers, payload


# --- plain ASGI ---------------------------------------------------------------------------


class SdkFrontend:
    """ASGI app: the protocol's paths here, everything else through ``app``."""

    def __init__(self, engine: Engine, app: Any) -> None:
        self._app = app
        self._protocol = SdkProtocol(engine)
        self._max_body = engine.config.max_body_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIXES):
            await self._app(scope, receive, send)
            return
        path = scope["path"]
        method = scope["method"]
        if method == "GET" and path.startswith(FEATURES):
            # The hottest request of all (every SDK polls it): what ``answer`` does for it,
            # without building a header dictionary or a body reader.
            if_none_match = None
            for name, value in scope["headers"]:
                if name == b"if-none-match":
                    if_none_match = value
                    break
            try:
                status, out, body = self._protocol.features(path[len(FEATURES) :], if_none_match)
            except Exception as error:  # a bug: answered as every other route answers one
                status, out, body = _error(error, self._protocol)
            await send({"type": "http.response.start", "status": status, "headers": out})
            await send({"type": "http.response.body", "body": body})
            return
        headers = dict(scope["headers"])

        async def read_body() -> bytes:
            declared = headers.get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self._max_body:
                raise _too_large(self._max_body)
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise HttpError(400, "bad_request", "the client went away")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self._max_body:
                    raise _too_large(self._max_body)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)

        status, out, body = await answer(self._protocol, method, path, headers, read_body)
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": body})


def _too_large(limit: int) -> HttpError:
    return HttpError(
        413, "body_too_large", f"the body is larger than {limit} bytes", {"max_bytes": limit}
    )


# --- the same answers in the Quart app ----------------------------------------------------


def register(app: QuartTrio, engine: Engine) -> None:
    """Serve the protocol's routes from the Quart app too (what ``create_app`` builds)."""
    from quart import Response, request

    protocol = SdkProtocol(engine)

    async def view(client_key: str) -> Response:
        async def read_body() -> bytes:
            data: bytes = await request.get_data(cache=False, as_text=False, parse_form_data=False)
            return data

        headers = {k.lower().encode("latin-1"): v.encode("latin-1") for k, v in request.headers}
        status, out, body = await answer(protocol, request.method, request.path, headers, read_body)
        response = Response(body, status=status)
        response.headers.clear()
        for name, value in out:
            if name != b"content-length":
                response.headers[name.decode("latin-1")] = value.decode("latin-1")
        return response

    for route in ROUTES:
        app.add_url_rule(
            route.rule,
            endpoint=route.operation_id,
            view_func=view,
            methods=[route.method, "OPTIONS"],
            provide_automatic_options=False,
        )
