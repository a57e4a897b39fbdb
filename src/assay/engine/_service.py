"""Configuration service: every change to projects, flags, experiments, layers, metrics,
segments, keys and SDK connections goes through here, so validation, access control,
revisions and the audit log are applied the same way whether the change comes from HTTP,
the CLI or Python.

Each write runs in one store transaction: the object and its audit entry commit together
or not at all. The rules across objects (what may run at once, what may be deleted, what a
started experiment may change) are in ``_integrity``; authentication and API keys in
``_api_keys``, SDK connections in ``_sdk_connections``, both mixed in here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any, TypeVar

import msgspec

from assay.engine._access import Action, Resource, authorize
from assay.engine._api_keys import KEY_CACHE_SECONDS as KEY_CACHE_SECONDS
from assay.engine._api_keys import KEY_OUTAGE_SECONDS as KEY_OUTAGE_SECONDS
from assay.engine._api_keys import SECRET_PREFIX as SECRET_PREFIX
from assay.engine._api_keys import SYSTEM_KEY as SYSTEM_KEY
from assay.engine._api_keys import KeyManagement
from assay.engine._api_keys import hash_secret as hash_secret
from assay.engine._core._lifecycle import DELETABLE, next_status
from assay.engine._errors import (
    Conflict,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from assay.engine._guardrails import GuardrailValidator
from assay.engine._ids import new_id, now
from assay.engine._integrity import (
    Scoped,
    ScopedT,
    check_can_run,
    check_experiment_edit,
    check_unreferenced,
)
from assay.engine._model import (
    ApiKey,
    AuditEntry,
    Experiment,
    ExperimentSpec,
    ExperimentStatus,
    Flag,
    FlagSpec,
    Layer,
    LayerSpec,
    Metric,
    MetricSpec,
    Project,
    ProjectSpec,
    Segment,
    SegmentSpec,
    Transition,
)
from assay.engine._pagination import Page, check_limit, decode_cursor, page_of
from assay.engine._ports import KIND_NAMES, Store, StoreTransaction
from assay.engine._sdk_connections import ConnectionManagement
from assay.engine._segments import validate_segment
from assay.engine._validation import (
    validate_experiment,
    validate_flag,
    validate_metric,
)

GuardrailCheck = Callable[[StoreTransaction, Experiment], Awaitable[None]]
"""Save-time check of an experiment's guardrails (``_guardrails.GuardrailValidator``)."""

ConditionValidator = Callable[[Mapping[str, Any]], None]

SpecT = TypeVar("SpecT", FlagSpec, ExperimentSpec, LayerSpec, MetricSpec, SegmentSpec)

_SPEC_OF: dict[type[Scoped], type[msgspec.Struct]] = {
    Flag: FlagSpec,
    Experiment: ExperimentSpec,
    Layer: LayerSpec,
    Metric: MetricSpec,
    Segment: SegmentSpec,
}
_RESOURCE_OF: dict[type[Scoped], Resource] = {
    Flag: Resource.FLAG,
    Experiment: Resource.EXPERIMENT,
    Layer: Resource.LAYER,
    Metric: Resource.METRIC,
    Segment: Resource.SEGMENT,
}


async def _nothing(changes: Sequence[int | None]) -> None:
    return None


_batched: ContextVar[list[int | None] | None] = ContextVar("assay_changes_batched", default=None)
"""Inside ``ConfigService.batched_changes()``: the changes waiting for the end."""


def _builtins(obj: msgspec.Struct | None) -> Any:
    return None if obj is None else msgspec.to_builtins(obj)


def _spec_fields(kind: type[msgspec.Struct]) -> tuple[str, ...]:
    return kind.__struct_fields__


class ConfigService(KeyManagement, ConnectionManagement):
    """Create, read, update and delete configuration, checked and audited."""

    def __init__(
        self,
        store: Store,
        *,
        # A coroutine function, not any awaitable: mypy then flags a call left unawaited.
        on_change: Callable[[Sequence[int | None]], Coroutine[Any, Any, None]] = _nothing,
        validate_condition: ConditionValidator = lambda condition: None,
        validate_metric: Callable[[MetricSpec], None] = lambda metric: None,
        validate_guardrails: GuardrailCheck | None = None,
    ) -> None:
        self._store = store
        self._on_change = on_change
        """Awaited after every committed configuration change with the changes' numbers
        (``StoreTransaction.change``); the engine's returns once its own snapshot holds
        them (read your writes)."""
        self._validate_condition = validate_condition
        # Metric kinds come from plugins; the engine passes their save-time check here.
        self._validate_metric = validate_metric
        # Guardrail actions and channels come from plugins too; without them only the
        # guardrails' metrics are checked.
        self._validate_guardrails = validate_guardrails or GuardrailValidator()
        # Recently authenticated keys, so a busy SDK does not cost a database lookup per
        # request. A revocation here takes effect at once; one made by another process
        # within KEY_CACHE_SECONDS.
        self._keys_seen = {}

    async def _changed(self, tx: StoreTransaction) -> None:
        """After ``tx`` committed a change: wait until it is visible here (or, inside
        ``batched_changes``, note that the batch must wait for it at its end)."""
        batch = _batched.get()
        if batch is not None:
            batch.append(tx.change)
            return
        await self._on_change((tx.change,))

    @asynccontextmanager
    async def batched_changes(self) -> AsyncIterator[None]:
        """Many changes, one wait: calls made in this block (in this task and the tasks it
        starts) return without waiting for the snapshot; leaving the block waits once, so
        loading N definitions costs one refresh, not N."""
        if _batched.get() is not None:
            yield  # nested: the outermost block waits
            return
        changed: list[int | None] = []
        token = _batched.set(changed)
        try:
            yield
        finally:
            _batched.reset(token)
            if changed:
                await self._on_change(tuple(changed))

    def validate_condition(self, condition: Mapping[str, Any]) -> None:
        """Check a targeting condition as a save would (raises ``ValidationFailed``)."""
        self._validate_condition(condition)

    # --- projects -------------------------------------------------------------------

    async def resolve_project(self, principal: ApiKey, project: str | None) -> Project:
        """The project a request addresses: named, or the key's own. A project outside
        the key's scope is reported as missing."""
        async with self._store.read() as tx:
            return await self._resolve_project(tx, principal, project)

    async def _resolve_project(
        self, tx: StoreTransaction, principal: ApiKey, project: str | None
    ) -> Project:
        if project is None:
            if principal.project_id is None:
                raise ValidationFailed(
                    "this key is not scoped to a project: name one with ?project=KEY",
                    code="project_required",
                )
            found = await self._project_by_id(tx, principal.project_id)
        else:
            found = await tx.get(Project, None, project)
        if found is None or (principal.project_id is not None and principal.project_id != found.id):
            raise NotFound(f"project {project!r} not found", code="project_not_found")
        return found

    async def _project_by_id(self, tx: StoreTransaction, project_id: str) -> Project | None:
        return await tx.get_by_id(Project, project_id)

    async def list_projects(
        self, principal: ApiKey, *, cursor: str | None = None, limit: int | None = None
    ) -> Page[Project]:
        limit = check_limit(limit)
        after = decode_cursor(cursor, str)
        assert after is None or isinstance(after, str)
        async with self._store.read() as tx:
            if principal.project_id is not None:
                own = await self._project_by_id(tx, principal.project_id)
                authorize(principal, Resource.PROJECT, Action.READ, project_id=principal.project_id)
                items = [own] if own is not None and (after is None or own.key > after) else []
                return Page(items=items)
            authorize(principal, Resource.PROJECT, Action.READ, project_id=None)
            items = await tx.list(Project, None, after=after, limit=limit + 1)
        return page_of(items, limit, lambda p: p.key)

    async def get_project(self, principal: ApiKey, key: str) -> Project:
        async with self._store.read() as tx:
            project = await self._resolve_project(tx, principal, key)
        authorize(principal, Resource.PROJECT, Action.READ, project_id=project.id)
        return project

    async def create_project(self, principal: ApiKey, spec: ProjectSpec) -> Project:
        authorize(principal, Resource.PROJECT, Action.READ, project_id=principal.project_id)
        authorize(principal, Resource.PROJECT, Action.WRITE, project_id=principal.project_id)
        if principal.project_id is not None:
            raise PermissionDenied("only a key not scoped to a project may create projects")
        spec = _revalidate(spec)
        t = now()
        project = Project(
            **msgspec.structs.asdict(spec), id=new_id("prj"), created_at=t, updated_at=t
        )
        async with self._store.transaction() as tx:
            if await tx.get(Project, None, spec.key) is not None:
                raise Conflict(f"project {spec.key!r} already exists", code="already_exists")
            await tx.insert(project)
            await self._audit(tx, principal, "project.create", project, None, project)
        await self._changed(tx)
        return project

    async def update_project(
        self,
        principal: ApiKey,
        key: str,
        patch: Mapping[str, Any],
        *,
        expected_revision: int | None = None,
    ) -> Project:
        async with self._store.transaction() as tx:
            current = await self._resolve_project(tx, principal, key)
            authorize(principal, Resource.PROJECT, Action.WRITE, project_id=current.id)
            _check_revision(current.revision, expected_revision)
            spec = _merge(ProjectSpec, current, patch)
            if spec.key != current.key:
                raise ValidationFailed("a project key cannot change", code="immutable_field")
            updated = msgspec.structs.replace(
                current,
                **msgspec.structs.asdict(spec),
                revision=current.revision + 1,
                updated_at=now(),
            )
            await tx.update(updated, expected_revision=current.revision)
            await self._audit(tx, principal, "project.update", updated, current, updated)
        await self._changed(tx)
        return updated

    async def set_project_archived(self, principal: ApiKey, key: str, archived: bool) -> Project:
        async with self._store.transaction() as tx:
            current = await self._resolve_project(tx, principal, key)
            authorize(principal, Resource.PROJECT, Action.WRITE, project_id=current.id)
            if current.archived == archived:
                return current
            updated = msgspec.structs.replace(
                current, archived=archived, revision=current.revision + 1, updated_at=now()
            )
            await tx.update(updated, expected_revision=current.revision)
            action = "project.archive" if archived else "project.restore"
            await self._audit(tx, principal, action, updated, current, updated)
        await self._changed(tx)
        return updated

    # --- flags, experiments, layers, metrics ------------------------------------------

    async def list_objects(
        self,
        principal: ApiKey,
        kind: type[ScopedT],
        project: str | None,
        *,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> Page[ScopedT]:
        limit = check_limit(limit)
        after = decode_cursor(cursor, str)
        assert after is None or isinstance(after, str)
        async with self._store.read() as tx:
            p = await self._resolve_project(tx, principal, project)
            authorize(principal, _RESOURCE_OF[kind], Action.READ, project_id=p.id)
            items = await tx.list(kind, p.id, after=after, limit=limit + 1)
        return page_of(items, limit, lambda o: o.key)

    async def get_object(
        self, principal: ApiKey, kind: type[ScopedT], project: str | None, key: str
    ) -> ScopedT:
        async with self._store.read() as tx:
            p = await self._resolve_project(tx, principal, project)
            authorize(principal, _RESOURCE_OF[kind], Action.READ, project_id=p.id)
            return await self._get_existing(tx, kind, p.id, key)

    async def create_object(
        self, principal: ApiKey, kind: type[ScopedT], project: str | None, spec: msgspec.Struct
    ) -> ScopedT:
        if not isinstance(spec, _SPEC_OF[kind]):
            raise TypeError(f"expected {_SPEC_OF[kind].__name__}, got {type(spec).__name__}")
        spec = _revalidate(spec)
        async with self._store.transaction() as tx:
            p = await self._writable_project(tx, principal, kind, project)
            t = now()
            obj = kind(
                **msgspec.structs.asdict(spec),
                id=new_id(KIND_NAMES[kind][:3]),
                project_id=p.id,
                created_at=t,
                updated_at=t,
            )
            if await tx.get(kind, p.id, obj.key) is not None:
                raise Conflict(
                    f"{KIND_NAMES[kind]} {obj.key!r} already exists", code="already_exists"
                )
            await self._validate(tx, obj, None)
            await tx.insert(obj)
            await self._audit(tx, principal, f"{KIND_NAMES[kind]}.create", obj, None, obj)
        await self._changed(tx)
        return obj

    async def update_object(
        self,
        principal: ApiKey,
        kind: type[ScopedT],
        project: str | None,
        key: str,
        patch: Mapping[str, Any],
        *,
        expected_revision: int | None = None,
    ) -> ScopedT:
        """Apply a JSON merge patch (top-level fields replaced) to the object's spec."""
        async with self._store.transaction() as tx:
            p = await self._writable_project(tx, principal, kind, project)
            current = await self._get_existing(tx, kind, p.id, key)
            _check_revision(current.revision, expected_revision)
            spec = _merge(_SPEC_OF[kind], current, patch)
            if getattr(spec, "key", key) != key:
                raise ValidationFailed("a key cannot change", code="immutable_field")
            updated = msgspec.structs.replace(
                current,
                **msgspec.structs.asdict(spec),
                revision=current.revision + 1,
                updated_at=now(),
            )
            if isinstance(current, Experiment) and isinstance(updated, Experiment):
                check_experiment_edit(current, updated)
            await self._validate(tx, updated, current)
            await tx.update(updated, expected_revision=current.revision)
            await self._audit(
                tx, principal, f"{KIND_NAMES[kind]}.update", updated, current, updated
            )
        await self._changed(tx)
        return updated

    async def delete_object(
        self,
        principal: ApiKey,
        kind: type[ScopedT],
        project: str | None,
        key: str,
        *,
        expected_revision: int | None = None,
    ) -> None:
        async with self._store.transaction() as tx:
            p = await self._writable_project(tx, principal, kind, project)
            current = await self._get_existing(tx, kind, p.id, key)
            _check_revision(current.revision, expected_revision)
            if isinstance(current, Experiment) and current.status not in DELETABLE:
                raise Conflict(
                    f"experiment {key!r} is {current.status.value}; only a DRAFT may be deleted",
                    code="experiment_not_deletable",
                )
            await check_unreferenced(tx, current)
            await tx.delete(current, expected_revision=current.revision)
            await self._audit(tx, principal, f"{KIND_NAMES[kind]}.delete", current, current, None)
        await self._changed(tx)

    async def transition_experiment(
        self,
        principal: ApiKey,
        project: str | None,
        key: str,
        transition: Transition,
        *,
        expected_revision: int | None = None,
        reason: str | None = None,
    ) -> Experiment:
        async with self._store.transaction() as tx:
            p = await self._writable_project(tx, principal, Experiment, project)
            current = await self._get_existing(tx, Experiment, p.id, key)
            _check_revision(current.revision, expected_revision)
            target = next_status(current.status, transition)
            if target is None:
                raise Conflict(
                    f"cannot {transition.value} an experiment that is {current.status.value}",
                    code="illegal_transition",
                    details={"status": current.status.value, "transition": transition.value},
                )
            if target is ExperimentStatus.RUNNING:
                await check_can_run(tx, current)
            t = now()
            updated = msgspec.structs.replace(
                current,
                status=target,
                started_at=current.started_at
                or (t if target is ExperimentStatus.RUNNING else None),
                ended_at=t
                if target in (ExperimentStatus.COMPLETED, ExperimentStatus.ROLLED_BACK)
                else current.ended_at,
                revision=current.revision + 1,
                updated_at=t,
            )
            await tx.update(updated, expected_revision=current.revision)
            after = _builtins(updated)
            if reason is not None:
                after = {**after, "reason": reason}
            await self._audit_raw(
                tx,
                principal,
                f"experiment.{transition.value}",
                updated,
                _builtins(current),
                after,
            )
        await self._changed(tx)
        return updated

    async def mark_compacted(self, experiment: Experiment, at: datetime) -> Experiment | None:
        """Mark an ended experiment compacted (the data lifecycle, docs/retention.md): from
        now on its events are refused and its raw events may go. An audit entry by the
        system; None when it changed meanwhile (it is looked at again next run)."""
        async with self._store.transaction() as tx:
            current = await tx.get(Experiment, experiment.project_id, experiment.key)
            if (
                current is None
                or current.id != experiment.id
                or current.compacted_at is not None
                or current.status not in (ExperimentStatus.COMPLETED, ExperimentStatus.ARCHIVED)
            ):
                return None
            updated = msgspec.structs.replace(
                current, compacted_at=at, revision=current.revision + 1, updated_at=now()
            )
            await tx.update(updated, expected_revision=current.revision)
            await self._audit(tx, SYSTEM_KEY, "experiment.compact", updated, current, updated)
        await self._changed(tx)
        return updated

    # --- audit ----------------------------------------------------------------------

    async def list_audit(
        self,
        principal: ApiKey,
        project: str | None,
        *,
        resource_kind: str | None = None,
        resource_key: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> Page[AuditEntry]:
        limit = check_limit(limit)
        before = decode_cursor(cursor, int)
        assert before is None or isinstance(before, int)
        async with self._store.read() as tx:
            project_id: str | None = None
            if project is not None or principal.project_id is not None:
                project_id = (await self._resolve_project(tx, principal, project)).id
            # A key for all projects that names none reads the whole log, including
            # entries outside any project (global keys, the bootstrap key).
            authorize(principal, Resource.AUDIT, Action.READ, project_id=project_id)
            items = await tx.list_audit(
                project_id=project_id,
                resource_kind=resource_kind,
                resource_key=resource_key,
                before_id=before,
                limit=limit + 1,
            )
        return page_of(items, limit, lambda e: e.id)

    # --- internals ------------------------------------------------------------------

    async def _writable_project(
        self, tx: StoreTransaction, principal: ApiKey, kind: type[Scoped], project: str | None
    ) -> Project:
        p = await self._resolve_project(tx, principal, project)
        authorize(principal, _RESOURCE_OF[kind], Action.WRITE, project_id=p.id)
        if p.archived:
            raise Conflict(f"project {p.key!r} is archived", code="project_archived")
        return p

    async def _get_existing(
        self, tx: StoreTransaction, kind: type[ScopedT], project_id: str, key: str
    ) -> ScopedT:
        obj = await tx.get(kind, project_id, key)
        if obj is None:
            raise NotFound(f"{KIND_NAMES[kind]} {key!r} not found")
        return obj

    async def _validate(self, tx: StoreTransaction, obj: Scoped, previous: Scoped | None) -> None:
        match obj:
            case Flag():
                await validate_flag(tx, obj, self._validate_condition)
            case Experiment():
                await validate_experiment(tx, obj, self._validate_condition)
                await self._validate_guardrails(tx, obj)
            case Metric():
                self._validate_metric(obj)
                await validate_metric(tx, obj)
            case Segment():
                assert previous is None or isinstance(previous, Segment)
                await validate_segment(tx, obj, self._validate_condition, previous)
            case Layer():
                pass

    async def _audit(
        self,
        tx: StoreTransaction,
        principal: ApiKey,
        action: str,
        subject: Project | Scoped,
        before: msgspec.Struct | None,
        after: msgspec.Struct | None,
    ) -> None:
        await self._audit_raw(tx, principal, action, subject, _builtins(before), _builtins(after))

    async def _audit_raw(
        self,
        tx: StoreTransaction,
        principal: ApiKey,
        action: str,
        subject: Project | Scoped | tuple[str | None, str, str, str],
        before: Any,
        after: Any,
    ) -> None:
        if isinstance(subject, tuple):
            project_id, kind, rid, rkey = subject
        else:
            project_id = subject.id if isinstance(subject, Project) else subject.project_id
            kind, rid, rkey = KIND_NAMES[type(subject)], subject.id, subject.key
        await tx.append_audit(
            AuditEntry(
                project_id=project_id,
                actor=principal.id,
                at=now(),
                action=action,
                resource_kind=kind,
                resource_id=rid,
                resource_key=rkey,
                before=before,
                after=after,
            )
        )


def _check_revision(current: int, expected: int | None) -> None:
    if expected is not None and expected != current:
        raise Conflict(
            f"revision is {current}, not {expected}",
            code="revision_mismatch",
            details={"revision": current},
        )


SpecOut = TypeVar("SpecOut", bound=msgspec.Struct)


def _merge(spec_type: type[SpecOut], current: msgspec.Struct, patch: Mapping[str, Any]) -> SpecOut:
    """Top-level JSON merge patch onto the spec part of ``current``; the result is decoded
    as the spec type, so unknown fields and wrong types are rejected exactly as on create."""
    fields = _spec_fields(spec_type)
    merged = {f: getattr(current, f) for f in fields}
    base = msgspec.to_builtins(merged)
    base.update(patch)
    try:
        return msgspec.convert(base, spec_type)
    except msgspec.ValidationError as exc:
        raise ValidationFailed(str(exc), code="invalid_body") from exc


StructT = TypeVar("StructT", bound=msgspec.Struct)


def _revalidate(spec: StructT) -> StructT:
    """Structs built in Python skip msgspec's checks (types, ranges, patterns); a round
    trip through builtins applies them, so embedded callers get the same 422s as HTTP."""
    try:
        return msgspec.convert(msgspec.to_builtins(spec), type(spec))
    except msgspec.ValidationError as exc:
        raise ValidationFailed(str(exc), code="invalid_body") from exc
