"""Turning a raw request into a ``Call``'s parts: the caller, query, ``If-Match`` and body.

Nothing here decides what a caller may do (the service does); it only checks that the
request is well formed, so that bad input fails before anything is read or written.

Two limits hold for every body, path and query, before anything is decoded into the
engine's types:

- Text PostgreSQL cannot store: the NUL character (``\u0000``) anywhere in a string or
  an object key, or in a path or query parameter, is 422 ``invalid_text``. (JSON text that
  is not UTF-8, lone surrogates included, is already 400 ``malformed_json``.) Refused here,
  it never reaches a writer shared with other callers.
- Nesting: a JSON body nested deeper than ``MAX_JSON_DEPTH`` (arrays and objects) is 422
  ``too_deep``: attributes, values and conditions are walked recursively further on.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from assay.adapters.http._errors import HttpError, invalid_body, malformed_json
from assay.adapters.http._routing import JsonBody, PatchBody, Route
from assay.engine import Unauthenticated, ValidationFailed

if TYPE_CHECKING:
    from collections.abc import Mapping

    from werkzeug.datastructures import MultiDict

    from assay.engine import ApiKey, ConfigService

MAX_JSON_DEPTH = 64
"""Arrays and objects nested in a request body, at most (the body itself is level 1)."""

_NUL_ESCAPE = b"\\u0000"
# Every byte but the four brackets, for bytes.translate to delete.
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENING = np.frombuffer(b"[{", dtype=np.uint8)

_REVISION = re.compile(r'^(?:W/)?"?(?P<revision>[0-9]{1,18})"?$')


async def authenticate(service: ConfigService, authorization: str | None) -> ApiKey:
    """The key named by an ``Authorization: Bearer <secret>`` header."""
    if not authorization:
        raise Unauthenticated("an API key is required: send Authorization: Bearer <key>")
    scheme, _, secret = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthenticated("the Authorization header must be: Bearer <key>")
    return await service.authenticate(secret.strip())


def parse_query(route: Route, args: MultiDict[str, str]) -> dict[str, str | int]:
    """The route's declared parameters; an undeclared one is an error, not ignored, so a
    misspelt filter cannot silently widen a listing."""
    declared = {p.name: p for p in route.query}
    values: dict[str, str | int] = {}
    for name in args:
        param = declared.get(name)
        if param is None:
            raise ValidationFailed(
                f"unknown query parameter {name!r}",
                code="unknown_parameter",
                details={"parameter": name, "accepted": sorted(declared)},
            )
        given = args.getlist(name)
        if len(given) > 1:
            raise ValidationFailed(
                f"query parameter {name!r} given more than once",
                code="invalid_parameter",
                details={"parameter": name},
            )
        text = given[0]
        if text == "":
            continue  # "?cursor=" means no cursor
        if param.integer:
            try:
                values[name] = int(text)
            except ValueError:
                raise ValidationFailed(
                    f"query parameter {name!r} must be an integer",
                    code="invalid_parameter",
                    details={"parameter": name},
                ) from None
        elif param.choices and text not in param.choices:
            raise ValidationFailed(
                f"query parameter {name!r} must be one of {', '.join(param.choices)}",
                code="invalid_parameter",
                details={"parameter": name, "accepted": list(param.choices)},
            )
        else:
            values[name] = text
    return values


def parse_if_match(header: str | None) -> int | None:
    """``If-Match: 3`` (or the entity-tag forms ``"3"`` and ``W/"3"``); ``*`` matches any."""
    if header is None or header.strip() == "*":
        return None
    # An empty If-Match is no revision at all: refused, not taken for "any revision".
    match = _REVISION.match(header.strip())
    if match is None:
        raise ValidationFailed(
            "If-Match must be the object's revision number",
            code="invalid_if_match",
            details={"header": "If-Match", "value": header},
        )
    return int(match.group("revision"))


def check_content_type(content_type: str | None, raw: bytes) -> None:
    """A body sent as something other than JSON is 415 ``unsupported_media_type``. No
    ``Content-Type`` at all is taken for JSON (as curl -d sends it, in effect)."""
    if content_type is None or not raw:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return
    raise HttpError(
        415,
        "unsupported_media_type",
        "the body must be JSON: send Content-Type: application/json",
        {"content_type": content_type[:200]},
    )


def check_text(where: str, values: Mapping[str, Any]) -> None:
    """Refuse a NUL character in path or query parameters (422 ``invalid_text``)."""
    for name, value in values.items():
        if isinstance(value, str) and "\x00" in value:
            raise _invalid_text(f"{where} parameter {name!r}", {"parameter": name})


def _invalid_text(what: str, details: dict[str, Any]) -> ValidationFailed:
    return ValidationFailed(
        f"{what} contains a NUL character, which cannot be stored",
        code="invalid_text",
        details=details,
    )


def _too_deep() -> ValidationFailed:
    return ValidationFailed(
        f"the body nests arrays and objects more than {MAX_JSON_DEPTH} deep",
        code="too_deep",
        details={"path": "$", "max_depth": MAX_JSON_DEPTH},
    )


def check_json(raw: bytes) -> None:
    """The limits every body keeps (see the module docstring). Cheap for ordinary bodies:
    two byte counts and a byte search; only a body that may break a limit is decoded
    and walked."""
    suspect_depth = raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and (
        _bracket_depth(raw) > MAX_JSON_DEPTH
    )
    if not suspect_depth and _NUL_ESCAPE not in raw:
        return
    try:
        value = msgspec.json.decode(raw)
    except RecursionError:
        raise _too_deep() from None
    except msgspec.DecodeError as exc:
        raise malformed_json(exc) from exc
    _walk(value)


def _bracket_depth(raw: bytes) -> int:
    """The deepest nesting of brackets in ``raw``, counting those inside strings too (so
    at least the true depth: a body under the limit here is under it)."""
    brackets = np.frombuffer(raw.translate(None, _NOT_BRACKETS), dtype=np.uint8)
    steps = np.where(np.isin(brackets, _OPENING), 1, -1)
    return int(np.cumsum(steps).max(initial=0))


def _walk(value: Any) -> None:
    """Find a NUL in any string or key, or nesting past the limit; without recursion."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "$")]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise _invalid_text(f"the value at {path}", {"path": path})
        elif isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise _too_deep()
            if isinstance(item, dict):
                for key, child in item.items():
                    if "\x00" in key:
                        raise _invalid_text(f"a key in {path}", {"path": path})
                    stack.append((child, depth + 1, f"{path}.{key}"))
            else:
                stack.extend((child, depth + 1, f"{path}[{i}]") for i, child in enumerate(item))


def decode_body(body: JsonBody | PatchBody, raw: bytes) -> Any:
    """Decode ``raw`` for the route. Raises HttpError: 400 for malformed JSON, 422 for a
    value of the wrong shape or an unknown field; ValidationFailed for text that cannot be
    stored or nesting too deep (see the module docstring)."""
    if not raw.strip():
        if isinstance(body, JsonBody) and not body.required:
            return None
        raise malformed_json()
    check_json(raw)
    match body:
        case JsonBody(type=body_type):
            return _decode(raw, body_type)
        case PatchBody():
            # Only the shape is checked here: field names and values are checked by the
            # service when it decodes the merged spec (its msgspec error is translated to
            # ``unknown_field`` / ``invalid_body`` like ours, see _errors).
            patch: dict[str, Any] = _decode(raw, dict[str, Any])
            return patch


def _decode(raw: bytes, body_type: Any) -> Any:
    try:
        return msgspec.json.decode(raw, type=body_type)
    except msgspec.ValidationError as exc:  # a subclass of DecodeError: test it first
        # msgspec validates while it parses, so a document that is cut short can fail on
        # a field before the parser reaches the end. Malformed JSON must win: check the
        # whole document (only on this error path).
        try:
            msgspec.json.decode(raw)
        except msgspec.DecodeError as malformed:
            raise malformed_json(malformed) from exc
        raise invalid_body(exc) from exc
    except msgspec.DecodeError as exc:
        raise malformed_json(exc) from exc
