"""Turning a raw request into a ``Call``'s parts: the caller, query, ``If-Match`` and body.

Nothing here decides what a caller may do (the service does); it only checks that the
request is well formed, so that bad input fails before anything is read or written.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import msgspec

from assay.adapters.http._errors import invalid_body, malformed_json
from assay.adapters.http._routing import JsonBody, PatchBody, Route
from assay.engine import Unauthenticated, ValidationFailed

if TYPE_CHECKING:
    from werkzeug.datastructures import MultiDict

    from assay.engine import ApiKey, ConfigService

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
    if header is None or header.strip() in ("", "*"):
        return None
    match = _REVISION.match(header.strip())
    if match is None:
        raise ValidationFailed(
            "If-Match must be the object's revision number",
            code="invalid_if_match",
            details={"header": "If-Match", "value": header},
        )
    return int(match.group("revision"))


def decode_body(body: JsonBody | PatchBody, raw: bytes) -> Any:
    """Decode ``raw`` for the route. Raises HttpError: 400 for malformed JSON, 422 for a
    value of the wrong shape or an unknown field."""
    if not raw.strip():
        if isinstance(body, JsonBody) and not body.required:
            return None
        raise malformed_json()
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
