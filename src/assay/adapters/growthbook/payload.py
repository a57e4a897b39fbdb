"""The GrowthBook SDK payload of a project: what ``GET /api/features/{clientKey}`` serves.

``sdk_payload(engine, project)`` turns one project of the engine's compiled snapshot into
GrowthBook's ``features`` (and ``savedGroups``), built once per snapshot version and
project. A GrowthBook SDK (any language) evaluating a feature of the payload locally gets
what ``engine.decide`` answers for the same subject: the value, whether the subject is in
an experiment, the experiment's key and the variant's key (``meta[i].key``).

The rule it keeps: **nothing is sent as if it were exact when it is not.** A flag the
format cannot express exactly is left out of ``features`` and named in
``SdkPayload.remote_only`` with a stable reason code (``REMOTE_ONLY_REASONS``; the SDK
connection answers those flags by remote evaluation). A flag that reads a remote-only flag
(a prerequisite or a rule's parent) is remote-only too, with ``dependency_remote_only``.

How each part of assay's model is written (the reference is GrowthBook's SDKs):

- A flag that is off, or whose prerequisites fail for everyone (a missing or disabled
  prerequisite flag): ``{"defaultValue": default}`` with no rules.
- Flag prerequisites (``prerequisite_failed`` ends the flag with its default): a first
  ``force`` rule per prerequisite, applying when the prerequisite's value is not the
  expected one (``parentConditions`` on ``{"value": {"$not": {"$eq": v}}}``), preceded by
  the prerequisite's own prerequisites, so a prerequisite failing its own also fails this
  flag. With a null default, a ``gate`` instead (GrowthBook's SDKs skip ``force: null``).
- ``force`` rules: ``condition``, ``filters``, ``parentConditions``, ``force``.
- ``rollout`` rules: a ``force`` rule with ``coverage`` or ``range``, ``hashAttribute``,
  ``seed`` and ``hashVersion``; with a fallback attribute, a second such rule hashing the
  fallback for subjects without a hash value (the SDKs differ on ``fallbackAttribute``).
  assay includes hash ``n <= coverage``, GrowthBook ``n < coverage``: hashes are
  multiples of 1/1000 (v1) or 1/10000 (v2), so the coverage written is the midpoint after
  the last hash assay includes.
- ``experiment`` rules of a running experiment: ``key``, ``variations``, the bucket
  ``ranges`` assay computed (so weights and coverage bucket bit for bit), ``seed``,
  ``hashVersion``, ``hashAttribute``, ``condition``, ``namespace`` (the layer), ``filters``
  (with a namespace beside filters written as the filter it is, since GrowthBook ignores a
  namespace when there are filters), ``meta`` (variant keys, names, ``passthrough``),
  ``name``, and either ``bucketVersion``/``minBucketVersion``/``fallbackAttribute``
  (sticky bucketing) or ``disableStickyBucketing`` (then a fallback attribute is a second
  rule, as for rollouts). Sticky experiments are exact for an
  SDK that has a sticky bucket service holding the same assignments.
- Forced variations: ``force`` rules before the experiment, matching the listed values
  by JSON type (``$type`` with ``$in``); the SDK reports a forced value, not an
  experiment, as assay does (``forced_variation`` is not an enrolment).
- A holdout: an experiment rule before the experiment, with the holdout's key, hashing and
  buckets, serving the flag's default to the held-out variant and passing every other
  variant through (GrowthBook's own holdout form); ``condition`` is the experiment's and
  the holdout's together (and "has the experiment's hash value" when they hash different
  attributes), since assay asks the holdout only of subjects the experiment targets.
- A rolled-back experiment: a ``force`` rule with its control value. A draft, paused or
  completed experiment, a missing one, or one with fewer than two variants, assigns no
  one: the rule is left out, or kept as ``parentConditions`` alone when it has any (a gate
  still ends the flag).
- Segments: ``savedGroups`` (``{"type": "list", "attributeKey", "values"}`` or ``{"type":
  "condition", "condition"}``), the very shape assay's condition compiler reads, for the
  segments the written features refer to. Conditions keep their references.

Reason codes (``remote_only``):

- ``plugin_operator``: a condition (or a segment it uses) has an operator GrowthBook's
  SDKs do not have (a plugin's).
- ``participation_limit``: an experiment's participation limit can exclude subjects
  (other running experiments precede it); the SDK cannot count a subject's experiments.
- ``fallback_attribute``: a rollout or an experiment without sticky bucketing hashes with
  a fallback attribute, and its hash attribute's name has a dot. (A fallback is written as
  a second rule hashing the fallback for subjects without a hash value, since the SDKs
  use an experiment's fallback only with sticky bucketing, and JavaScript's a rollout's
  too; "has no hash value" is a condition, which would read the dotted name as a path.)
- ``holdout``: a holdout the format cannot place exactly: the experiment is sticky (its
  stored assignments come before the holdout), or the holdout hashes with a fallback
  attribute.
- ``forced_passthrough``: a forced variation names a passthrough variant (assay then skips
  the experiment for that subject and goes on; a ``force`` rule cannot go on).
- ``namespace_with_filters``: a sticky experiment with both a layer and filters (written as
  a filter, the layer would be checked before the stored assignment; assay checks it
  after).
- ``sticky_passthrough``: a sticky experiment has a passthrough variant (the SDKs store a
  passthrough assignment, assay stores only the assignment that decided the flag).
- ``sticky_condition``: a sticky experiment has a targeting condition. GrowthBook's
  JavaScript SDK, and decide with it (DESIGN: a subject keeps its variant when targeting
  changes), skip the condition once the hash value has a stored assignment; its Python SDK
  checks it first, so no payload is exact for both.
- ``sticky_parent``: a prerequisite or parent flag runs a sticky experiment (the SDKs
  store the assignment a parent's evaluation makes, decide stores only the decided flag's,
  so after a change the two could read the parent differently).
- ``forced_attribute_path``: a forced variation's attribute has a dot (a condition would
  read it as a path into the attributes).
- ``null_value``: a ``force``, rollout, rolled-back or forced-variation value is null
  (GrowthBook's SDKs skip ``force: null`` and go on to the next rule).
- ``prerequisite_value``: a flag prerequisite expects null, an array or an object (the
  SDKs compare those loosely, or never equal).
- ``prerequisite_cycle``: a flag prerequisite reaches a cycle of parent conditions
  (decide fails the prerequisite, the SDK ends the flag as cyclic).
- ``compile_error``: a condition of the flag, or of an experiment it uses, did not
  compile into the snapshot (decide treats it as never matching).
- ``dependency_remote_only``: a prerequisite or parent flag is remote-only.

Pure apart from the cache in ``sdk_payload``: ``build_payload`` reads only a snapshot.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from assay.engine._core._segments import saved_groups, segment_references
from assay.engine._core._snapshot import (
    CompiledExperiment,
    CompiledExperimentRule,
    CompiledFilter,
    CompiledFlag,
    CompiledRolloutRule,
    Snapshot,
)
from assay.engine._errors import NotFound
from assay.engine._model import ExperimentRule, ForceRule, ParentCondition, RolloutRule

if TYPE_CHECKING:
    from assay.engine import Engine

__all__ = [
    "REMOTE_ONLY_REASONS",
    "SdkPayload",
    "build_payload",
    "payload_document",
    "sdk_payload",
]

REMOTE_ONLY_REASONS: dict[str, str] = {
    "plugin_operator": "A condition uses an operator GrowthBook's SDKs do not have.",
    "participation_limit": "An experiment's participation limit can exclude subjects.",
    "fallback_attribute": "A rollout or a non-sticky experiment hashes with a fallback "
    "attribute, and its hash attribute's name has a dot.",
    "holdout": "A holdout the payload cannot place exactly (a sticky experiment, or a "
    "holdout with a fallback attribute).",
    "forced_passthrough": "A forced variation names a passthrough variant.",
    "namespace_with_filters": "A sticky experiment with a layer and filters.",
    "sticky_passthrough": "A sticky experiment has a passthrough variant.",
    "sticky_parent": "A prerequisite or parent flag runs a sticky experiment.",
    "sticky_condition": "A sticky experiment has a targeting condition, which GrowthBook's "
    "SDKs read differently once a subject has a stored assignment.",
    "forced_attribute_path": "A forced variation's attribute name has a dot.",
    "null_value": "A forced, rollout, rolled-back or forced-variation value is null, which "
    "the SDKs skip.",
    "prerequisite_value": "A flag prerequisite expects null, an array or an object.",
    "prerequisite_cycle": "A flag prerequisite reaches a cycle of parent conditions.",
    "compile_error": "A condition did not compile into the snapshot.",
    "dependency_remote_only": "A prerequisite or parent flag is remote-only.",
}
"""Why a flag is left out of the payload, by stable code (also in docs/growthbook.md)."""

# Every operator GrowthBook's SDKs evaluate; anything else came from a plugin.
_SDK_OPERATORS = frozenset(
    {
        "$and", "$or", "$nor", "$not", "$eq", "$ne", "$gt", "$gte", "$lt", "$lte",
        "$in", "$nin", "$ini", "$nini", "$all", "$alli", "$size", "$elemMatch",
        "$exists", "$type", "$regex", "$regexi", "$notRegex", "$notRegexi",
        "$veq", "$vne", "$vgt", "$vgte", "$vlt", "$vlte",
        "$inGroup", "$notInGroup", "$savedGroup",
    }
)  # fmt: skip


class SdkPayload(msgspec.Struct, frozen=True):
    """One project's GrowthBook SDK payload, built from snapshot ``version``."""

    version: int
    """The engine snapshot version it was built from."""
    features: dict[str, Any]
    """GrowthBook feature definitions, by flag key (remote-only flags are not here)."""
    saved_groups: dict[str, Any]
    """GrowthBook ``savedGroups``: the segments the features refer to, by key."""
    remote_only: dict[str, str]
    """Flag key -> reason code (``REMOTE_ONLY_REASONS``), for flags the payload cannot
    express exactly: they are answered by remote evaluation.

    A payload is shared by every caller of ``sdk_payload``: read it, never change it."""
    date_updated: str
    """ISO timestamp (GrowthBook's form, milliseconds and ``Z``) of the project's latest
    configuration change; SDKs compare it to tell a new payload from theirs, so
    ``sdk_payload`` moves it whenever the content changes."""


def payload_document(p: SdkPayload) -> dict[str, Any]:
    """The JSON body GrowthBook SDKs expect from ``GET /api/features/{clientKey}``."""
    return {
        "status": 200,
        "features": p.features,
        "experiments": [],
        "dateUpdated": p.date_updated,
        "savedGroups": p.saved_groups,
    }


class _Cache:
    __slots__ = ("latest", "payloads", "version")

    def __init__(self) -> None:
        self.version = -1
        self.payloads: dict[str, SdkPayload] = {}
        """This snapshot version's payloads, by project key."""
        self.latest: dict[str, SdkPayload] = {}
        """The latest payload built for each project, whatever its version."""


# Per engine: the payloads of its snapshot in force, by project key. Weak, so a closed
# engine takes its payloads with it; only the latest snapshot's are kept.
_CACHES: weakref.WeakKeyDictionary[Engine, _Cache] = weakref.WeakKeyDictionary()


def sdk_payload(engine: Engine, project: str) -> SdkPayload:
    """The payload of ``project`` (a key) from the engine's snapshot in force; built once
    per (snapshot version, project). Raises ``NotFound`` (``project_not_found``).

    ``date_updated`` is what SDKs compare to tell a new payload from the one they hold:
    it moves whenever the content does. It is the project's latest change, which a
    deletion does not move; then it is moved a millisecond past the previous payload's."""
    snapshot = engine.snapshot
    cache = _CACHES.get(engine)
    if cache is None:
        cache = _CACHES[engine] = _Cache()
    if cache.version != snapshot.version:
        cache.version = snapshot.version
        cache.payloads = {}
    payload = cache.payloads.get(project)
    if payload is None:
        payload = build_payload(snapshot, project)
        before = cache.latest.get(project)
        if before is not None:
            payload = _dated_after(payload, before)
        cache.payloads[project] = cache.latest[project] = payload
    return payload


def _dated_after(payload: SdkPayload, before: SdkPayload) -> SdkPayload:
    same = (
        payload.features == before.features
        and payload.saved_groups == before.saved_groups
        and payload.remote_only == before.remote_only
    )
    if same:
        return msgspec.structs.replace(before, version=payload.version)
    if payload.date_updated > before.date_updated:
        return payload
    later = datetime.strptime(before.date_updated, _DATE).replace(tzinfo=UTC)
    return msgspec.structs.replace(payload, date_updated=_date(later + timedelta(milliseconds=1)))


def build_payload(snapshot: Snapshot, project: str) -> SdkPayload:
    """The payload of ``project`` (a key) from ``snapshot``, uncached."""
    project_id = snapshot.project_ids.get(project)
    if project_id is None:
        raise NotFound(f"project {project!r} not found", code="project_not_found")
    return _Exporter(snapshot, project_id).run()


# --------------------------------------------------------------------------------------


class _Remote(Exception):
    """The flag cannot be written exactly; ``args[0]`` is the reason code."""

    @property
    def code(self) -> str:
        return str(self.args[0])


def _operators(value: Any) -> Iterator[str]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            if isinstance(k, str) and k.startswith("$"):
                yield k
            yield from _operators(v)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _operators(item)


def _gb_condition(condition: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not condition:
        return None
    if any(op not in _SDK_OPERATORS for op in _operators(condition)):
        raise _Remote("plugin_operator")
    return dict(condition)


def _filters(filters: Sequence[CompiledFilter]) -> list[dict[str, Any]]:
    return [
        {
            "attribute": f.attribute,
            "seed": f.seed,
            "hashVersion": f.hash_version,
            "ranges": [[a, b] for a, b in f.ranges],
        }
        for f in filters
    ]


def _parents(parents: Sequence[ParentCondition]) -> list[dict[str, Any]]:
    out = []
    for p in parents:
        pc: dict[str, Any] = {"id": p.flag, "condition": _gb_condition(p.condition) or {}}
        if p.gate:
            pc["gate"] = True
        out.append(pc)
    return out


def _rollout_coverage(coverage: float, hash_version: int) -> float:
    """GrowthBook's coverage (``n < c``) including exactly the hashes assay's (``n <=
    coverage``) includes: half a step above the last one included."""
    if coverage <= 0:
        return 0.0  # assay includes no one, not even hash 0
    if coverage >= 1:
        return 1.0
    steps = 1000 if hash_version == 1 else 10000
    k = math.floor(coverage * steps)
    # Correct the multiplication's rounding: k / steps is the last hash <= coverage.
    while k / steps > coverage:
        k -= 1
    while (k + 1) / steps <= coverage:
        k += 1
    return min(1.0, (k + 0.5) / steps)


def _hash_value_tests(attribute: str) -> list[dict[str, Any]]:
    """Conditions true when ``attribute`` is a hash value (the SDKs' ``isHashable``: a
    non-empty string, or a non-zero number; JSON has no NaN or infinity)."""
    if "." in attribute:
        # A condition reads "a.b" as a path, hashing reads the attribute named "a.b".
        raise _Remote("fallback_attribute")
    return [{attribute: {"$type": "string", "$ne": ""}}, {attribute: {"$type": "number", "$ne": 0}}]


def _missing(attribute: str) -> dict[str, Any]:
    return {"$nor": _hash_value_tests(attribute)}


def _all_of(*conditions: Mapping[str, Any] | None) -> dict[str, Any] | None:
    parts = [dict(c) for c in conditions if c]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}


def _derived_id(base: dict[str, Any], suffix: str) -> dict[str, Any]:
    """The id of a rule written for a part of ``base`` (still a valid assay key)."""
    return {"id": f"{base['id'][: 127 - len(suffix)]}.{suffix}"} if "id" in base else {}


def _force(value: Any) -> Any:
    if value is None:
        raise _Remote("null_value")
    return value


def _timestamp(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


_DATE = "%Y-%m-%dT%H:%M:%S.%fZ"


def _date(value: datetime) -> str:
    """GrowthBook's form of a time: UTC, milliseconds, ``Z``."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class _Exporter:
    def __init__(self, snapshot: Snapshot, project_id: str) -> None:
        self.snapshot = snapshot
        self.project_id = project_id
        self.flags: Mapping[str, CompiledFlag] = snapshot.project_flags.get(project_id, {})
        self.broken_flags: set[str] = set()
        self.broken_experiments: set[str] = set()
        for err in snapshot.errors:
            if err.project_id != project_id or err.code in (
                "invalid_holdout",
                "prerequisite_cycle",
            ):
                continue  # both decided as the payload writes them
            (self.broken_flags if err.kind == "flag" else self.broken_experiments).add(err.key)
        self.near_cycle = self._reaching_cycles()
        self.groups: dict[str, Any] = {}

    def run(self) -> SdkPayload:
        segments = [s for (pid, _), s in self.snapshot.segments.items() if pid == self.project_id]
        self.groups = saved_groups(segments)
        features: dict[str, dict[str, Any]] = {}
        remote: dict[str, str] = {}
        depends: dict[str, set[str]] = {}
        uses: dict[str, set[str]] = {}
        for key, cf in self.flags.items():
            try:
                feature = self._feature(cf)
                uses[key] = self._groups_used(feature)
            except _Remote as exc:
                remote[key] = exc.code
                continue
            features[key] = feature
            depends[key] = {
                pc["id"]
                for rule in feature.get("rules", ())
                for pc in rule.get("parentConditions", ())
            }
        # The SDKs store a sticky assignment made while deciding a parent; decide stores only
        # the decided flag's, so a flag reading a sticky flag could drift from the SDK's.
        sticky = {
            key
            for key, feature in features.items()
            if any("bucketVersion" in rule for rule in feature.get("rules", ()))
        }
        for key in list(features):
            if depends[key] & sticky:
                del features[key]
                remote[key] = "sticky_parent"
        changed = True
        while changed:
            changed = False
            for key in list(features):
                if any(d in remote for d in depends[key]):
                    del features[key]
                    remote[key] = "dependency_remote_only"
                    changed = True
        used = sorted({g for key in features for g in uses[key]})
        return SdkPayload(
            version=self.snapshot.version,
            features=features,
            saved_groups={g: self.groups[g] for g in used},
            remote_only=dict(sorted(remote.items())),
            date_updated=self._date_updated(),
        )

    # -- flags ------------------------------------------------------------------------

    def _feature(self, cf: CompiledFlag) -> dict[str, Any]:
        if cf.key in self.broken_flags:
            raise _Remote("compile_error")
        feature: dict[str, Any] = {"defaultValue": cf.default_value}
        if not cf.enabled:
            return feature
        checks = self._prerequisite_checks(cf)
        if checks is None:
            return feature  # fails its prerequisites for everyone
        rules: list[dict[str, Any]] = []
        for parent, expected in checks:
            if expected is None or isinstance(expected, (list, dict)):
                raise _Remote("prerequisite_value")
            if parent in self.near_cycle:
                raise _Remote("prerequisite_cycle")
            if cf.default_value is None:
                # The SDKs skip ``force: null``; a gate ends the flag with null instead.
                pc = {"id": parent, "condition": {"value": {"$eq": expected}}, "gate": True}
                rules.append({"parentConditions": [pc]})
            else:
                pc = {"id": parent, "condition": {"value": {"$not": {"$eq": expected}}}}
                rules.append({"parentConditions": [pc], "force": cf.default_value})
        for rule, compiled in zip(cf.flag.rules, cf.rules, strict=True):
            rules.extend(self._rule(cf, rule, compiled))
        if rules:
            feature["rules"] = rules
        return feature

    def _prerequisite_checks(self, cf: CompiledFlag) -> list[tuple[str, Any]] | None:
        """The (flag, expected value) pairs that must all hold, a prerequisite's own first;
        None when they fail for everyone. Prerequisites form no cycle once compiled (one
        closing a cycle has no target), so the recursion ends."""
        checks: list[tuple[str, Any]] = []
        for pre in cf.prerequisites:
            target = pre.flag
            if target is None or not target.enabled:
                return None
            inner = self._prerequisite_checks(target)
            if inner is None:
                return None
            checks.extend(inner)
            checks.append((target.key, pre.value))
        return checks

    def _rule(self, cf: CompiledFlag, rule: Any, compiled: Any) -> list[dict[str, Any]]:
        parents = _parents(rule.parent_conditions)
        # The rule's own id only: the SDKs report it as the result's ``ruleId``.
        base: dict[str, Any] = {} if rule.id is None else {"id": rule.id}
        if parents:
            base["parentConditions"] = parents
        if isinstance(rule, ForceRule):
            out = dict(base)
            if (condition := _gb_condition(rule.condition)) is not None:
                out["condition"] = condition
            if rule.filters:
                out["filters"] = _filters(compiled.filters)
            out["force"] = _force(rule.value)
            return [out]
        if isinstance(rule, RolloutRule):
            assert isinstance(compiled, CompiledRolloutRule)
            return self._rollout(base, rule, compiled)
        assert isinstance(rule, ExperimentRule)
        assert isinstance(compiled, CompiledExperimentRule)
        e = compiled.experiment
        skipped = [base] if parents else []  # parents alone: a gate still ends the flag
        if e is None:
            return skipped
        if e.key in self.broken_experiments:
            raise _Remote("compile_error")
        if e.rolled_back:
            return [{**base, "force": _force(e.control_value)}] if e.variant_keys else skipped
        if not e.running:
            return skipped
        return self._running(cf, base, e, skipped)

    def _rollout(
        self, base: dict[str, Any], rule: RolloutRule, compiled: CompiledRolloutRule
    ) -> list[dict[str, Any]]:
        out = dict(base)
        if (condition := _gb_condition(rule.condition)) is not None:
            out["condition"] = condition
        if rule.filters:
            out["filters"] = _filters(compiled.filters)
        out["force"] = _force(rule.value)
        if compiled.range is not None:
            out["range"] = [compiled.range[0], compiled.range[1]]
        else:
            out["coverage"] = _rollout_coverage(compiled.coverage, compiled.hash_version)
        out["hashAttribute"] = compiled.hash_attribute
        out["seed"] = compiled.seed
        out["hashVersion"] = compiled.hash_version
        fallback = compiled.fallback_attribute
        if fallback is None or fallback == compiled.hash_attribute:
            return [out]
        # The SDKs disagree on a rollout's fallbackAttribute (Python's always uses it,
        # JavaScript's only with sticky bucketing): a second rule hashes the fallback for
        # subjects without a hash value, which every SDK reads alike.
        second = {**out, **_derived_id(base, "fallback"), "hashAttribute": fallback}
        second["condition"] = _all_of(out.get("condition"), _missing(compiled.hash_attribute))
        return [out, second]

    def _running(
        self,
        cf: CompiledFlag,
        base: dict[str, Any],
        e: CompiledExperiment,
        skipped: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        if e.participation_limit is not None and e.prior:
            raise _Remote("participation_limit")
        if e.sticky and any(e.passthrough):
            raise _Remote("sticky_passthrough")
        if e.sticky and e.experiment.condition is not None:
            raise _Remote("sticky_condition")
        for prior in e.prior:
            if prior.key in self.broken_experiments:
                raise _Remote("compile_error")
        rules = self._forced(base, e)
        if e.holdout is not None:
            rules.extend(self._holdout(cf, base, e, e.holdout))
        if not e.assignable:
            return rules + skipped
        condition = e.experiment.condition
        rule = {**base, **self._experiment(e, condition)}
        fallback = e.fallback_attribute
        if e.sticky:
            rule["bucketVersion"] = e.experiment.bucket_version
            rule["minBucketVersion"] = e.experiment.min_bucket_version
            if fallback is not None:
                rule["fallbackAttribute"] = fallback
            return [*rules, rule]
        rule["disableStickyBucketing"] = True
        rules.append(rule)
        if fallback is not None and fallback != e.hash_attribute:
            # The SDKs use an experiment's fallback only with sticky bucketing; assay
            # always: a second rule hashes the fallback for subjects without a hash value.
            second = self._experiment(
                e, _all_of(condition, _missing(e.hash_attribute)), hash_attribute=fallback
            )
            rules.append(
                {**base, **_derived_id(base, "fallback"), **second, "disableStickyBucketing": True}
            )
        return rules

    def _experiment(
        self, e: CompiledExperiment, condition: Any, hash_attribute: str | None = None
    ) -> dict[str, Any]:
        """The fields every experiment rule has: hashing, buckets, targeting, meta."""
        attribute = e.hash_attribute if hash_attribute is None else hash_attribute
        out: dict[str, Any] = {"key": e.key}
        if e.experiment.name:
            out["name"] = e.experiment.name
        if (gb := _gb_condition(condition)) is not None:
            out["condition"] = gb
        out["variations"] = list(e.variant_values)
        out["ranges"] = [[a, b] for a, b in e.ranges]
        out["seed"] = e.seed
        out["hashVersion"] = e.hash_version
        out["hashAttribute"] = attribute
        filters = _filters(e.filters)
        if e.namespace is not None:
            layer, start, end = e.namespace
            if not filters:
                out["namespace"] = [layer, start, end]
            elif e.sticky:
                # assay checks the layer after a sticky assignment, filters before it.
                raise _Remote("namespace_with_filters")
            else:
                # GrowthBook ignores a namespace beside filters: the same test as a filter
                # (its inNamespace hashes v1 with seed "__" + the namespace id).
                filters.append(
                    {
                        "attribute": attribute,
                        "seed": "__" + layer,
                        "hashVersion": 1,
                        "ranges": [[start, end]],
                    }
                )
        if filters:
            out["filters"] = filters
        names = {v.key: v.name for v in e.experiment.variants}
        meta = []
        for key, passthrough in zip(e.variant_keys, e.passthrough, strict=True):
            m: dict[str, Any] = {"key": key}
            if names.get(key):
                m["name"] = names[key]
            if passthrough:
                m["passthrough"] = True
            meta.append(m)
        out["meta"] = meta
        return out

    def _forced(self, base: dict[str, Any], e: CompiledExperiment) -> list[dict[str, Any]]:
        """Forced variations as ``force`` rules, in assay's order (attribute by attribute,
        the first listing a value wins); values are matched with their JSON type."""
        rules: list[dict[str, Any]] = []
        for attribute, table in e.forced:
            if "." in attribute:
                # A condition reads "a.b" as a path; assay's forced variations as a name.
                raise _Remote("forced_attribute_path")
            by_variant: dict[int, dict[str, list[Any]]] = {}
            for (kind, value), index in table.items():
                group = ("string", "boolean", "number")[kind]
                by_variant.setdefault(index, {}).setdefault(group, []).append(value)
            for index, groups in sorted(by_variant.items()):
                if e.passthrough[index]:
                    raise _Remote("forced_passthrough")
                tests = [{attribute: {"$type": t, "$in": vs}} for t, vs in groups.items()]
                rules.append(
                    {
                        **base,
                        **_derived_id(base, f"forced-{e.variant_keys[index]}"),
                        "condition": tests[0] if len(tests) == 1 else {"$or": tests},
                        "force": _force(e.variant_values[index]),
                    }
                )
        return rules

    def _holdout(
        self, cf: CompiledFlag, base: dict[str, Any], e: CompiledExperiment, h: CompiledExperiment
    ) -> list[dict[str, Any]]:
        """The holdout as GrowthBook writes one: its first variant serves the flag's
        default, the others pass through to the experiment."""
        if e.sticky or h.fallback_attribute is not None:
            raise _Remote("holdout")
        if h.key in self.broken_experiments:
            raise _Remote("compile_error")
        if not h.assignable:
            return []  # never holds anyone out
        # assay asks the holdout only of subjects the experiment targets and can hash.
        hashable: dict[str, Any] | None = None
        if h.hash_attribute != e.hash_attribute or e.fallback_attribute is not None:
            try:
                tests = _hash_value_tests(e.hash_attribute)
                if e.fallback_attribute is not None:
                    tests += _hash_value_tests(e.fallback_attribute)
            except _Remote:
                raise _Remote("holdout") from None
            hashable = {"$or": tests}
        condition = _all_of(e.experiment.condition, h.experiment.condition, hashable)
        rule = {**base, **_derived_id(base, "holdout"), **self._experiment(h, condition)}
        rule["variations"] = [cf.default_value, *h.variant_values[1:]]
        for m in rule["meta"][1:]:
            m["passthrough"] = True
        rule["meta"][0].pop("passthrough", None)
        rule["disableStickyBucketing"] = True
        return [rule]

    # -- the graph of flags -------------------------------------------------------------

    def _reaching_cycles(self) -> set[str]:
        """Flags from which decide can reach a cycle through prerequisites and parents."""
        edges: dict[str, set[str]] = {}
        for key, cf in self.flags.items():
            out = {p.flag.key for p in cf.prerequisites if p.flag is not None}
            for rule in cf.rules:
                out.update(p.flag_key for p in rule.parents if p.flag_key in self.flags)
            edges[key] = out
        # Peel off flags that reach no cycle (those whose every edge leads to a flag
        # already peeled, sinks first); what is left reaches a cycle.
        readers: dict[str, set[str]] = {key: set() for key in edges}
        for key, out in edges.items():
            for other in out:
                readers[other].add(key)
        pending = {key: len(out) for key, out in edges.items()}
        ready = [key for key, n in pending.items() if n == 0]
        while ready:
            done = ready.pop()
            del pending[done]
            for reader in readers[done]:
                pending[reader] -= 1
                if pending[reader] == 0:
                    ready.append(reader)
        return set(pending)

    # -- segments and dates -----------------------------------------------------------

    def _groups_used(self, feature: dict[str, Any]) -> set[str]:
        """The saved groups ``feature`` refers to, transitively through condition groups;
        raises ``_Remote`` when one has an operator the SDKs do not have."""
        refs = [k for _, k in segment_references(feature.get("rules", []))]
        used: set[str] = set()
        while refs:
            ref = refs.pop()
            if ref in used or ref not in self.groups:
                continue
            used.add(ref)
            group = self.groups[ref]
            if group.get("type") == "condition":
                _gb_condition(group["condition"])
                refs.extend(k for _, k in segment_references(group["condition"]))
        return used

    def _date_updated(self) -> str:
        s = self.snapshot
        pid = self.project_id
        stamps = [s.projects[pid].updated_at]
        for mapping in (s.flags, s.experiments, s.layers, s.segments):
            stamps.extend(x.updated_at for (p, _), x in mapping.items() if p == pid)
        return _date(max(stamps, key=_timestamp))
