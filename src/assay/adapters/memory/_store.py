"""A Store kept in process memory, for embedding assay without a database.

Transactions hold one lock for their whole duration (writes are serialised, as with
PostgreSQL's advisory lock) and stage their changes copy-on-write: the committed tables
are replaced only when the block exits without an exception, so a failed block leaves
nothing behind. Configuration objects and audit entries are kept msgspec-encoded, exactly
as PostgreSQL keeps them, so every read hands out a fresh object that no caller can alias
or mutate, and both adapters round-trip values the same way.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec
import trio

from assay.adapters.memory._events import MemoryEventStore
from assay.adapters.memory._guardrails import MemoryGuardrailStore
from assay.adapters.memory._reports import MemoryReportStore
from assay.adapters.memory._retention import MemoryRetentionStore
from assay.adapters.memory._sessions import MemorySessionStore
from assay.engine._core import Decision, StickyAssignment
from assay.engine._errors import Conflict, NotFound
from assay.engine._model import (
    ApiKey,
    AuditEntry,
    Experiment,
    Flag,
    Layer,
    Metric,
    Project,
    SdkConnection,
    Segment,
)
from assay.engine._ports import KIND_NAMES, ConfigHorizon, ConfigState, ConfigT

if TYPE_CHECKING:
    import builtins
    from collections.abc import AsyncIterator, Callable, Sequence

    from assay.engine._ports import Store, StoreTransaction

log = logging.getLogger("assay.adapters.memory")

ConfigObject = Project | Flag | Experiment | Layer | Metric | Segment

_NaturalKey = tuple[str, str | None, str]
"""(kind name, project id or None for projects, key): unique, like the SQL index."""


class _Row(msgspec.Struct, frozen=True):
    id: str
    revision: int
    body: bytes


class _AuditRow(msgspec.Struct, frozen=True):
    id: int
    project_id: str | None
    resource_kind: str
    resource_key: str
    body: bytes


@dataclass
class _Tables:
    """The committed state. A transaction copies a dict before its first write to it."""

    objects: dict[_NaturalKey, _Row] = field(default_factory=dict)
    natural_keys: dict[str, _NaturalKey] = field(default_factory=dict)
    """Object id -> its natural key."""
    keys: dict[str, ApiKey] = field(default_factory=dict)
    key_ids_by_hash: dict[str, str] = field(default_factory=dict)
    connections: dict[str, bytes] = field(default_factory=dict)
    """SDK connection id -> the encoded connection."""
    client_keys: dict[str, str] = field(default_factory=dict)
    """Client key -> connection id (unique, like the SQL index)."""
    audit: list[_AuditRow] = field(default_factory=list)
    """Append-only, ids ascending; transactions stage new rows apart and append at commit."""
    next_audit_id: int = 1


def _project_of(obj: ConfigObject) -> str | None:
    return None if isinstance(obj, Project) else obj.project_id


def _natural_key(obj: ConfigObject) -> _NaturalKey:
    return (KIND_NAMES[type(obj)], _project_of(obj), obj.key)


class MemoryTransaction:
    """The staged view of one transaction; see the module docstring."""

    def __init__(self, committed: _Tables) -> None:
        self._committed = committed
        self._objects = committed.objects
        self._natural_keys = committed.natural_keys
        self._keys = committed.keys
        self._key_ids_by_hash = committed.key_ids_by_hash
        self._connections = committed.connections
        self._client_keys = committed.client_keys
        self._objects_copied = False
        self._keys_copied = False
        self._connections_copied = False
        self._new_audit: list[_AuditRow] = []
        self.config_changed = False
        self.change: int | None = None
        """Once committed with a configuration change: its number (``StoreTransaction``)."""

    def commit(self) -> _Tables:
        """The committed tables with this transaction's changes: the caller swaps them in."""
        # The audit list is extended in place, not copied: it is append-only and read only
        # under the lock this transaction holds.
        audit = self._committed.audit
        audit.extend(self._new_audit)
        return _Tables(
            objects=self._objects,
            natural_keys=self._natural_keys,
            keys=self._keys,
            key_ids_by_hash=self._key_ids_by_hash,
            connections=self._connections,
            client_keys=self._client_keys,
            audit=audit,
            next_audit_id=self._committed.next_audit_id + len(self._new_audit),
        )

    # --- configuration objects ----------------------------------------------------------

    async def get(self, kind: type[ConfigT], project_id: str | None, key: str) -> ConfigT | None:
        await trio.lowlevel.checkpoint()
        row = self._objects.get((KIND_NAMES[kind], project_id, key))
        return None if row is None else msgspec.json.decode(row.body, type=kind)

    async def get_by_id(self, kind: type[ConfigT], object_id: str) -> ConfigT | None:
        await trio.lowlevel.checkpoint()
        name = KIND_NAMES[kind]
        for natural, row in self._objects.items():
            if natural[0] == name:
                obj = msgspec.json.decode(row.body, type=kind)
                if obj.id == object_id:
                    return obj
        return None

    async def list(
        self, kind: type[ConfigT], project_id: str | None, *, after: str | None, limit: int
    ) -> list[ConfigT]:
        await trio.lowlevel.checkpoint()
        name = KIND_NAMES[kind]
        keys = sorted(
            k
            for (k_kind, k_project, k) in self._objects
            if k_kind == name and k_project == project_id and (after is None or k > after)
        )
        return [
            msgspec.json.decode(self._objects[(name, project_id, k)].body, type=kind)
            for k in keys[:limit]
        ]

    async def insert(self, obj: ConfigObject) -> None:
        await trio.lowlevel.checkpoint()
        natural = _natural_key(obj)
        if natural in self._objects or obj.id in self._natural_keys:
            raise Conflict(f"{natural[0]} {obj.key!r} already exists", code="already_exists")
        self._write_objects()
        self._objects[natural] = _Row(obj.id, obj.revision, msgspec.json.encode(obj))
        self._natural_keys[obj.id] = natural

    async def update(self, obj: ConfigObject, *, expected_revision: int) -> None:
        await trio.lowlevel.checkpoint()
        old = self._current(obj, expected_revision)
        new = _natural_key(obj)
        if new != old and new in self._objects:
            raise Conflict(f"{new[0]} {obj.key!r} already exists", code="already_exists")
        self._write_objects()
        del self._objects[old]
        self._objects[new] = _Row(obj.id, obj.revision, msgspec.json.encode(obj))
        self._natural_keys[obj.id] = new

    async def delete(self, obj: ConfigObject, *, expected_revision: int) -> None:
        await trio.lowlevel.checkpoint()
        old = self._current(obj, expected_revision)
        self._write_objects()
        del self._objects[old]
        del self._natural_keys[obj.id]

    def _current(self, obj: ConfigObject, expected_revision: int) -> _NaturalKey:
        """The natural key ``obj`` is stored under, if its revision is the expected one."""
        kind = KIND_NAMES[type(obj)]
        natural = self._natural_keys.get(obj.id)
        if natural is None or natural[0] != kind:
            raise NotFound(f"{kind} {obj.key!r} not found")
        stored = self._objects[natural].revision
        if stored != expected_revision:
            raise Conflict(
                f"{kind} {obj.key!r} is at revision {stored}, not {expected_revision}",
                code="revision_mismatch",
            )
        return natural

    def _write_objects(self) -> None:
        self.config_changed = True
        if not self._objects_copied:
            self._objects = dict(self._objects)
            self._natural_keys = dict(self._natural_keys)
            self._objects_copied = True

    # --- audit log ----------------------------------------------------------------------

    async def append_audit(self, entry: AuditEntry) -> None:
        await trio.lowlevel.checkpoint()
        entry_id = self._committed.next_audit_id + len(self._new_audit)
        stored = msgspec.structs.replace(entry, id=entry_id)
        self._new_audit.append(
            _AuditRow(
                entry_id,
                entry.project_id,
                entry.resource_kind,
                entry.resource_key,
                msgspec.json.encode(stored),
            )
        )

    async def list_audit(
        self,
        *,
        project_id: str | None,
        resource_kind: str | None,
        resource_key: str | None,
        before_id: int | None,
        limit: int,
    ) -> builtins.list[AuditEntry]:
        await trio.lowlevel.checkpoint()
        found: list[AuditEntry] = []
        for rows in (self._new_audit, self._committed.audit):
            for row in reversed(rows):
                if len(found) >= limit:
                    return found
                if (
                    (before_id is None or row.id < before_id)
                    and (project_id is None or row.project_id == project_id)
                    and (resource_kind is None or row.resource_kind == resource_kind)
                    and (resource_key is None or row.resource_key == resource_key)
                ):
                    found.append(msgspec.json.decode(row.body, type=AuditEntry))
        return found

    # --- API keys -----------------------------------------------------------------------

    async def insert_key(self, key: ApiKey) -> None:
        await trio.lowlevel.checkpoint()
        if key.id in self._keys or key.secret_hash in self._key_ids_by_hash:
            raise Conflict(f"key {key.id!r} already exists", code="already_exists")
        self._write_keys()
        self._keys[key.id] = key
        self._key_ids_by_hash[key.secret_hash] = key.id

    async def update_key(self, key: ApiKey) -> None:
        await trio.lowlevel.checkpoint()
        old = self._keys.get(key.id)
        if old is None:
            raise NotFound(f"key {key.id!r} not found")
        if self._key_ids_by_hash.get(key.secret_hash, key.id) != key.id:
            raise Conflict("another key has this secret", code="already_exists")
        self._write_keys()
        del self._key_ids_by_hash[old.secret_hash]
        self._keys[key.id] = key
        self._key_ids_by_hash[key.secret_hash] = key.id

    async def get_key(self, key_id: str) -> ApiKey | None:
        await trio.lowlevel.checkpoint()
        return self._keys.get(key_id)

    async def list_keys(
        self, project_id: str | None, *, after: str | None, limit: int
    ) -> builtins.list[ApiKey]:
        await trio.lowlevel.checkpoint()
        ids = sorted(
            key_id
            for key_id, key in self._keys.items()
            if (project_id is None or key.project_id == project_id)
            and (after is None or key_id > after)
        )
        return [self._keys[key_id] for key_id in ids[:limit]]

    async def count_keys(self) -> int:
        await trio.lowlevel.checkpoint()
        return len(self._keys)

    # --- SDK connections ----------------------------------------------------------------

    async def insert_connection(self, connection: SdkConnection) -> None:
        await trio.lowlevel.checkpoint()
        if connection.id in self._connections or connection.client_key in self._client_keys:
            raise Conflict(
                f"SDK connection {connection.id!r} already exists", code="already_exists"
            )
        self._write_connections()
        self._connections[connection.id] = msgspec.json.encode(connection)
        self._client_keys[connection.client_key] = connection.id

    async def update_connection(self, connection: SdkConnection, *, expected_revision: int) -> None:
        await trio.lowlevel.checkpoint()
        raw = self._connections.get(connection.id)
        if raw is None:
            raise NotFound(f"SDK connection {connection.id!r} not found")
        old = msgspec.json.decode(raw, type=SdkConnection)
        if old.revision != expected_revision:
            raise Conflict(
                f"SDK connection {connection.id!r} is at revision {old.revision}, "
                f"not {expected_revision}",
                code="revision_mismatch",
            )
        if self._client_keys.get(connection.client_key, connection.id) != connection.id:
            raise Conflict("another connection has this client key", code="already_exists")
        self._write_connections()
        del self._client_keys[old.client_key]
        self._connections[connection.id] = msgspec.json.encode(connection)
        self._client_keys[connection.client_key] = connection.id

    async def get_connection(self, connection_id: str) -> SdkConnection | None:
        await trio.lowlevel.checkpoint()
        raw = self._connections.get(connection_id)
        return None if raw is None else msgspec.json.decode(raw, type=SdkConnection)

    async def list_connections(
        self, project_id: str, *, after: str | None, limit: int
    ) -> builtins.list[SdkConnection]:
        await trio.lowlevel.checkpoint()
        found = (
            msgspec.json.decode(raw, type=SdkConnection)
            for cid, raw in self._connections.items()
            if after is None or cid > after
        )
        mine = sorted((c for c in found if c.project_id == project_id), key=lambda c: c.id)
        return mine[:limit]

    def _write_connections(self) -> None:
        # A connection is configuration: its change is announced like a flag's.
        self.config_changed = True
        if not self._connections_copied:
            self._connections = dict(self._connections)
            self._client_keys = dict(self._client_keys)
            self._connections_copied = True

    def _write_keys(self) -> None:
        if not self._keys_copied:
            self._keys = dict(self._keys)
            self._key_ids_by_hash = dict(self._key_ids_by_hash)
            self._keys_copied = True


class MemoryStore(
    MemoryEventStore,
    MemoryReportStore,
    MemoryGuardrailStore,
    MemoryRetentionStore,
    MemorySessionStore,
):
    """The Store port over dicts. Nothing survives the process."""

    def __init__(self) -> None:
        self._tables = _Tables()
        self._decisions: dict[str, bytes] = {}
        self._sticky: dict[tuple[str, str, str], dict[str, str]] = {}
        self._write_lock = trio.Lock()
        self._watchers: list[Callable[[int | None], None]] = []
        self._config_commits = 0
        """Commits that changed configuration: the last one's number (``ConfigHorizon``)."""

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryTransaction]:
        async with self._write_lock:
            tx = MemoryTransaction(self._tables)
            yield tx
            # Reached only when the block raised nothing: swapping in the staged tables is
            # the commit, and it is atomic because nothing here awaits.
            self._tables = tx.commit()
            if tx.config_changed:
                self._config_commits += 1
                tx.change = self._config_commits
        if tx.change is not None:
            self._notify(tx.change)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[MemoryTransaction]:
        """A consistent read of the committed tables, without the write lock; whatever
        the block stages is discarded."""
        await trio.lowlevel.checkpoint()
        yield MemoryTransaction(self._tables)

    async def record_decisions(self, decisions: Sequence[Decision], *, again: bool = False) -> None:
        await trio.lowlevel.checkpoint()
        # Encoded like every other stored value, so a caller cannot alter a record later.
        for d in decisions:
            self._decisions[d.decision_id] = msgspec.json.encode(d)

    async def load_sticky_buckets(
        self, project_id: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, str]]:
        await trio.lowlevel.checkpoint()
        found = {}
        for attribute, value in keys:
            doc = self._sticky.get((project_id, attribute, value))
            if doc is not None:
                found[(attribute, value)] = dict(doc)
        return found

    async def save_sticky_buckets(
        self, project_id: str, assignments: Sequence[StickyAssignment]
    ) -> dict[tuple[str, str], dict[str, str]]:
        await trio.lowlevel.checkpoint()
        stored: dict[tuple[str, str], dict[str, str]] = {}
        for a in assignments:
            doc = self._sticky.setdefault((project_id, a.attribute, a.value), {})
            doc.setdefault(a.key, a.variant)  # the first assignment of a key wins
            stored[(a.attribute, a.value)] = dict(doc)
        return stored

    async def get_decision(self, decision_id: str) -> Decision | None:
        await trio.lowlevel.checkpoint()
        raw = self._decisions.get(decision_id)
        return None if raw is None else msgspec.json.decode(raw, type=Decision)

    async def load_config(self) -> ConfigState:
        await trio.lowlevel.checkpoint()
        # Read with the tables, nothing awaited in between: it holds every commit so far.
        held = self._config_commits + 1
        return ConfigState(
            projects=self._decode_all(Project),
            flags=self._decode_all(Flag),
            experiments=self._decode_all(Experiment),
            layers=self._decode_all(Layer),
            metrics=self._decode_all(Metric),
            segments=self._decode_all(Segment),
            sdk_connections=[
                c
                for c in (
                    msgspec.json.decode(raw, type=SdkConnection)
                    for raw in self._tables.connections.values()
                )
                if c.active
            ],
            horizon=ConfigHorizon(complete=held, end=held),
        )

    def _decode_all(self, kind: type[ConfigT]) -> list[ConfigT]:
        """Every committed object of ``kind``, ordered by project, then key."""
        name = KIND_NAMES[kind]
        objects = self._tables.objects
        naturals = sorted((n[1] or "", n[2], n) for n in objects if n[0] == name)
        return [msgspec.json.decode(objects[n].body, type=kind) for _, _, n in naturals]

    def _stored_key(self, key_id: str) -> ApiKey | None:
        return self._tables.keys.get(key_id)

    async def get_key_by_hash(self, secret_hash: str) -> ApiKey | None:
        await trio.lowlevel.checkpoint()
        key_id = self._tables.key_ids_by_hash.get(secret_hash)
        return None if key_id is None else self._tables.keys[key_id]

    async def watch_config(self, on_change: Callable[[int | None], None]) -> None:
        """Call ``on_change(None)`` once now (as the PostgreSQL adapter does once it
        listens, so a change committed just before the watch began is never missed), then
        ``on_change(n)`` after every committed transaction that changed configuration, n
        counting them, until cancelled."""
        self._watchers.append(on_change)
        try:
            on_change(None)
            await trio.sleep_forever()
        finally:
            self._watchers.remove(on_change)

    def _notify(self, change: int) -> None:
        for on_change in list(self._watchers):
            # The transaction has committed: a failing watcher must not make the caller
            # believe its write failed.
            try:
                on_change(change)
            except Exception:
                log.exception("configuration watcher failed")


@asynccontextmanager
async def open_memory_store() -> AsyncIterator[MemoryStore]:
    """A fresh, empty memory store (an async context manager, like every store opener)."""
    yield MemoryStore()


if TYPE_CHECKING:

    def _implements_store(store: MemoryStore) -> Store:
        return store

    def _implements_transaction(tx: MemoryTransaction) -> StoreTransaction:
        return tx
