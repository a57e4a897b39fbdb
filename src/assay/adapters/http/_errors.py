"""Every failure becomes ``{"error": {"code", "message", "details"}}`` with one status.

Domain errors carry their own code and status (both from the registry,
``assay.engine.ERROR_CODES``). Errors the HTTP layer finds itself (malformed JSON, a body
over the limit, an unknown route) are ``HttpError``s or werkzeug's HTTP exceptions,
translated here too, with codes from the same registry: ``ErrorBody`` refuses any other,
so every code a client sees is one docs/api.md and the OpenAPI document list.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from assay.engine import AssayError, ValidationFailed
from assay.engine._error_codes import ERROR_CODES, check_code

log = logging.getLogger("assay.http")


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    """Stable and machine-readable, e.g. ``not_found``, ``illegal_transition``."""
    message: str
    """For people; may change between releases."""
    details: Any = None
    """Code-specific structured context (a JSON path, the conflicting object...)."""

    def __post_init__(self) -> None:
        check_code(self.code)


class ErrorResponse(msgspec.Struct, frozen=True, kw_only=True):
    error: ErrorBody


class HttpError(Exception):
    """An error found by the HTTP layer itself, with its status and code."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = check_code(code, status)
        self.message = message
        self.details = details


RETRY_AFTER_SECONDS = 1
"""Sent as ``Retry-After`` with every 503: the cause (a full inbox, a restarted actor, the
database away) is expected to pass by itself."""

# werkzeug's exceptions that can reach us (routing, body limits and timeouts), by status.
_CODE_OF_HTTP_STATUS = {
    400: "bad_request",
    404: "route_not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "body_too_large",
}

# msgspec reports where a value failed as a suffix: "... - at `$.rules[0].value`".
_AT_PATH = re.compile(r" - at `(?P<path>\$[^`]*)`$")
_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(?P<field>[^`]*)`")


def invalid_body(exc: msgspec.ValidationError) -> HttpError:
    """Translate a msgspec validation failure, keeping msgspec's path to the bad value."""
    message = str(exc)
    at = _AT_PATH.search(message)
    path = at.group("path") if at else "$"
    unknown = _UNKNOWN_FIELD.match(message)
    if unknown:
        return HttpError(
            422, "unknown_field", message, {"path": path, "field": unknown.group("field")}
        )
    return HttpError(422, "invalid_body", message, {"path": path})


def malformed_json(exc: msgspec.DecodeError | None = None) -> HttpError:
    reason = str(exc) if exc is not None else "the body is empty"
    return HttpError(400, "malformed_json", f"the request body is not valid JSON: {reason}")


def describe(error: BaseException) -> tuple[int, ErrorBody, dict[str, str]]:
    """The status, error body and extra headers for any exception."""
    if isinstance(error, HttpError):
        return (
            error.status,
            ErrorBody(code=error.code, message=error.message, details=error.details),
            {"Retry-After": str(RETRY_AFTER_SECONDS)} if error.status == 503 else {},
        )
    if isinstance(error, AssayError):
        return _describe_domain_error(error)
    if isinstance(error, HTTPException) and error.code is not None and error.code < 500:
        return _describe_http_exception(error)
    return 500, ErrorBody(code="internal_error", message="internal server error"), {}


def _describe_domain_error(error: AssayError) -> tuple[int, ErrorBody, dict[str, str]]:
    status = error.status
    cause = error.__cause__
    if (
        isinstance(error, ValidationFailed)
        and error.code == "invalid_body"
        and isinstance(cause, msgspec.ValidationError)
    ):
        # The service decodes merged PATCH bodies itself; report its msgspec failure in
        # the same shape as one found while decoding a request body here.
        translated = invalid_body(cause)
        return (
            422,
            ErrorBody(code=translated.code, message=translated.message, details=translated.details),
            {},
        )
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return (
        status,
        ErrorBody(code=error.code, message=error.message, details=error.details),
        (headers),
    )


def _describe_http_exception(error: HTTPException) -> tuple[int, ErrorBody, dict[str, str]]:
    code = _CODE_OF_HTTP_STATUS.get(error.code or 400, "bad_request")
    # Another 4xx werkzeug may raise (411, 415, 431...) is answered as the registry's
    # bad_request, so a client never sees a status its code is not documented with.
    status = ERROR_CODES[code].status
    headers: dict[str, str] = {}
    details: Any = None
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        allowed = sorted(error.valid_methods)
        headers["Allow"] = ", ".join(allowed)
        details = {"allowed": allowed}
    message = {
        404: "no such route",
        405: "method not allowed on this route",
        413: "the request body is larger than the server accepts",
    }.get(status, error.description or error.name)
    return status, ErrorBody(code=code, message=message, details=details), headers


def unexpected(error: BaseException) -> None:
    """Log an error that became a 500: it is a bug, so keep its traceback."""
    original = getattr(error, "original_exception", None) or error
    log.error("unhandled error while serving a request", exc_info=original)
