"""Domain errors. Each carries a stable machine-readable ``code``; adapters map the class
to a transport status (HTTP 404/409/422, CLI exit codes) and never invent their own."""

from __future__ import annotations

from typing import Any


class AssayError(Exception):
    """Base class: ``code`` is stable and documented, ``message`` is for people."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details


class NotFound(AssayError):
    code = "not_found"


class Conflict(AssayError):
    code = "conflict"


class ValidationFailed(AssayError):
    code = "validation_failed"


class PermissionDenied(AssayError):
    code = "forbidden"


class Unauthenticated(AssayError):
    code = "unauthenticated"


class EngineOverloaded(AssayError):
    """A bounded inbox is full and the caller asked not to wait."""

    code = "overloaded"


class ActorCrashed(AssayError):
    """The actor handling this request failed (and was restarted); nothing it had not
    acknowledged was kept, so the request may be retried."""

    code = "actor_crashed"


class StoreUnavailable(AssayError):
    """The database cannot be reached (connection refused or lost, server shutting down).
    Nothing was acknowledged that is not committed; the request may be retried after
    ``retry_after`` seconds."""

    code = "store_unavailable"
    retry_after = 1
