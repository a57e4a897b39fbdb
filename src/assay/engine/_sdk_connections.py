"""SDK connections: create, list, change and revoke the connections through which
GrowthBook's SDKs read a project's payload (docs/sdk.md). Mixed into ``ConfigService``.

A connection is configuration: each change is one transaction with its audit entry, and
the snapshot carries the active connections, so the engine that made a change serves it at
once (the service waits for its snapshot) and every other process within a second (the
store's change feed). The client key is public by design; the decryption key is shown to
whoever may read the connection (SDKs are given it) but is never written to the audit log.
A revoked connection is kept (its key is never reused) and cannot be changed again.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import msgspec

from assay.engine._access import Action, Resource, authorize
from assay.engine._errors import Conflict, NotFound, ValidationFailed
from assay.engine._ids import new_id, now
from assay.engine._model import ApiKey, Project, SdkConnection, SdkConnectionSpec
from assay.engine._pagination import Page, check_limit, decode_cursor, page_of
from assay.engine._service_part import ServicePart

if TYPE_CHECKING:
    from assay.engine._ports import StoreTransaction

CLIENT_KEY_PREFIX = "sdk-"
_CLIENT_KEY_BYTES = 18
"""Random bytes in a client key: 24 url-safe characters after the prefix."""
_PAGE = 500


def new_client_key() -> str:
    return CLIENT_KEY_PREFIX + secrets.token_urlsafe(_CLIENT_KEY_BYTES)


def new_decryption_key() -> str:
    """Base64 of a random 128-bit key: GrowthBook's ``decryptionKey`` (AES-128-CBC)."""
    return base64.b64encode(secrets.token_bytes(16)).decode()


class ConnectionManagement(ServicePart):
    """The lifecycle of SDK connections."""

    # Provided by ConfigService.
    if TYPE_CHECKING:

        async def _changed(self, tx: StoreTransaction) -> None: ...

    async def create_connection(
        self, principal: ApiKey, project: str | None, spec: SdkConnectionSpec
    ) -> SdkConnection:
        spec = _checked(spec)
        async with self._store.transaction() as tx:
            p = await self._writable(tx, principal, project)
            await _check_name_free(tx, p.id, spec.name, None)
            t = now()
            connection = SdkConnection(
                **msgspec.structs.asdict(spec),
                id=new_id("sdk"),
                project_id=p.id,
                client_key=new_client_key(),
                decryption_key=new_decryption_key() if spec.encrypt else None,
                created_at=t,
                updated_at=t,
                created_by=principal.id,
            )
            await tx.insert_connection(connection)
            await self._audit_raw(
                tx, principal, "sdk_connection.create", _ref(connection), None, _public(connection)
            )
        await self._changed(tx)
        return connection

    async def list_connections(
        self,
        principal: ApiKey,
        project: str | None,
        *,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> Page[SdkConnection]:
        """A project's connections by id, revoked ones included."""
        limit = check_limit(limit)
        after = decode_cursor(cursor, str)
        assert after is None or isinstance(after, str)
        async with self._store.read() as tx:
            p = await self._resolve_project(tx, principal, project)
            authorize(principal, Resource.SDK_CONNECTION, Action.READ, project_id=p.id)
            items = await tx.list_connections(p.id, after=after, limit=limit + 1)
        return page_of(items, limit, lambda c: c.id)

    async def get_connection(
        self, principal: ApiKey, project: str | None, connection_id: str
    ) -> SdkConnection:
        async with self._store.read() as tx:
            p = await self._resolve_project(tx, principal, project)
            authorize(principal, Resource.SDK_CONNECTION, Action.READ, project_id=p.id)
            return await _existing(tx, p.id, connection_id)

    async def update_connection(
        self,
        principal: ApiKey,
        project: str | None,
        connection_id: str,
        patch: Mapping[str, Any],
        *,
        expected_revision: int | None = None,
    ) -> SdkConnection:
        """Apply a merge patch of ``SdkConnectionSpec`` fields. Turning ``encrypt`` on makes
        a new decryption key; turning it off drops the key. The client key never changes."""
        async with self._store.transaction() as tx:
            p = await self._writable(tx, principal, project)
            current = await _existing(tx, p.id, connection_id)
            if expected_revision is not None and expected_revision != current.revision:
                raise Conflict(
                    f"revision is {current.revision}, not {expected_revision}",
                    code="revision_mismatch",
                    details={"revision": current.revision},
                )
            if not current.active:
                raise Conflict(
                    f"SDK connection {connection_id!r} is revoked", code="connection_revoked"
                )
            base = {f: getattr(current, f) for f in SdkConnectionSpec.__struct_fields__}
            merged = {**msgspec.to_builtins(base), **patch}
            try:
                spec = msgspec.convert(merged, SdkConnectionSpec)
            except msgspec.ValidationError as exc:
                raise ValidationFailed(str(exc), code="invalid_body") from exc
            if spec == SdkConnectionSpec(**base):
                return current
            await _check_name_free(tx, p.id, spec.name, current.id)
            key = current.decryption_key
            if spec.encrypt and key is None:
                key = new_decryption_key()
            elif not spec.encrypt:
                key = None
            updated = msgspec.structs.replace(
                current,
                **msgspec.structs.asdict(spec),
                decryption_key=key,
                revision=current.revision + 1,
                updated_at=now(),
            )
            await tx.update_connection(updated, expected_revision=current.revision)
            await self._audit_raw(
                tx,
                principal,
                "sdk_connection.update",
                _ref(updated),
                _public(current),
                _public(updated),
            )
        await self._changed(tx)
        return updated

    async def revoke_connection(
        self, principal: ApiKey, project: str | None, connection_id: str
    ) -> SdkConnection:
        """The client key stops working at once here, within a second on other processes.
        Revoking a revoked connection does nothing."""
        async with self._store.transaction() as tx:
            p = await self._resolve_project(tx, principal, project)
            authorize(principal, Resource.SDK_CONNECTION, Action.READ, project_id=p.id)
            authorize(principal, Resource.SDK_CONNECTION, Action.WRITE, project_id=p.id)
            current = await _existing(tx, p.id, connection_id)
            if not current.active:
                return current
            t = now()
            revoked = msgspec.structs.replace(
                current, revoked_at=t, updated_at=t, revision=current.revision + 1
            )
            await tx.update_connection(revoked, expected_revision=current.revision)
            await self._audit_raw(
                tx,
                principal,
                "sdk_connection.revoke",
                _ref(revoked),
                _public(current),
                _public(revoked),
            )
        await self._changed(tx)
        return revoked

    async def all_connections(self, principal: ApiKey, project: str | None) -> list[SdkConnection]:
        """Every connection of the project, all pages (for definitions and the CLI)."""
        out: list[SdkConnection] = []
        cursor: str | None = None
        while True:
            page = await self.list_connections(principal, project, cursor=cursor, limit=_PAGE)
            out.extend(page.items)
            if page.next_cursor is None:
                return out
            cursor = page.next_cursor

    async def _writable(
        self, tx: StoreTransaction, principal: ApiKey, project: str | None
    ) -> Project:
        p = await self._resolve_project(tx, principal, project)
        authorize(principal, Resource.SDK_CONNECTION, Action.READ, project_id=p.id)
        authorize(principal, Resource.SDK_CONNECTION, Action.WRITE, project_id=p.id)
        if p.archived:
            raise Conflict(f"project {p.key!r} is archived", code="project_archived")
        return p


def _checked(spec: SdkConnectionSpec) -> SdkConnectionSpec:
    """Structs built in Python skip msgspec's checks; a round trip applies them."""
    try:
        return msgspec.convert(msgspec.to_builtins(spec), SdkConnectionSpec)
    except msgspec.ValidationError as exc:
        raise ValidationFailed(str(exc), code="invalid_body") from exc


async def _existing(tx: StoreTransaction, project_id: str, connection_id: str) -> SdkConnection:
    found = await tx.get_connection(connection_id)
    if found is None or found.project_id != project_id:
        raise NotFound(f"SDK connection {connection_id!r} not found")
    return found


async def _check_name_free(
    tx: StoreTransaction, project_id: str, name: str, own_id: str | None
) -> None:
    """Names identify active connections within a project (definitions refer to them)."""
    after: str | None = None
    while True:
        page = await tx.list_connections(project_id, after=after, limit=_PAGE)
        for c in page:
            if c.active and c.name == name and c.id != own_id:
                raise Conflict(
                    f"an active SDK connection named {name!r} exists", code="already_exists"
                )
        if len(page) < _PAGE:
            return
        after = page[-1].id


def _ref(connection: SdkConnection) -> tuple[str | None, str, str, str]:
    return (connection.project_id, "sdk_connection", connection.id, connection.id)


def _public(connection: SdkConnection) -> dict[str, Any]:
    """What the audit log says about a connection: all but the decryption key."""
    data: dict[str, Any] = msgspec.to_builtins(connection)
    data.pop("decryption_key", None)
    return data


PlannedConnection: TypeAlias = tuple[
    SdkConnectionSpec, SdkConnection | None, Literal["created", "updated", "unchanged"], list[str]
]


async def plan_connections(
    service: ConnectionManagement,
    principal: ApiKey,
    project: str,
    specs: Sequence[SdkConnectionSpec],
    project_created: bool,
) -> list[PlannedConnection]:
    """For a definitions file (``_definitions``): each connection with the active one of its
    name, what loading does to it and which fields differ."""
    if not specs:
        return []
    stored: dict[str, SdkConnection] = {}
    if not project_created:
        for c in await service.all_connections(principal, project):
            if c.active:
                stored[c.name] = c
    out: list[PlannedConnection] = []
    for spec in specs:
        current = stored.get(spec.name)
        if current is None:
            out.append((spec, None, "created", list(SdkConnectionSpec.__struct_fields__)))
            continue
        names = SdkConnectionSpec.__struct_fields__
        fields = [f for f in names if getattr(spec, f) != getattr(current, f)]
        out.append((spec, current, "updated" if fields else "unchanged", fields))
    return out
