"""API keys: who is calling, and the keys that say so. Authentication (with its cache of
recently read keys), creating, listing and revoking keys, and the bootstrap admin key.
Mixed into ``ConfigService``; kept here so the service module stays about configuration.

A secret is shown once, when its key is created; only its SHA-256 digest is stored, and
the audit log never records even that.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from assay.engine._access import Action, Resource, authorize
from assay.engine._errors import (
    NotFound,
    PermissionDenied,
    StoreUnavailable,
    Unauthenticated,
    ValidationFailed,
)
from assay.engine._ids import new_id, now
from assay.engine._model import ApiKey, Role
from assay.engine._pagination import Page, check_limit, decode_cursor, page_of
from assay.engine._service_part import ServicePart

if TYPE_CHECKING:
    from assay.engine._ports import StoreTransaction

SYSTEM_KEY = ApiKey(
    id="system",
    name="local administrator (CLI and embedded use)",
    role=Role.ADMIN,
    project_id=None,
    prefix="",
    secret_hash="",
    created_at=datetime(2000, 1, 1, tzinfo=UTC),
)
"""The principal for trusted local callers: the CLI and code embedding the engine."""

SECRET_PREFIX = "assay_"
KEY_CACHE_SECONDS = 2.0
KEY_OUTAGE_SECONDS = 3600.0
"""While the store is unavailable, how old the last reading of a key may be for it to be
accepted as it was then (see ``ConfigService.authenticate``)."""
_KEY_CACHE_SIZE = 10_000


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyManagement(ServicePart):
    """Authentication and the lifecycle of API keys."""

    # Provided by ConfigService.
    _keys_seen: dict[str, tuple[ApiKey, float]]
    """digest -> (key, when it was last read from the store)."""

    async def authenticate(self, secret: str) -> ApiKey:
        """The active key with this secret. Keys read in the last ``KEY_CACHE_SECONDS`` are
        not read again. While the store is unavailable, a key read in the last
        ``KEY_OUTAGE_SECONDS`` is taken as it was then (decide keeps answering from the
        snapshot through an outage); once the store answers again every key is read again
        within ``KEY_CACHE_SECONDS``, so one revoked meanwhile is refused from then on. A key
        not read before the outage gets ``StoreUnavailable``."""
        if not secret.startswith(SECRET_PREFIX):
            raise Unauthenticated("invalid API key")
        digest = hash_secret(secret)
        cached = self._keys_seen.get(digest)
        now = time.monotonic()
        if cached is not None and now - cached[1] < KEY_CACHE_SECONDS:
            return cached[0]
        try:
            key = await self._store.get_key_by_hash(digest)
        except StoreUnavailable:
            if cached is not None and now - cached[1] < KEY_OUTAGE_SECONDS:
                return cached[0]
            raise
        if key is None or not key.active:
            self._keys_seen.pop(digest, None)
            raise Unauthenticated("invalid or revoked API key")
        if len(self._keys_seen) >= _KEY_CACHE_SIZE:
            self._keys_seen.clear()
        self._keys_seen[digest] = (key, now)
        return key

    async def create_key(
        self,
        principal: ApiKey,
        *,
        role: Role,
        project: str | None,
        name: str = "",
    ) -> tuple[ApiKey, str]:
        """Create a key and return it with its secret, which is never stored or shown
        again."""
        async with self._store.transaction() as tx:
            project_id: str | None = None
            if project is not None:
                project_id = (await self._resolve_project(tx, principal, project)).id
            # Read before write: a key that may not see keys at all is told there is
            # nothing there; one that may, but asks beyond its scope, is refused.
            authorize(
                principal, Resource.KEY, Action.READ, project_id=project_id or principal.project_id
            )
            if project_id is None and principal.project_id is not None:
                raise PermissionDenied("a project-scoped key may only create keys in its project")
            authorize(principal, Resource.KEY, Action.WRITE, project_id=project_id)
            if role is Role.SDK and project_id is None:
                raise ValidationFailed(
                    "an SDK key must be scoped to a project", code="project_required"
                )
            return await self._insert_key(
                tx, principal, name=name, role=role, project_id=project_id
            )

    async def list_keys(
        self,
        principal: ApiKey,
        project: str | None,
        *,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> Page[ApiKey]:
        limit = check_limit(limit)
        after = decode_cursor(cursor, str)
        assert after is None or isinstance(after, str)
        async with self._store.read() as tx:
            project_id: str | None = None
            if project is not None or principal.project_id is not None:
                project_id = (await self._resolve_project(tx, principal, project)).id
            authorize(principal, Resource.KEY, Action.READ, project_id=project_id)
            items = await tx.list_keys(project_id, after=after, limit=limit + 1)
        return page_of(items, limit, lambda k: k.id)

    async def revoke_key(self, principal: ApiKey, key_id: str) -> ApiKey:
        async with self._store.transaction() as tx:
            key = await tx.get_key(key_id)
            if key is None:
                raise NotFound(f"key {key_id!r} not found")
            authorize(principal, Resource.KEY, Action.READ, project_id=key.project_id)
            authorize(principal, Resource.KEY, Action.WRITE, project_id=key.project_id)
            if not key.active:
                return key
            revoked = msgspec.structs.replace(key, revoked_at=now())
            self._keys_seen.pop(key.secret_hash, None)
            await tx.update_key(revoked)
            await self._audit_raw(
                tx, principal, "key.revoke", _key_ref(key), _public_key(key), _public_key(revoked)
            )
        return revoked

    async def ensure_bootstrap_key(self) -> tuple[ApiKey, str] | None:
        """On an empty database, create the first admin key and return it with its secret.
        Serialised by the store's write lock, so two processes starting at once create one.
        """
        async with self._store.transaction() as tx:
            if await tx.count_keys() > 0:
                return None
            return await self._insert_key(
                tx, SYSTEM_KEY, name="bootstrap admin", role=Role.ADMIN, project_id=None
            )

    async def _insert_key(
        self,
        tx: StoreTransaction,
        principal: ApiKey,
        *,
        name: str,
        role: Role,
        project_id: str | None,
    ) -> tuple[ApiKey, str]:
        """A new key with a fresh secret, stored (only the secret's hash) and audited as
        created by ``principal`` in ``tx``; returned with its secret."""
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(
            id=new_id("key"),
            name=name,
            role=role,
            project_id=project_id,
            prefix=secret[: len(SECRET_PREFIX) + 6],
            secret_hash=hash_secret(secret),
            created_at=now(),
            created_by=principal.id,
        )
        await tx.insert_key(key)
        await self._audit_raw(tx, principal, "key.create", _key_ref(key), None, _public_key(key))
        return key, secret


def _key_ref(key: ApiKey) -> tuple[str | None, str, str, str]:
    return (key.project_id, "key", key.id, key.id)


def _public_key(key: ApiKey) -> dict[str, Any]:
    """What the audit log may say about a key: everything but the secret's digest."""
    data: dict[str, Any] = msgspec.to_builtins(key)
    data.pop("secret_hash", None)
    return data
