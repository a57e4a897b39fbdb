"""The immutable, compiled configuration snapshot that decide reads.

A snapshot is compiled once per configuration change and swapped in atomically, so a
decision never sees half of a change and never waits for the store. Compiling does all the
work that does not depend on the subject: conditions become predicates (through a
``ConditionCompiler``, which also shares equal conditions), coverage and weights become
bucket ranges, layers become namespace tuples, and every reference (a rule's experiment,
an experiment's holdout, a flag's prerequisites) is resolved to the compiled object itself,
so the decide hot path follows attributes and never looks anything up by name.

Everything here is frozen: compiled objects are slotted frozen dataclasses and every
mapping is a read-only ``MappingProxyType``. A snapshot can therefore be shared by every
caller, in any number of concurrent decisions, with no locking.

Compiling never fails because of one bad object. A condition that does not compile (it
should not happen: conditions are validated when saved, but a plugin may have gone away)
makes its rule never match, and a prerequisite cycle makes the flags on it fail their
prerequisites; both are recorded in ``Snapshot.errors`` so the runtime can log them.
Rules' parent conditions are the exception to resolving by reference: they hold the
project's mapping of compiled flags and look the parent up when decided, because
GrowthBook lets them form cycles, which decide ends as GrowthBook does (saving refuses
them, but an imported payload decided as is may hold one).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar, final

from assay.engine._core._bucketing import get_bucket_ranges
from assay.engine._core._conditions import AttributesPredicate, ConditionCompiler
from assay.engine._core._segments import saved_groups, segment_references, segments_version
from assay.engine._core._sticky import sticky_bucket_key
from assay.engine._model import (
    Condition,
    Experiment,
    ExperimentRule,
    ExperimentStatus,
    Flag,
    ForceRule,
    HashFilter,
    Layer,
    Metric,
    ParentCondition,
    Project,
    RolloutRule,
    Segment,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "EMPTY_SNAPSHOT",
    "CompiledExperiment",
    "CompiledExperimentRule",
    "CompiledFilter",
    "CompiledFlag",
    "CompiledForceRule",
    "CompiledParent",
    "CompiledPrerequisite",
    "CompiledRolloutRule",
    "CompiledRule",
    "ConfigSource",
    "Snapshot",
    "SnapshotError",
    "compile_snapshot",
    "forced_key",
    "index_snapshot",
]

_K = TypeVar("_K")
_V = TypeVar("_V")


def _frozen(items: Iterable[tuple[_K, _V]]) -> Mapping[_K, _V]:
    return MappingProxyType(dict(items))


class ConfigSource(Protocol):
    """What a snapshot is compiled from: the five lists of configuration objects.

    The storage port's ``ConfigState`` satisfies it; it is a protocol here because the
    pure core must not import the ports module.
    """

    @property
    def projects(self) -> Sequence[Project]: ...
    @property
    def flags(self) -> Sequence[Flag]: ...
    @property
    def experiments(self) -> Sequence[Experiment]: ...
    @property
    def layers(self) -> Sequence[Layer]: ...
    @property
    def metrics(self) -> Sequence[Metric]: ...


@dataclass(frozen=True, slots=True)
class SnapshotError:
    """Something that did not compile, and what the snapshot did instead."""

    project_id: str
    kind: str
    """``"flag"`` or ``"experiment"``."""
    key: str
    field: str
    """Where in the object, e.g. ``"rules[2].condition"`` or ``"prerequisites[0]"``."""
    code: str
    """A ``ConditionError`` code, ``compile_failed``, ``prerequisite_cycle`` or
    ``invalid_holdout``."""
    message: str


@dataclass(frozen=True, slots=True)
class CompiledFilter:
    """A hash-range filter: ``hash(seed, attribute value, hash_version)`` in a range."""

    attribute: str
    seed: str
    hash_version: int
    ranges: tuple[tuple[float, float], ...]


def forced_key(value: Any) -> tuple[int, Any] | None:
    """A dictionary key for an attribute value under JSON equality (1 == 1.0, true != 1,
    "1" != 1); None for values that cannot be listed (objects, arrays, null)."""
    if type(value) is str:
        return (0, value)
    if type(value) is bool:
        return (1, value)
    if type(value) is int or type(value) is float:
        return (2, value)
    return None


@dataclass(frozen=True, slots=True)
class CompiledExperiment:
    """An experiment ready to assign: everything decide needs, precomputed."""

    experiment: Experiment
    """The domain object, for whoever needs more than assignment."""
    key: str
    revision: int
    running: bool
    rolled_back: bool
    is_holdout: bool
    seed: str
    hash_version: int
    hash_attribute: str
    fallback_attribute: str | None
    condition: AttributesPredicate | None
    """None when there is no condition, so decide can skip the call."""
    namespace: tuple[str, float, float] | None
    """The layer as GrowthBook's namespace tuple ``(layer key, start, end)``."""
    ranges: tuple[tuple[float, float], ...]
    """Bucket ranges, one per variant: the explicit ones, else from coverage and weights."""
    variant_keys: tuple[str, ...]
    variant_values: tuple[Any, ...]
    passthrough: tuple[bool, ...]
    """Per variant: a passthrough variant lets the flag go on to its next rule."""
    filters: tuple[CompiledFilter, ...]
    forced: tuple[tuple[str, Mapping[tuple[int, Any], int]], ...]
    """Individual targeting: (attribute, {forced_key(value): variant index}), in order."""
    assignable: bool
    """At least two variants: like GrowthBook, fewer is not an experiment."""
    control_value: Any
    """The first variant's value, served to everyone once the experiment is rolled back."""
    participation_limit: int | None
    holdout: CompiledExperiment | None = None
    """The holdout this experiment sits in, only when it is a running holdout experiment.

    It is compiled without holdout and participation references of its own: holdouts do
    not nest, and the holdout's assignment needs only its own targeting and buckets."""
    prior: tuple[CompiledExperiment, ...] = ()
    """When ``participation_limit`` is set and the experiment runs: the project's running,
    non-holdout experiments ordered before it by (started_at, key), compiled without
    references of their own."""
    fingerprint: str = ""
    """Ids and revisions of this experiment, its holdout and its ``prior`` experiments:
    what a cached outcome of this experiment depends on."""
    segments_mark: str = ""
    """The project's segments digest when the condition uses segments, else ""."""
    sticky: bool = False
    """Sticky bucketing is on (see ``_core._sticky``)."""
    sticky_key: str = ""
    """Where a subject's assignment is kept: ``"<key>__<bucket_version>"``, as GrowthBook."""
    blocked_keys: tuple[str, ...] = ()
    """Assignments under these keys (versions below ``min_bucket_version``) keep the
    subject out."""


@dataclass(frozen=True, slots=True)
class CompiledParent:
    """A rule's parent condition, resolved when decided: ``flags`` is the project's
    compiled flags (complete once the snapshot is), so parents may form cycles, which
    decide breaks as GrowthBook does."""

    flag_key: str
    flags: Mapping[str, CompiledFlag]
    condition: AttributesPredicate | None
    """Tested on ``{"value": parent value}``; None always holds."""
    gate: bool


@final  # lets type checkers narrow ``type(rule) is ...`` dispatch in decide
@dataclass(frozen=True, slots=True)
class CompiledForceRule:
    rule_id: str
    condition: AttributesPredicate | None
    value: Any
    filters: tuple[CompiledFilter, ...] = ()
    parents: tuple[CompiledParent, ...] = ()


@final  # lets type checkers narrow ``type(rule) is ...`` dispatch in decide
@dataclass(frozen=True, slots=True)
class CompiledRolloutRule:
    rule_id: str
    condition: AttributesPredicate | None
    value: Any
    coverage: float
    seed: str
    hash_version: int
    hash_attribute: str
    fallback_attribute: str | None
    range: tuple[float, float] | None = None
    """When set, decides instead of ``coverage``: ``start <= hash < end``."""
    filters: tuple[CompiledFilter, ...] = ()
    parents: tuple[CompiledParent, ...] = ()


@final  # lets type checkers narrow ``type(rule) is ...`` dispatch in decide
@dataclass(frozen=True, slots=True)
class CompiledExperimentRule:
    rule_id: str
    experiment_key: str
    experiment: CompiledExperiment | None
    """None when the referenced experiment does not exist (``no_active_experiment``)."""
    parents: tuple[CompiledParent, ...] = ()


CompiledRule: TypeAlias = CompiledForceRule | CompiledRolloutRule | CompiledExperimentRule


@dataclass(frozen=True, slots=True)
class CompiledPrerequisite:
    flag_key: str
    flag: CompiledFlag | None
    """The prerequisite flag; None when it does not exist or sits on a cycle (fails)."""
    value: Any


@dataclass(frozen=True, slots=True)
class CompiledFlag:
    flag: Flag
    """The domain object."""
    key: str
    project_id: str
    revision: int
    enabled: bool
    default_value: Any
    prerequisites: tuple[CompiledPrerequisite, ...]
    rules: tuple[CompiledRule, ...]
    cache_key: str
    """A string naming everything this flag's outcome depends on: project, key, the flag's
    id and revision, and the ids and revisions of every experiment it reaches (rules,
    holdouts, participation-limit predecessors) and of every flag it reaches through
    prerequisites and parent conditions, transitively (missing ones by name).
    Decision-cache entries are keyed by it, so any relevant change misses the cache while
    unrelated changes (a new snapshot version) do not. Ids, not just revisions, so a flag
    deleted and re-created at revision 1 cannot hit an old entry."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    projects: Mapping[str, Project] = field(default_factory=lambda: _frozen(()))
    """Projects by id."""
    project_ids: Mapping[str, str] = field(default_factory=lambda: _frozen(()))
    """Project id by project key."""
    flags: Mapping[tuple[str, str], Flag] = field(default_factory=lambda: _frozen(()))
    """Domain flags by (project id, key)."""
    experiments: Mapping[tuple[str, str], Experiment] = field(default_factory=lambda: _frozen(()))
    """Domain experiments by (project id, key)."""
    layers: Mapping[tuple[str, str], Layer] = field(default_factory=lambda: _frozen(()))
    metrics: Mapping[tuple[str, str], Metric] = field(default_factory=lambda: _frozen(()))
    segments: Mapping[tuple[str, str], Segment] = field(default_factory=lambda: _frozen(()))
    """Domain segments by (project id, key): what conditions' ``$inGroup``/``$savedGroup``
    references were compiled against (read by exports, never by decide)."""
    project_flags: Mapping[str, Mapping[str, CompiledFlag]] = field(
        default_factory=lambda: _frozen(())
    )
    """Compiled flags by project id, then key (in key order): decide's lookup."""
    compiled_experiments: Mapping[tuple[str, str], CompiledExperiment] = field(
        default_factory=lambda: _frozen(())
    )
    """Compiled experiments by (project id, key)."""
    errors: tuple[SnapshotError, ...] = ()
    """What did not compile; see the module docstring."""
    sticky_projects: frozenset[str] = frozenset()
    """Projects with a sticky-bucketing experiment (decide looks for assignments to store
    only there)."""

    def flag(self, project_id: str, key: str) -> CompiledFlag | None:
        """The compiled flag, or None."""
        flags = self.project_flags.get(project_id)
        return None if flags is None else flags.get(key)


EMPTY_SNAPSHOT = Snapshot(version=0)


# --------------------------------------------------------------------------------------
# Compilation.
# --------------------------------------------------------------------------------------


class _Compiler:
    """One compilation: the condition compiler, each project's segments (as GrowthBook
    saved groups, with a digest of their content) and the errors recorded so far."""

    def __init__(self, conditions: ConditionCompiler, segments: Sequence[Segment] = ()) -> None:
        self.conditions = conditions
        self.errors: list[SnapshotError] = []
        by_project: dict[str, list[Segment]] = {}
        for segment in segments:
            by_project.setdefault(segment.project_id, []).append(segment)
        self.groups: dict[str, tuple[Mapping[str, Any], str]] = {}
        for project_id, members in by_project.items():
            groups = saved_groups(members)
            self.groups[project_id] = (MappingProxyType(groups), segments_version(groups))
        self._no_groups: tuple[Mapping[str, Any], str] = (MappingProxyType({}), "")

    def segments_mark(self, project_id: str, *conditions: Condition | None) -> str:
        """For cache keys: the project's segments digest when any condition uses a segment
        (so changing a segment misses the decision cache of what uses it), else ""."""
        if any(c and segment_references(c) for c in conditions):
            return "seg:" + self.groups.get(project_id, self._no_groups)[1]
        return ""

    def condition(
        self, condition: Condition | None, project_id: str, kind: str, key: str, where: str
    ) -> AttributesPredicate | None:
        if not condition:  # None and {} always hold: no predicate to call at all
            return None
        groups, version = self.groups.get(project_id, self._no_groups)
        try:
            return self.conditions.compile(condition, saved_groups=groups, groups_version=version)
        except Exception as exc:
            # Deliberately broad: a third-party operator factory may raise anything, and
            # one bad rule must not keep every other change from being published.
            code = getattr(exc, "code", "compile_failed")
            self.errors.append(
                SnapshotError(project_id, kind, key, where, str(code), str(exc) or repr(exc))
            )
            return _never

    def error(self, project_id: str, kind: str, key: str, where: str, code: str, msg: str) -> None:
        self.errors.append(SnapshotError(project_id, kind, key, where, code, msg))


def _never(_: Mapping[str, Any]) -> bool:
    return False


def _normalised_weights(weights: Sequence[float]) -> list[float] | None:
    # Weights in assay are relative (1, 1, 2); GrowthBook's getBucketRanges wants shares
    # and silently falls back to equal weights unless they sum to 0.99..1.01. Weights
    # already in that band are passed through untouched, so a GrowthBook-imported
    # experiment buckets bit for bit as in GrowthBook; others are divided by their sum,
    # which is what "relative weight" means.
    total = 0.0
    for w in weights:
        total += w
    if total <= 0:
        return None
    if 0.99 <= total <= 1.01:
        return list(weights)
    return [w / total for w in weights]


def _compile_filters(filters: Sequence[HashFilter]) -> tuple[CompiledFilter, ...]:
    return tuple(
        CompiledFilter(
            attribute=f.attribute,
            seed=f.seed,
            hash_version=f.hash_version,
            ranges=tuple((float(a), float(b)) for a, b in f.ranges),
        )
        for f in filters
    )


def _compile_forced(e: Experiment) -> tuple[tuple[str, Mapping[tuple[int, Any], int]], ...]:
    index = {v.key: i for i, v in enumerate(e.variants)}
    per_attribute: dict[str, dict[tuple[int, Any], int]] = {}
    for forced in e.forced_variations:
        i = index.get(forced.variant)
        if i is None:  # refused when saved; ignored should one slip through
            continue
        table = per_attribute.setdefault(forced.attribute, {})
        for value in forced.values:
            k = forced_key(value)
            if k is not None:
                table.setdefault(k, i)  # the first entry listing a value wins
    return tuple((a, MappingProxyType(t)) for a, t in per_attribute.items())


def _compile_experiment_base(c: _Compiler, e: Experiment) -> CompiledExperiment:
    variants = e.variants
    weights = _normalised_weights([v.weight for v in variants])
    layer = e.layer
    if e.ranges is not None:
        ranges = tuple((float(a), float(b)) for a, b in e.ranges)
    else:
        ranges = tuple(get_bucket_ranges(len(variants), e.coverage, weights))
    return CompiledExperiment(
        experiment=e,
        key=e.key,
        revision=e.revision,
        running=e.status is ExperimentStatus.RUNNING,
        rolled_back=e.status is ExperimentStatus.ROLLED_BACK,
        is_holdout=e.is_holdout,
        # GrowthBook uses ``seed || key``, so an empty seed means the key there too.
        seed=e.seed or e.key,
        hash_version=e.hash_version,
        hash_attribute=e.hash_attribute,
        # GrowthBook hashes with an experiment's fallback only under sticky bucketing:
        # ``fallback_sticky_only`` keeps that rule, so such a fallback counts only for a
        # sticky experiment (for hashing and for the sticky documents read).
        fallback_attribute=(
            None
            if e.fallback_sticky_only and not e.sticky_bucketing
            else (e.fallback_attribute or None)
        ),
        condition=c.condition(e.condition, e.project_id, "experiment", e.key, "condition"),
        namespace=None if layer is None else (layer.layer, layer.start, layer.end),
        ranges=ranges,
        variant_keys=tuple(v.key for v in variants),
        variant_values=tuple(v.value for v in variants),
        passthrough=tuple(v.passthrough for v in variants),
        filters=_compile_filters(e.filters),
        forced=_compile_forced(e),
        assignable=len(variants) >= 2,
        control_value=variants[0].value if variants else None,
        participation_limit=e.participation_limit,
        segments_mark=c.segments_mark(e.project_id, e.condition),
        sticky=e.sticky_bucketing,
        sticky_key=sticky_bucket_key(e.key, e.bucket_version),
        blocked_keys=tuple(sticky_bucket_key(e.key, v) for v in range(e.min_bucket_version)),
    )


def _start_order(e: Experiment) -> tuple[int, float, str]:
    # Datetimes may be naive or aware depending on the store; comparing timestamps avoids
    # mixing the two. A running experiment without started_at (should not exist) goes first.
    if e.started_at is None:
        return (0, 0.0, e.key)
    return (1, e.started_at.timestamp(), e.key)


def _experiment_id(e: CompiledExperiment) -> str:
    return f"{e.experiment.id}:{e.revision}{e.segments_mark}"


def _compile_experiments(
    c: _Compiler, experiments: Sequence[Experiment]
) -> dict[tuple[str, str], CompiledExperiment]:
    base = {(e.project_id, e.key): _compile_experiment_base(c, e) for e in experiments}

    # Participation order per project: running experiments by (started_at, key). Holdouts
    # are left out: a holdout covers a share of everyone by design, and counting it would
    # make a limit of 1 exclude every subject it covers.
    running: dict[str, list[CompiledExperiment]] = {}
    for e in sorted(experiments, key=_start_order):
        compiled = base[(e.project_id, e.key)]
        if compiled.running and not compiled.is_holdout:
            running.setdefault(e.project_id, []).append(compiled)

    result: dict[tuple[str, str], CompiledExperiment] = {}
    for (project_id, key), b in base.items():
        holdout: CompiledExperiment | None = None
        holdout_key = b.experiment.holdout
        if holdout_key is not None and not b.is_holdout:
            h = base.get((project_id, holdout_key))
            if h is None or not h.is_holdout:
                c.error(
                    project_id,
                    "experiment",
                    key,
                    "holdout",
                    "invalid_holdout",
                    f"holdout {holdout_key!r} is not a holdout experiment; ignored",
                )
            elif h.running:
                holdout = h
        prior: tuple[CompiledExperiment, ...] = ()
        if b.participation_limit is not None and b.running and not b.is_holdout:
            order = running.get(project_id, [])
            # By identity: dataclass equality would compare every field.
            position = next(i for i, x in enumerate(order) if x is b)
            prior = tuple(order[:position])
        parts = [_experiment_id(b)]
        if holdout is not None:
            parts.append("h" + _experiment_id(holdout))
        parts.extend("p" + _experiment_id(p) for p in prior)
        result[(project_id, key)] = dataclasses.replace(
            b, holdout=holdout, prior=prior, fingerprint=",".join(parts)
        )
    return result


def _rule_id(rule_id: str | None, index: int) -> str:
    return rule_id if rule_id is not None else f"rules[{index}]"


def _compile_flags(
    c: _Compiler,
    flags: Sequence[Flag],
    experiments: Mapping[tuple[str, str], CompiledExperiment],
) -> dict[str, dict[str, CompiledFlag]]:
    """Every flag compiled, by project id then key (in key order)."""
    by_key = {(f.project_id, f.key): f for f in flags}
    done: dict[tuple[str, str], CompiledFlag] = {}
    visiting: set[tuple[str, str]] = set()
    # Filled in key order once every flag is compiled; rules' parent conditions hold these
    # very dictionaries, so they resolve parents (cycles included) when decided.
    per_project: dict[str, dict[str, CompiledFlag]] = {f.project_id: {} for f in flags}
    # What each flag's outcome depends on: its own parts, and the flags it reaches
    # (prerequisites and parent conditions), closed transitively below.
    parts: dict[tuple[str, str], list[str]] = {}
    edges: dict[tuple[str, str], set[tuple[str, str]]] = {}

    def parents(
        f: Flag, conditions: Sequence[ParentCondition], where: str
    ) -> tuple[CompiledParent, ...]:
        out = []
        for j, pc in enumerate(conditions):
            pref = (f.project_id, pc.flag)
            if pref in by_key:
                edges[(f.project_id, f.key)].add(pref)
            else:
                parts[(f.project_id, f.key)].append(f"parent:{pc.flag}:missing")
            cond = c.condition(
                pc.condition,
                f.project_id,
                "flag",
                f.key,
                f"{where}.parent_conditions[{j}].condition",
            )
            out.append(CompiledParent(pc.flag, per_project[f.project_id], cond, pc.gate))
        return tuple(out)

    # Prerequisites are compiled depth first so each one holds a direct reference to the
    # compiled prerequisite flag. Saving refuses cycles; one that slips through anyway
    # (e.g. written by another tool) is cut where it closes and reported, and the flags on
    # it fail their prerequisites instead of recursing forever in decide.
    def compile_flag(ref: tuple[str, str]) -> CompiledFlag:
        compiled = done.get(ref)
        if compiled is not None:
            return compiled
        f = by_key[ref]
        visiting.add(ref)
        parts[ref] = [f"{f.project_id}/{f.key}#{f.id}:{f.revision}"]
        edges[ref] = set()
        prerequisites: list[CompiledPrerequisite] = []
        for i, pre in enumerate(f.prerequisites):
            target: CompiledFlag | None = None
            pre_ref = (f.project_id, pre.flag)
            if pre_ref in visiting:
                c.error(
                    f.project_id,
                    "flag",
                    f.key,
                    f"prerequisites[{i}]",
                    "prerequisite_cycle",
                    f"prerequisite {pre.flag!r} closes a cycle; it always fails",
                )
                parts[ref].append(f"pre:{pre.flag}:cycle")
            elif pre_ref in by_key:
                target = compile_flag(pre_ref)
                edges[ref].add(pre_ref)
            else:
                parts[ref].append(f"pre:{pre.flag}:missing")
            prerequisites.append(CompiledPrerequisite(pre.flag, target, pre.value))
        rules: list[CompiledRule] = []
        for i, rule in enumerate(f.rules):
            rid = _rule_id(rule.id, i)
            where = f"rules[{i}].condition"
            match rule:
                case ForceRule():
                    cond = c.condition(rule.condition, f.project_id, "flag", f.key, where)
                    rules.append(
                        CompiledForceRule(
                            rid,
                            cond,
                            rule.value,
                            _compile_filters(rule.filters),
                            parents(f, rule.parent_conditions, f"rules[{i}]"),
                        )
                    )
                case RolloutRule():
                    cond = c.condition(rule.condition, f.project_id, "flag", f.key, where)
                    rules.append(
                        CompiledRolloutRule(
                            rule_id=rid,
                            condition=cond,
                            value=rule.value,
                            coverage=rule.coverage,
                            # GrowthBook: ``rule.seed || featureKey``.
                            seed=rule.seed or f.key,
                            hash_version=rule.hash_version,
                            hash_attribute=rule.hash_attribute,
                            fallback_attribute=rule.fallback_attribute or None,
                            range=None if rule.range is None else (rule.range[0], rule.range[1]),
                            filters=_compile_filters(rule.filters),
                            parents=parents(f, rule.parent_conditions, f"rules[{i}]"),
                        )
                    )
                case ExperimentRule():
                    exp = experiments.get((f.project_id, rule.experiment))
                    rules.append(
                        CompiledExperimentRule(
                            rid,
                            rule.experiment,
                            exp,
                            parents(f, rule.parent_conditions, f"rules[{i}]"),
                        )
                    )
                    parts[ref].append(
                        f"exp:{rule.experiment}:missing" if exp is None else exp.fingerprint
                    )
        mark = c.segments_mark(
            f.project_id,
            *(r.condition for r in f.rules if not isinstance(r, ExperimentRule)),
            *(pc.condition for r in f.rules for pc in r.parent_conditions),
        )
        if mark:
            parts[ref].append(mark)
        compiled = CompiledFlag(
            flag=f,
            key=f.key,
            project_id=f.project_id,
            revision=f.revision,
            enabled=f.enabled,
            default_value=f.default_value,
            prerequisites=tuple(prerequisites),
            rules=tuple(rules),
            cache_key="",
        )
        visiting.discard(ref)
        done[ref] = compiled
        return compiled

    for ref in by_key:
        compile_flag(ref)

    for ref in sorted(done):
        # The cache key names the flag's own parts and those of every flag it reaches,
        # so a change anywhere along its prerequisites or parents misses the cache.
        reached: set[tuple[str, str]] = set()
        stack = list(edges[ref])
        while stack:
            other = stack.pop()
            if other != ref and other not in reached:
                reached.add(other)
                stack.extend(edges[other])
        key = "|".join(parts[ref])
        for other in sorted(reached):
            key += "|dep:(" + "|".join(parts[other]) + ")"
        # Compiled objects are frozen, and rules and prerequisites hold them by
        # reference: the key is set in place rather than by copying the flag.
        object.__setattr__(done[ref], "cache_key", key)
        per_project[ref[0]][ref[1]] = done[ref]
    return per_project


def compile_snapshot(state: ConfigSource, version: int, compiler: ConditionCompiler) -> Snapshot:
    """Compile ``state`` into snapshot number ``version``.

    ``compiler`` carries the operator table (GrowthBook's plus plugins') and caches
    compiled conditions by content; reusing one across snapshots makes recompiling after
    a small change cheap. Never raises for a bad rule: see ``Snapshot.errors``.
    """
    segments: Sequence[Segment] = getattr(state, "segments", ())
    c = _Compiler(compiler, segments)
    experiments = _compile_experiments(c, state.experiments)
    per_project = _compile_flags(c, state.flags, experiments)

    return Snapshot(
        version=version,
        projects=_frozen((p.id, p) for p in state.projects),
        project_ids=_frozen((p.key, p.id) for p in state.projects),
        flags=_frozen(((f.project_id, f.key), f) for f in state.flags),
        experiments=_frozen(((e.project_id, e.key), e) for e in state.experiments),
        layers=_frozen(((x.project_id, x.key), x) for x in state.layers),
        metrics=_frozen(((m.project_id, m.key), m) for m in state.metrics),
        segments=_frozen(((x.project_id, x.key), x) for x in segments),
        project_flags=_frozen((pid, MappingProxyType(fs)) for pid, fs in per_project.items()),
        compiled_experiments=MappingProxyType(experiments),
        errors=tuple(c.errors),
        sticky_projects=frozenset(e.project_id for e in state.experiments if e.sticky_bucketing),
    )


@dataclass(frozen=True, slots=True)
class _State:
    projects: Sequence[Project]
    flags: Sequence[Flag]
    experiments: Sequence[Experiment]
    layers: Sequence[Layer]
    metrics: Sequence[Metric]


def index_snapshot(
    version: int,
    projects: list[Project],
    flags: list[Flag],
    experiments: list[Experiment],
    layers: list[Layer],
    metrics: list[Metric],
    *,
    compiler: ConditionCompiler | None = None,
) -> Snapshot:
    """Compatibility wrapper over ``compile_snapshot`` for callers with five lists.

    Without a ``compiler`` no operators are known, so any condition using one compiles as
    never matching (and is listed in ``errors``); the runtime passes its own compiler.
    """
    return compile_snapshot(
        _State(projects, flags, experiments, layers, metrics),
        version,
        compiler if compiler is not None else ConditionCompiler({}),
    )
