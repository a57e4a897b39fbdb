"""Domain errors. Each carries a stable machine-readable ``code`` from the registry
(``_error_codes.ERROR_CODES``) and refuses any other when constructed, so a code no
document lists cannot reach a client. Adapters report the registry's status (HTTP) or
their own rendering (CLI) and never invent codes of their own."""

from __future__ import annotations

from typing import Any, ClassVar

from assay.engine._error_codes import check_code


class AssayError(Exception):
    """Base class: ``code`` is stable and documented, ``message`` is for people.

    ``status`` is the HTTP status of the class's family; every code raised with the class
    is registered with that status."""

    code = "internal_error"
    status: ClassVar[int] = 500

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = check_code(code if code is not None else type(self).code, self.status)
        self.details = details


class NotFound(AssayError):
    code = "not_found"
    status = 404


class Conflict(AssayError):
    code = "conflict"
    status = 409


class ValidationFailed(AssayError):
    code = "validation_failed"
    status = 422


class PermissionDenied(AssayError):
    code = "forbidden"
    status = 403


class Unauthenticated(AssayError):
    code = "unauthenticated"
    status = 401


class EngineOverloaded(AssayError):
    """A bounded inbox is full and the caller asked not to wait."""

    code = "overloaded"
    status = 503


class ActorCrashed(AssayError):
    """The actor handling this request failed (and was restarted); nothing it had not
    acknowledged was kept, so the request may be retried."""

    code = "actor_crashed"
    status = 503


class StoreUnavailable(AssayError):
    """The database cannot be reached (connection refused or lost, server shutting down).
    Nothing was acknowledged that is not committed; the request may be retried after
    ``retry_after`` seconds."""

    code = "store_unavailable"
    retry_after = 1
    status = 503
