"""Wire types that exist only in the HTTP API (the domain types are used as they are).

No ``from __future__ import annotations`` here: msgspec reads these annotations at runtime.
"""

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from assay.engine import ApiKey, Role
from assay.engine._model import Key, Name


class WireStruct(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of the HTTP-only types: strict on input like the domain types."""


class EmptyRequest(WireStruct, frozen=True, kw_only=True):
    """Operations without parameters accept no body, or an empty JSON object."""


class TransitionRequest(WireStruct, frozen=True, kw_only=True):
    """Why the experiment changes status; recorded in the audit log."""

    reason: Annotated[str, msgspec.Meta(max_length=1000)] | None = None


class KeyCreateRequest(WireStruct, frozen=True, kw_only=True):
    role: Role
    project: Key | None = None
    """Scope the key to this project; omit for a key that may address every project."""
    name: Name = ""


class ApiKeyView(WireStruct, frozen=True, kw_only=True):
    """An API key's public fields. The secret is shown once, at creation, and never
    stored; its digest never leaves the server."""

    id: str
    name: str
    role: Role
    project_id: str | None
    prefix: str
    """The secret's first characters, to recognise a key without revealing it."""
    created_at: datetime
    created_by: str | None
    revoked_at: datetime | None
    active: bool

    @classmethod
    def of(cls, key: ApiKey) -> "ApiKeyView":
        return cls(
            id=key.id,
            name=key.name,
            role=key.role,
            project_id=key.project_id,
            prefix=key.prefix,
            created_at=key.created_at,
            created_by=key.created_by,
            revoked_at=key.revoked_at,
            active=key.active,
        )


class CreatedApiKey(ApiKeyView, frozen=True, kw_only=True):
    secret: str
    """Send as ``Authorization: Bearer <secret>``. Shown only in this response."""


class HealthStatus(WireStruct, frozen=True, kw_only=True):
    status: Literal["ok"] = "ok"


class ReadyStatus(WireStruct, frozen=True, kw_only=True):
    status: Literal["ready"] = "ready"
    snapshot_version: int
    """Version of the configuration snapshot the engine serves decisions from."""
