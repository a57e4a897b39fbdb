"""Definitions as code: a project's layers, metrics, segments, experiments and flags in one
file.

A definitions file is JSON or TOML with the same structure::

    {"layers": [LayerSpec...], "metrics": [MetricSpec...], "segments": [SegmentSpec...],
     "experiments": [ExperimentSpec + optional "status"...], "flags": [FlagSpec...],
     "sdk_connections": [SdkConnectionSpec...]}

Each entry is exactly the spec the HTTP API takes, decoded strictly: an unknown field or a
wrong type is an error that names the object (``flag 'checkout'``) and the path in the file.

Loading is declarative and idempotent. Every object in the file is created, or updated to
match the file (fields left out take their defaults, as on create), or left alone when it
already matches, in which case no revision is bumped and no audit entry is written, so
loading the same file twice changes nothing the second time. Objects in the store but not in
the file are never deleted. SDK connections are matched by ``name`` among the project's
active connections (their client keys are made by the server, never written in a file),
and are never revoked by a load. An experiment's ``status`` is reached through the lifecycle's
own transitions (``DRAFT`` -> ``RUNNING`` is a ``start``), after every object is written.

Every write goes through ``ConfigService``, so it is validated, access-checked and audited
like any API call. Before writing anything, the whole file is checked against the store
(references, value types, locked experiments, reachable statuses), so a bad file normally
writes nothing; each object is still its own transaction, and should a write fail anyway
(a concurrent change), loading the fixed file again completes the rest.

From Python, e.g. for an embedded engine on the memory store::

    import assay

    async with assay.open_engine(assay.EngineConfig(store="memory")) as engine:
        await engine.service.create_project(assay.SYSTEM_KEY, assay.ProjectSpec(key="shop"))
        definitions = assay.parse_definitions(Path("assay.toml").read_bytes(), "toml")
        report = await assay.load_definitions(engine.service, assay.SYSTEM_KEY, "shop", definitions)
        print(report.summary())
        # decide and ingestion see the new configuration from here on
"""

from __future__ import annotations

import re
import tomllib
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, TypeAlias, TypeVar, cast

import msgspec

from assay.engine._core._lifecycle import TRANSITIONS
from assay.engine._core._segments import segment_references
from assay.engine._errors import AssayError, Conflict, NotFound, ValidationFailed
from assay.engine._integrity import ScopedT, check_experiment_edit, has_passthrough
from assay.engine._model import (
    ApiKey,
    Experiment,
    ExperimentRule,
    ExperimentSpec,
    ExperimentStatus,
    Flag,
    FlagSpec,
    Layer,
    LayerSpec,
    Metric,
    MetricSpec,
    ProjectSpec,
    SdkConnectionSpec,
    Segment,
    SegmentSpec,
    Struct,
    Transition,
)
from assay.engine._ports import StoreTransaction
from assay.engine._sdk_connections import plan_connections
from assay.engine._segments import validate_segment
from assay.engine._service import ConfigService
from assay.engine._validation import validate_experiment, validate_flag, validate_metric

__all__ = [
    "Definitions",
    "ExperimentDefinition",
    "LoadReport",
    "ObjectChange",
    "load_definitions",
    "parse_definitions",
]

Format: TypeAlias = Literal["json", "toml"]
KindName: TypeAlias = Literal["layer", "metric", "segment", "experiment", "flag", "sdk_connection"]
Action: TypeAlias = Literal["created", "updated", "unchanged"]
Scoped: TypeAlias = Flag | Experiment | Layer | Metric | Segment
Spec: TypeAlias = FlagSpec | ExperimentSpec | LayerSpec | MetricSpec | SegmentSpec


class ExperimentDefinition(ExperimentSpec, frozen=True, kw_only=True):
    """An experiment spec plus the status it should have once loaded."""

    status: ExperimentStatus | None = None
    """None: a new experiment stays ``DRAFT`` and an existing one keeps its status."""

    def spec(self) -> ExperimentSpec:
        return ExperimentSpec(
            **{f: getattr(self, f) for f in ExperimentSpec.__struct_fields__},
        )


class Definitions(Struct, frozen=True, kw_only=True):
    """The content of a definitions file."""

    layers: list[LayerSpec] = []
    metrics: list[MetricSpec] = []
    segments: list[SegmentSpec] = []
    experiments: list[ExperimentDefinition] = []
    flags: list[FlagSpec] = []
    sdk_connections: list[SdkConnectionSpec] = []


class ObjectChange(Struct, frozen=True, kw_only=True):
    """What loading did (or, in a dry run, would do) to one object."""

    kind: KindName
    key: str
    action: Action
    fields: list[str] = []
    """Spec fields that differ from the stored object (every field set, on create)."""
    transitions: list[Transition] = []
    """Lifecycle transitions applied to reach the requested status, in order."""
    status: ExperimentStatus | None = None
    """An experiment's status after loading."""


class LoadReport(Struct, frozen=True, kw_only=True):
    project: str
    dry_run: bool
    project_created: bool = False
    changes: list[ObjectChange] = []
    warnings: list[str] = []
    """Things the caller should know (the GrowthBook importer puts what it skipped here)."""

    @property
    def changed(self) -> bool:
        return self.project_created or any(c.action != "unchanged" for c in self.changes)

    def counts(self) -> dict[str, dict[str, int]]:
        """``{kind: {"created": n, "updated": n, "unchanged": n}}`` for every kind."""
        out: dict[str, dict[str, int]] = {
            k: {"created": 0, "updated": 0, "unchanged": 0} for k in _KIND_ORDER
        }
        for c in self.changes:
            out[c.kind][c.action] += 1
        return out

    def summary(self) -> str:
        """A readable, multi-line account of the load, for people."""
        will = self.dry_run
        lines = [
            f"{'dry run: nothing written; ' if will else ''}project {self.project!r}"
            + (" (would be created)" if will and self.project_created else "")
            + (" (created)" if not will and self.project_created else "")
        ]
        verbs = {
            "created": "would create" if will else "created",
            "updated": "would update" if will else "updated",
            "unchanged": "unchanged",
        }
        for c in self.changes:
            if c.action == "unchanged" and not c.transitions:
                continue
            detail = ""
            if c.action == "updated" and c.fields:
                detail = f" ({', '.join(c.fields)})"
            line = f"  {verbs[c.action]} {c.kind} {c.key!r}{detail}"
            if c.transitions:
                steps = ", ".join(t.value for t in c.transitions)
                line += f"; {'would ' if will else ''}{steps} -> {c.status}"
            lines.append(line)
        if len(lines) == 1:
            lines.append("  nothing to change: every object already matches")
        totals = self.counts()
        for kind in _KIND_ORDER:
            t = totals[kind]
            lines.append(
                f"{kind}s: {t['created']} created, "
                f"{t['updated']} updated, {t['unchanged']} unchanged"
            )
        if self.warnings:
            lines.append(f"{len(self.warnings)} warning(s):")
            lines.extend(f"  warning: {w}" for w in self.warnings)
        return "\n".join(lines)


_KIND_ORDER: tuple[KindName, ...] = (
    "layer",
    "metric",
    "segment",
    "experiment",
    "flag",
    "sdk_connection",
)
_SECTION: dict[KindName, str] = {
    "layer": "layers",
    "metric": "metrics",
    "segment": "segments",
    "experiment": "experiments",
    "flag": "flags",
    "sdk_connection": "sdk_connections",
}
_KIND_TYPES: dict[KindName, type[Scoped]] = {
    "layer": Layer,
    "metric": Metric,
    "segment": Segment,
    "experiment": Experiment,
    "flag": Flag,
}
_SPEC_TYPES: dict[KindName, type[Spec]] = {
    "layer": LayerSpec,
    "metric": MetricSpec,
    "segment": SegmentSpec,
    "experiment": ExperimentSpec,
    "flag": FlagSpec,
}

# --------------------------------------------------------------------------------------
# Parsing.
# --------------------------------------------------------------------------------------

_PATH = re.compile(r"at `\$\.(layers|metrics|segments|experiments|flags|sdk_connections)\[(\d+)\]")


def parse_definitions(data: bytes | str, fmt: Format) -> Definitions:
    """Decode a definitions file; ``fmt`` is ``"json"`` or ``"toml"``.

    Raises ``ValidationFailed`` (code ``invalid_definitions``) naming the object and the
    path of the first problem, e.g. ``flag 'checkout' (flags[0]): Object contains unknown
    field `colour` - at `$.flags[0].rules[1]```.
    """
    try:
        if fmt == "json":
            definitions = msgspec.json.decode(data, type=Definitions)
        elif fmt == "toml":
            definitions = msgspec.toml.decode(data, type=Definitions)
        else:
            raise ValidationFailed(
                f"unknown definitions format {fmt!r}: use json or toml", code="invalid_format"
            )
    except msgspec.ValidationError as exc:
        raise _located(exc, lambda: _raw(data, fmt)) from None
    except (msgspec.DecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValidationFailed(
            f"not a valid {fmt.upper()} document: {exc}", code="invalid_definitions"
        ) from None
    _check_unique(definitions)
    return definitions


def _raw(data: bytes | str, fmt: Format) -> Any:
    if fmt == "json":
        return msgspec.json.decode(data)
    return tomllib.loads(data.decode() if isinstance(data, bytes) else data)


def _located(exc: msgspec.ValidationError, raw: Callable[[], Any]) -> ValidationFailed:
    """msgspec's message (it carries the JSON path), prefixed with the object it is in."""
    message = str(exc)
    details: dict[str, Any] = {}
    match = _PATH.search(message)
    if match is not None:
        section, index = match.group(1), int(match.group(2))
        kind = next(k for k, s in _SECTION.items() if s == section)
        details = {"kind": kind, "index": index}
        key: Any = None
        try:
            entry = raw()[section][index]
            name = "name" if section == "sdk_connections" else "key"
            key = entry.get(name) if isinstance(entry, Mapping) else None
        except (LookupError, TypeError, ValueError, msgspec.DecodeError):
            key = None
        where = f"{section}[{index}]"
        if isinstance(key, str):
            details["key"] = key
            message = f"{kind} {key!r} ({where}): {message}"
        else:
            message = f"{kind} at {where}: {message}"
    return ValidationFailed(message, code="invalid_definitions", details=details or None)


def _check_unique(definitions: Definitions) -> None:
    for kind, items in _sections(definitions):
        seen: set[str] = set()
        for i, item in enumerate(items):
            if item.key in seen:
                raise ValidationFailed(
                    f"{kind} {item.key!r} ({_SECTION[kind]}[{i}]) is defined twice",
                    code="duplicate_key",
                    details={"kind": kind, "key": item.key, "index": i},
                )
            seen.add(item.key)
    names: set[str] = set()
    for i, connection in enumerate(definitions.sdk_connections):
        if connection.name in names:
            raise ValidationFailed(
                f"sdk_connection {connection.name!r} (sdk_connections[{i}]) is defined twice",
                code="duplicate_key",
                details={"kind": "sdk_connection", "key": connection.name, "index": i},
            )
        names.add(connection.name)


def _sections(
    definitions: Definitions,
) -> Iterable[tuple[KindName, Sequence[Spec]]]:
    yield "layer", definitions.layers
    yield "metric", definitions.metrics
    yield "segment", definitions.segments
    yield "experiment", definitions.experiments
    yield "flag", definitions.flags


def _revalidate(definitions: Definitions) -> Definitions:
    # Structs built in Python skip msgspec's checks (key patterns, ranges); a round trip
    # through builtins applies them, so Python callers get the same errors as a file.
    try:
        return msgspec.convert(msgspec.to_builtins(definitions), Definitions)
    except msgspec.ValidationError as exc:
        raise _located(exc, lambda: msgspec.to_builtins(definitions)) from None


# --------------------------------------------------------------------------------------
# Planning.
# --------------------------------------------------------------------------------------


class _Planned:
    """One object of the file: what is stored now, what the file wants, what to do."""

    __slots__ = ("action", "current", "fields", "kind", "spec", "status", "target", "transitions")

    def __init__(
        self,
        kind: KindName,
        spec: Spec,
        current: Scoped | None,
        fields: list[str],
        action: Action,
    ) -> None:
        self.kind = kind
        self.spec = spec
        self.current = current
        self.fields = fields
        self.action = action
        self.transitions: list[Transition] = []
        self.status: ExperimentStatus | None = None
        self.target: Scoped | None = None
        """The object as it will be once written (for validation against the file)."""


def _same(a: Any, b: Any) -> bool:
    """JSON equality that, unlike ``==``, tells ``true`` from ``1``: a flag value changed
    from 1 to true is a change. Key order does not matter (jsonb does not keep it)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and bool(a == b)


def _changed_fields(current: Scoped, spec: Spec) -> list[str]:
    return [
        f
        for f in type(spec).__struct_fields__
        if not _same(
            msgspec.to_builtins(getattr(current, f)), msgspec.to_builtins(getattr(spec, f))
        )
    ]


def _status_path(current: ExperimentStatus, target: ExperimentStatus) -> list[Transition] | None:
    """The shortest sequence of lifecycle transitions from ``current`` to ``target``."""
    paths: dict[ExperimentStatus, list[Transition]] = {current: []}
    queue = deque([current])
    while queue:
        status = queue.popleft()
        if status is target:
            return paths[status]
        for transition, (sources, destination) in TRANSITIONS.items():
            if status in sources and destination not in paths:
                paths[destination] = [*paths[status], transition]
                queue.append(destination)
    return None


_T = TypeVar("_T")


def _dependency_order(
    items: Sequence[_T], key: Callable[[_T], str], depends_on: Callable[[_T], Iterable[str]]
) -> list[_T]:
    """``items`` with every item after the items of the same list it depends on (file order
    otherwise). A cycle is left as it is: validation reports it."""
    by_key = {key(i): i for i in items}
    done: set[str] = set()
    visiting: set[str] = set()
    out: list[_T] = []

    def visit(item: _T) -> None:
        k = key(item)
        if k in done or k in visiting:
            return
        visiting.add(k)
        for dep in depends_on(item):
            if dep in by_key:
                visit(by_key[dep])
        visiting.discard(k)
        done.add(k)
        out.append(item)

    for item in items:
        visit(item)
    return out


class _Overlay:
    """The store as it will be after loading: planned objects over the stored ones.

    The service's own validation functions read other objects only through ``get``, so
    running them against this view checks the whole file, cross references included, with
    exactly the rules a write applies, before anything is written."""

    def __init__(
        self, stored: Mapping[tuple[type[Scoped], str], Scoped], planned: Iterable[_Planned]
    ) -> None:
        self._objects = dict(stored)
        for p in planned:
            assert p.target is not None
            self._objects[(type(p.target), p.target.key)] = p.target

    async def get(self, kind: type[Scoped], project_id: str | None, key: str) -> Scoped | None:
        return self._objects.get((kind, key))


async def _stored_objects(
    service: ConfigService, principal: ApiKey, project: str
) -> dict[tuple[type[Scoped], str], Scoped]:
    stored: dict[tuple[type[Scoped], str], Scoped] = {}

    async def collect(kind: type[ScopedT]) -> None:
        cursor: str | None = None
        while True:
            page = await service.list_objects(principal, kind, project, cursor=cursor, limit=500)
            for obj in page.items:
                stored[(kind, obj.key)] = obj
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # One call per kind: the service's methods are generic over one kind at a time.
    await collect(Layer)
    await collect(Metric)
    await collect(Segment)
    await collect(Experiment)
    await collect(Flag)
    return stored


def _named(exc: AssayError, kind: str, key: str) -> AssayError:
    """The same error, its message prefixed with the object (and field) it is about."""
    details = exc.details if isinstance(exc.details, dict) else {}
    field = details.get("field")
    where = f" ({field})" if isinstance(field, str) else ""
    return type(exc)(
        f"{kind} {key!r}{where}: {exc.message}",
        code=exc.code,
        details={**details, "kind": kind, "key": key},
    )


_PLACEHOLDER_TIME = datetime(2000, 1, 1, tzinfo=UTC)


def _target(kind: KindName, spec: Spec, current: Scoped | None, project_id: str) -> Scoped:
    data = msgspec.structs.asdict(spec)
    if current is not None:
        return msgspec.structs.replace(current, **data)
    cls = _KIND_TYPES[kind]
    return cls(
        **data,
        id=f"planned-{kind}-{spec.key}",
        project_id=project_id,
        created_at=_PLACEHOLDER_TIME,
        updated_at=_PLACEHOLDER_TIME,
    )


def _plan(
    definitions: Definitions,
    stored: Mapping[tuple[type[Scoped], str], Scoped],
    project_id: str,
) -> list[_Planned]:
    planned: list[_Planned] = []
    for kind, items in _sections(definitions):
        for item in items:
            spec: Spec = item.spec() if isinstance(item, ExperimentDefinition) else item
            current = stored.get((_KIND_TYPES[kind], spec.key))
            if current is None:
                fields = list(type(spec).__struct_fields__)
                p = _Planned(kind, spec, None, fields, "created")
            else:
                fields = _changed_fields(current, spec)
                p = _Planned(kind, spec, current, fields, "updated" if fields else "unchanged")
            p.target = _target(kind, spec, current, project_id)
            if isinstance(item, ExperimentDefinition):
                _plan_status(p, item)
            planned.append(p)
    return planned


def _plan_status(p: _Planned, item: ExperimentDefinition) -> None:
    current = p.current
    now = current.status if isinstance(current, Experiment) else ExperimentStatus.DRAFT
    target = item.status if item.status is not None else now
    path = _status_path(now, target)
    if path is None:
        raise Conflict(
            f"experiment {item.key!r} (status): cannot go from {now.value} to {target.value}",
            code="illegal_transition",
            details={"kind": "experiment", "key": item.key, "field": "status"},
        )
    p.transitions = path
    p.status = target
    if path and p.action == "unchanged":
        p.action = "updated"


ConditionValidator: TypeAlias = Callable[[Mapping[str, Any]], None]


async def _validate(
    planned: Sequence[_Planned], overlay: _Overlay, validate_condition: ConditionValidator
) -> None:
    tx = cast(StoreTransaction, overlay)  # only ``get`` is used; see _Overlay
    for p in planned:
        target = p.target
        try:
            match target:
                case Flag():
                    await validate_flag(tx, target, validate_condition)
                case Experiment():
                    await validate_experiment(tx, target, validate_condition)
                    current = p.current
                    if isinstance(current, Experiment) and p.fields:
                        check_experiment_edit(current, target)
                case Metric():
                    await validate_metric(tx, target)
                case Segment():
                    current_segment = p.current if isinstance(p.current, Segment) else None
                    await validate_segment(tx, target, validate_condition, current_segment)
                case _:
                    pass
        except AssayError as exc:
            raise _named(exc, p.kind, p.spec.key) from None


def _check_running(
    planned: Sequence[_Planned], stored: Mapping[tuple[type[Scoped], str], Scoped]
) -> None:
    """What the service checks when an experiment starts, checked for the end state
    before anything is written: one running experiment per flag, and no two running
    experiments on overlapping ranges of a layer."""
    objects = dict(stored)
    for p in planned:
        assert p.target is not None
        objects[(type(p.target), p.target.key)] = p.target
    final_status = {p.spec.key: p.status for p in planned if p.kind == "experiment"}
    running: dict[str, Experiment] = {}
    for obj in objects.values():
        if isinstance(obj, Experiment):
            status = final_status.get(obj.key) or obj.status
            if status is ExperimentStatus.RUNNING:
                running[obj.key] = obj
    in_file = {(p.kind, p.spec.key) for p in planned}
    for obj in objects.values():
        if not isinstance(obj, Flag):
            continue
        keys = [r.experiment for r in obj.rules if isinstance(r, ExperimentRule)]
        # A holdout in GrowthBook's form (a passthrough variant) does not count.
        both = [k for k in dict.fromkeys(keys) if k in running and not has_passthrough(running[k])]
        if len(both) > 1:
            # Name an object of the file: that is where the fix goes.
            kind, key = "flag", obj.key
            started = next((k for k in both if ("experiment", k) in in_file), None)
            if ("flag", obj.key) not in in_file and started is not None:
                kind, key = "experiment", started
            raise Conflict(
                f"{kind} {key!r}: flag {obj.key!r} would run experiments {both[0]!r} and "
                f"{both[1]!r} at once; a flag runs one experiment at a time",
                code="flag_has_running_experiment",
                details={"kind": kind, "key": key, "flag": obj.key, "experiments": both},
            )
    ranged = sorted(
        (e for e in running.values() if e.layer is not None),
        key=lambda e: ("experiment", e.key) not in in_file,  # name one from the file
    )
    for i, a in enumerate(ranged):
        for b in ranged[i + 1 :]:
            ra, rb = a.layer, b.layer
            assert ra is not None
            assert rb is not None
            if ra.layer == rb.layer and ra.start < rb.end and rb.start < ra.end:
                raise Conflict(
                    f"experiment {a.key!r} (layer): its range of layer {ra.layer!r} overlaps "
                    f"running experiment {b.key!r}",
                    code="layer_range_overlap",
                    details={"kind": "experiment", "key": a.key, "field": "layer"},
                )


# --------------------------------------------------------------------------------------
# Loading.
# --------------------------------------------------------------------------------------


async def load_definitions(
    service: ConfigService,
    principal: ApiKey,
    project: str,
    definitions: Definitions,
    *,
    dry_run: bool = False,
    create_project: bool = False,
    validate_condition: ConditionValidator | None = None,
) -> LoadReport:
    """Make ``project`` match ``definitions``; see the module docstring.

    Order: layers, metrics, segments, experiments, flags (each after what it references in the same
    file), then experiment status transitions (stops before starts, so a file can swap
    which experiment runs on a flag). ``dry_run`` reads and validates everything and
    reports what would change, writing nothing. ``create_project`` creates a missing
    project (key ``project``) instead of failing. Conditions are checked up front with
    ``validate_condition``, by default the service's own (the engine's operator table).
    """
    definitions = _revalidate(definitions)
    _check_unique(definitions)

    project_id = "planned-project"
    project_created = False
    try:
        project_id = (await service.get_project(principal, project)).id
        stored = await _stored_objects(service, principal, project)
    except NotFound:
        if not create_project:
            raise NotFound(
                f"project {project!r} not found (create it first, or ask to create it)",
                code="project_not_found",
            ) from None
        project_created = True
        stored = {}

    planned = _plan(definitions, stored, project_id)
    if validate_condition is None:
        # The service's validator knows the engine's operators (plugins included); it is
        # not public API, but this module is part of the engine package.
        validate_condition = service.validate_condition
    await _validate(planned, _Overlay(stored, planned), validate_condition)
    _check_running(planned, stored)

    connections = await plan_connections(
        service, principal, project, definitions.sdk_connections, project_created
    )
    report = LoadReport(
        project=project,
        dry_run=dry_run,
        project_created=project_created,
        changes=[
            *(
                ObjectChange(
                    kind=p.kind,
                    key=p.spec.key,
                    action=p.action,
                    fields=p.fields,
                    transitions=p.transitions,
                    status=p.status,
                )
                for p in planned
            ),
            *(
                ObjectChange(kind="sdk_connection", key=spec.name, action=action, fields=fields)
                for spec, _, action, fields in connections
            ),
        ],
    )
    if dry_run:
        return report

    # One wait for the snapshot at the end instead of one per object; when this returns
    # (or raises after some writes), the engine's decide and ingestion see every write.
    async with service.batched_changes():
        if project_created:
            await service.create_project(principal, ProjectSpec(key=project))
        for p in _write_order(planned):
            await _write(service, principal, project, p)
        # Stops first, then starts: a flag may hold one running experiment at a time.
        with_transitions = [p for p in planned if p.transitions]
        with_transitions.sort(key=lambda p: p.status is ExperimentStatus.RUNNING)
        for p in with_transitions:
            for transition in p.transitions:
                try:
                    await service.transition_experiment(principal, project, p.spec.key, transition)
                except AssayError as exc:
                    raise _named(exc, p.kind, p.spec.key) from None
        for spec, current, _, fields in connections:
            try:
                if current is None:
                    await service.create_connection(principal, project, spec)
                elif fields:
                    patch = {f: msgspec.to_builtins(getattr(spec, f)) for f in fields}
                    await service.update_connection(
                        principal, project, current.id, patch, expected_revision=current.revision
                    )
            except AssayError as exc:
                raise _named(exc, "sdk_connection", spec.name) from None
    return report


def _write_order(planned: Sequence[_Planned]) -> list[_Planned]:
    by_kind: dict[KindName, list[_Planned]] = {k: [] for k in _KIND_ORDER}
    for p in planned:
        by_kind[p.kind].append(p)

    def key(p: _Planned) -> str:
        return p.spec.key

    def metric_deps(p: _Planned) -> list[str]:
        spec = cast(MetricSpec, p.spec)
        return [k for k in (spec.numerator, spec.denominator) if k is not None]

    def segment_deps(p: _Planned) -> list[str]:
        spec = cast(SegmentSpec, p.spec)
        return [k for _, k in segment_references(spec.condition)] if spec.condition else []

    def experiment_deps(p: _Planned) -> list[str]:
        spec = cast(ExperimentSpec, p.spec)
        return [] if spec.holdout is None else [spec.holdout]

    def flag_deps(p: _Planned) -> list[str]:
        spec = cast(FlagSpec, p.spec)
        return [pre.flag for pre in spec.prerequisites]

    ordered = [
        *by_kind["layer"],
        *_dependency_order(by_kind["metric"], key, metric_deps),
        *_dependency_order(by_kind["segment"], key, segment_deps),
        *_dependency_order(by_kind["experiment"], key, experiment_deps),
        *_dependency_order(by_kind["flag"], key, flag_deps),
    ]
    return [p for p in ordered if p.fields]


async def _write(service: ConfigService, principal: ApiKey, project: str, p: _Planned) -> None:
    try:
        # One branch per kind: the service's methods are generic over one kind at a time.
        match p.kind:
            case "layer":
                await _write_as(service, principal, project, Layer, p)
            case "metric":
                await _write_as(service, principal, project, Metric, p)
            case "segment":
                await _write_as(service, principal, project, Segment, p)
            case "experiment":
                await _write_as(service, principal, project, Experiment, p)
            case "flag":
                await _write_as(service, principal, project, Flag, p)
    except AssayError as exc:
        raise _named(exc, p.kind, p.spec.key) from None


async def _write_as(
    service: ConfigService, principal: ApiKey, project: str, kind: type[ScopedT], p: _Planned
) -> None:
    if p.current is None:
        await service.create_object(principal, kind, project, p.spec)
        return
    patch = {f: msgspec.to_builtins(getattr(p.spec, f)) for f in p.fields}
    await service.update_object(
        principal,
        kind,
        project,
        p.spec.key,
        patch,
        # Planned against this revision: a change made meanwhile is a conflict, not
        # something to overwrite blindly.
        expected_revision=p.current.revision,
    )
