"""Decide: the value of one flag for one subject, from a compiled snapshot.

``decide`` is synchronous and pure: no I/O, no ``await``, no plugin dispatch. It reads only
the snapshot (frozen) and its arguments, so any number of decisions can run against one
snapshot while the next one is being compiled.

Order of evaluation (DESIGN, "Decide"):

1. The flag (unknown project or flag: ``flag_not_found``, value None).
2. Kill switch (``enabled`` false: ``flag_off``, default value).
3. Prerequisites: each prerequisite flag is decided for the same subject; it must not be
   off, unknown or itself gated by a failing prerequisite, and its value must equal the
   expected one (JSON equality), else ``prerequisite_failed`` with the default value.
4. Rules in order, the first that applies wins. A rule's parent conditions come first
   (GrowthBook's ``evalPrereqs``): each parent flag is decided in full for the subject (a
   missing one reads null) and its value tested as ``{"value": v}``; a failure skips the
   rule, or with ``gate`` ends the flag with no value (``prerequisite_gate``). A parent
   already being decided along the current path is a cycle, which ends every flag on the
   path with no value (``prerequisite_cycle``), as GrowthBook ends it. Then:

   - ``force``: the condition holds and the subject passes the filters -> ``forced``.
   - ``rollout``: the condition holds, the filters pass, and the subject hashes inside
     ``range`` (``start <= n < end``) or, without one, inside the coverage ->
     ``rollout``. GrowthBook's ``isIncludedInRollout``: coverage 0 excludes everyone,
     otherwise ``hash(seed or flag key, hash value, hash version) <= coverage``, where
     the hash value is the ``hash_attribute`` (else the ``fallback_attribute``); a
     subject with neither skips the rule.
   - ``experiment``: the referenced experiment must exist (``no_active_experiment``). A
     rolled-back experiment serves its first (control) variant's value to everyone with
     ``rolled_back`` and assigns no one. Otherwise it must be running
     (``experiment_not_running``); a subject listed in its forced variations gets that
     variant (``forced_variation``, not enrolled); the subject must have a hash value and
     pass the condition (``targeting_mismatch``); then the holdout, the participation
     limit (``participation_limit``), the layer and the filters (``layer_conflict``), at
     least two variants (``no_variants``), and the bucket from the explicit ranges, else
     from coverage and weights (``outside_traffic_allocation``) decide; else
     ``experiment_assigned``. A passthrough variant enrols the subject but lets the next
     rule decide (``passthrough``). A sticky experiment reads the subject's stored
     assignment before the condition (see "Sticky bucketing" below).

   An experiment rule that does not assign lets evaluation go on with the next rule; the
   final decision then carries the first such reason in ``experiment_reason`` (and that
   experiment's key in ``experiment`` unless a later experiment assigned).
5. No rule applies: ``default``.

Assignment is GrowthBook's ``runExperiment`` for an experiment with the same key,
variations, weights, coverage, seed, hashVersion, hashAttribute, condition and namespace:
fewer than two variations assign no one, a missing or empty hash value (GrowthBook's
``isHashable``: a non-empty string, or a finite non-zero number written as JavaScript
writes it) assigns no one, the namespace is checked with the hash value, and the variant is
``chooseVariation(hash(seed, value, version), getBucketRanges(n, coverage, weights))``.
One deliberate extension: the fallback attribute applies whenever the hash attribute is
missing, where GrowthBook only honours it with sticky bucketing enabled, unless the
experiment says ``fallback_sticky_only`` (the GrowthBook import does): then the fallback
counts only when the experiment has ``sticky_bucketing``, as in GrowthBook.

**Holdouts.** When an experiment names a running holdout experiment (``is_holdout``) and
the subject, having passed the experiment's own targeting, is assigned by the holdout
(its own hash attribute, condition, layer, coverage and weights) to the holdout's first
variant, the subject is held out: the decision is the holdout's assignment, serving the
flag's default value with ``experiment_assigned``, the holdout's key and its first
variant's key, so the held-out group is tracked as GrowthBook tracks it. Holdouts do not
nest.

**Sticky bucketing.** An experiment with ``sticky_bucketing`` reads the subject's sticky
documents (``sticky``, see ``_core._sticky``) once a forced variation did not apply, the
subject has a hash value and the filters passed (the rule's parent conditions came first),
in the order of GrowthBook's JavaScript SDK: an assignment stored under
``<key>__<bucket_version>`` to one of its variants decides at once (``sticky_bucket``; a
passthrough variant still lets the next rule decide), skipping the targeting condition
(DESIGN: the subject keeps its variant even when targeting changes), the holdout, the
participation limit, the layer and the coverage. Without one, the condition applies; then
an assignment under a version below ``min_bucket_version`` keeps the subject out
(``sticky_bucket_blocked``). Otherwise the subject is assigned as usual, and the decision
carries in ``sticky_bucket`` the assignment to store. This is GrowthBook's sticky
bucketing, including its use of the fallback attribute's document.

**Two paths.** ``decide_python`` below is the reference; ``decide`` is the compiled path
(``_native.c``, over the plans of ``_plans.py``) where the install built it, else that
same function. The compiled path answers exactly as the Python one and hands it whatever
it does not handle; see docs/design.md ("The compiled decide path").

**Participation limit** ("how many concurrent running experiments one subject may be
in"), made deterministic and stateless so every process agrees without shared state: the
project's running, non-holdout experiments are ordered by (``started_at``, key). A subject
*participates* in an experiment when it has a hash value for it and passes its targeting
condition, its layer and its coverage (lands in some variant's bucket); an experiment's
own participation limit does not enter that test, which keeps it one pass and errs on the
side of excluding. An experiment with limit L assigns a subject only if the subject
participates in fewer than L of the experiments ordered before it (experiments without a
limit count too), else ``participation_limit``. Because actual enrolments are a subset of
participations, a subject enrolled in an experiment with limit L is in at most L-1 earlier
ones. Everything except the subject-dependent checks (the ordering, each predecessor's
compiled rules) is precomputed when the snapshot is compiled.
"""

from __future__ import annotations

import enum
import itertools
import math
import os
import time
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import msgspec

from assay.engine._core._bucketing import choose_variation, gb_hash, in_namespace
from assay.engine._core._compiled import native
from assay.engine._core._conditions import MISSING, js_string, json_equal
from assay.engine._core._snapshot import (
    CompiledExperiment,
    CompiledFilter,
    CompiledFlag,
    CompiledForceRule,
    CompiledParent,
    CompiledRolloutRule,
    Snapshot,
    forced_key,
)
from assay.engine._core._sticky import StickyAssignment, StickyDocs

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "RECORD_FIELDS",
    "Decision",
    "Reason",
    "decide",
    "decide_all",
    "decide_python",
    "new_decision_id",
]


class Reason(enum.StrEnum):
    """Why a decision came out as it did (DESIGN's reason codes)."""

    FLAG_NOT_FOUND = "flag_not_found"
    FLAG_OFF = "flag_off"
    PREREQUISITE_FAILED = "prerequisite_failed"
    FORCED = "forced"
    ROLLOUT = "rollout"
    NO_ACTIVE_EXPERIMENT = "no_active_experiment"
    EXPERIMENT_NOT_RUNNING = "experiment_not_running"
    TARGETING_MISMATCH = "targeting_mismatch"
    PARTICIPATION_LIMIT = "participation_limit"
    LAYER_CONFLICT = "layer_conflict"
    OUTSIDE_TRAFFIC_ALLOCATION = "outside_traffic_allocation"
    NO_VARIANTS = "no_variants"
    EXPERIMENT_ASSIGNED = "experiment_assigned"
    ROLLED_BACK = "rolled_back"
    DEFAULT = "default"
    FORCED_VARIATION = "forced_variation"
    PASSTHROUGH = "passthrough"
    PREREQUISITE_GATE = "prerequisite_gate"
    PREREQUISITE_CYCLE = "prerequisite_cycle"
    STICKY_BUCKET = "sticky_bucket"
    """Assigned from the subject's stored sticky bucket, not by hashing."""
    STICKY_BUCKET_BLOCKED = "sticky_bucket_blocked"
    """Kept out: assigned under a bucket version below ``min_bucket_version``."""


class Decision(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The outcome of deciding one flag for one subject.

    ``gc=False``: a decision only holds strings, numbers and configuration values, never
    itself, so it cannot be part of a reference cycle; skipping GC tracking makes the
    millions created per minute cheaper.
    """

    decision_id: str
    project_id: str
    flag: str
    subject: str
    value: Any
    variant: str | None = None
    """The assigned variant's key (for a holdout, the holdout's variant)."""
    rule: str | None = None
    """The rule that decided: its id, or ``"rules[i]"`` when it has none."""
    reason: Reason
    experiment: str | None = None
    """The experiment that assigned (or rolled back), else the one that did not assign
    and whose reason is ``experiment_reason``."""
    experiment_reason: Reason | None = None
    """Why the first experiment rule passed over did not assign, when evaluation went on."""
    in_experiment: bool = False
    hash_value: str | None = None
    """The hash attribute's value used to bucket (experiments and rollouts)."""
    flag_revision: int = 0
    snapshot_version: int
    decided_at: float
    """Epoch seconds."""
    sticky_bucket: StickyAssignment | None = None
    """A sticky experiment's assignment that the subject's sticky documents lack: the
    caller (the engine) stores it so the subject keeps this variant."""


RECORD_FIELDS: Final = tuple(f for f in Decision.__struct_fields__ if f != "sticky_bucket")
"""What a decision record keeps, in ``Decision``'s order: every field but the sticky
assignment to store (which is stored as an assignment, not with the record)."""


# --------------------------------------------------------------------------------------
# Decision ids: unique across processes without a syscall per decision. A random 64-bit
# prefix per process (re-drawn in a forked child, which would otherwise repeat the
# parent's ids) followed by a counter.
# --------------------------------------------------------------------------------------


def _id_source() -> Callable[[], str]:
    prefix = os.urandom(8).hex()
    if native is not None:
        # The compiled path makes the ids (a third of the cost of the %-format), for both
        # paths, so they share one counter.
        native.reseed(prefix)
        next_id: Callable[[], str] = native.next_id
        return next_id
    # The ids as an iterator's __next__: a map of the %-format over a counter runs in C,
    # with no Python frame per id (it is a tenth of a decision's cost otherwise).
    return map((prefix + "%08x").__mod__, itertools.count(1)).__next__


_next_id = _id_source()


def _reseed_ids() -> None:
    global _next_id
    _next_id = _id_source()


if hasattr(os, "register_at_fork"):  # pragma: no branch - absent only on Windows
    os.register_at_fork(after_in_child=_reseed_ids)


def new_decision_id() -> str:
    """A new decision id: 16 hex digits of per-process randomness, then a hex counter."""
    return _next_id()


# --------------------------------------------------------------------------------------
# Evaluation.
# --------------------------------------------------------------------------------------

# Module constants: a global lookup is cheaper than an attribute lookup on the enum class.
_FLAG_NOT_FOUND: Final = Reason.FLAG_NOT_FOUND
_FLAG_OFF: Final = Reason.FLAG_OFF
_PREREQUISITE_FAILED: Final = Reason.PREREQUISITE_FAILED
_FORCED: Final = Reason.FORCED
_ROLLOUT: Final = Reason.ROLLOUT
_NO_ACTIVE_EXPERIMENT: Final = Reason.NO_ACTIVE_EXPERIMENT
_EXPERIMENT_NOT_RUNNING: Final = Reason.EXPERIMENT_NOT_RUNNING
_TARGETING_MISMATCH: Final = Reason.TARGETING_MISMATCH
_PARTICIPATION_LIMIT: Final = Reason.PARTICIPATION_LIMIT
_LAYER_CONFLICT: Final = Reason.LAYER_CONFLICT
_OUTSIDE_TRAFFIC_ALLOCATION: Final = Reason.OUTSIDE_TRAFFIC_ALLOCATION
_NO_VARIANTS: Final = Reason.NO_VARIANTS
_EXPERIMENT_ASSIGNED: Final = Reason.EXPERIMENT_ASSIGNED
_ROLLED_BACK: Final = Reason.ROLLED_BACK
_DEFAULT: Final = Reason.DEFAULT
_FORCED_VARIATION: Final = Reason.FORCED_VARIATION
_PASSTHROUGH: Final = Reason.PASSTHROUGH
_PREREQUISITE_GATE: Final = Reason.PREREQUISITE_GATE
_PREREQUISITE_CYCLE: Final = Reason.PREREQUISITE_CYCLE
_STICKY_BUCKET: Final = Reason.STICKY_BUCKET
_STICKY_BUCKET_BLOCKED: Final = Reason.STICKY_BUCKET_BLOCKED
_NO_DOCS: Final[StickyDocs] = {}

# A prerequisite flag that is off, unknown, or gated itself fails whatever value it serves.
_GATED: Final = frozenset(
    {_FLAG_OFF, _FLAG_NOT_FOUND, _PREREQUISITE_FAILED, _PREREQUISITE_GATE, _PREREQUISITE_CYCLE}
)
# Verdicts of a rule's parent conditions.
_PASS: Final = 0
_FAIL: Final = 1
_GATE: Final = 2
_CYCLE: Final = 3

_Outcome: TypeAlias = tuple[
    Any,  # value
    "str | None",  # variant
    "str | None",  # rule
    Reason,  # reason
    "str | None",  # experiment
    "Reason | None",  # experiment_reason
    bool,  # in_experiment
    "str | None",  # hash_value
]
_Run: TypeAlias = tuple[Reason, int, "str | None", CompiledExperiment]


def _hashable(value: Any) -> str:
    # GrowthBook's isHashable + String(): non-empty strings as they are, finite non-zero
    # numbers as JavaScript prints them; everything else (booleans too) is missing.
    if type(value) is str:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ""
    if value == 0 or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return js_string(value)


def _hash_value(attrs: Mapping[str, Any], attribute: str, fallback: str | None) -> str:
    """The subject's hash value for ``attribute`` (else ``fallback``); "" when missing."""
    value = attrs.get(attribute)
    hv = value if type(value) is str else _hashable(value)
    if not hv and fallback is not None:
        value = attrs.get(fallback)
        hv = value if type(value) is str else _hashable(value)
    return hv


def _filtered_out(filters: tuple[CompiledFilter, ...], attrs: Mapping[str, Any]) -> bool:
    """GrowthBook's ``isFilteredOut``: every filter must hash the subject into one of its
    ranges; a subject without the filter's attribute (no fallback) is filtered out."""
    for f in filters:
        hv = _hash_value(attrs, f.attribute, None)
        if not hv:
            return True
        n = gb_hash(f.seed, hv, f.hash_version)
        if n is None:
            return True
        for start, end in f.ranges:
            if start <= n < end:
                break
        else:
            return True
    return False


def hash_value(attrs: Mapping[str, Any], attribute: str, fallback: str | None) -> str:
    """The subject's hash value for ``attribute`` (else ``fallback``) as GrowthBook hashes
    it; "" when missing. Also what sticky documents are keyed by."""
    return _hash_value(attrs, attribute, fallback)


def _bucket(e: CompiledExperiment, attrs: Mapping[str, Any]) -> int:
    """The variant ``e`` assigns on its own (targeting, layer, filters, buckets), or -1."""
    hv = _hash_value(attrs, e.hash_attribute, e.fallback_attribute)
    if not hv:
        return -1
    cond = e.condition
    if cond is not None and not cond(attrs):
        return -1
    ns = e.namespace
    if (ns is not None and not in_namespace(hv, ns)) or not e.assignable:
        return -1
    if e.filters and _filtered_out(e.filters, attrs):
        return -1
    n = gb_hash(e.seed, hv, e.hash_version)
    return -1 if n is None else choose_variation(n, e.ranges)


def _forced_index(e: CompiledExperiment, attrs: Mapping[str, Any]) -> int:
    for attribute, table in e.forced:
        k = forced_key(attrs.get(attribute))
        if k is not None:
            index = table.get(k)
            if index is not None:
                return index
    return -1


def _run(e: CompiledExperiment, attrs: Mapping[str, Any]) -> _Run:
    """Run one experiment rule: (reason, variant index, hash value, deciding experiment).

    The deciding experiment is ``e`` itself, or its holdout when the subject is held out.
    """
    if e.rolled_back:
        return (_ROLLED_BACK if e.variant_keys else _NO_VARIANTS, -1, None, e)
    if not e.running:
        return (_EXPERIMENT_NOT_RUNNING, -1, None, e)
    if e.forced:
        index = _forced_index(e, attrs)
        if index >= 0:
            return (_FORCED_VARIATION, index, None, e)
    hv = _hash_value(attrs, e.hash_attribute, e.fallback_attribute)
    if not hv:
        return (_TARGETING_MISMATCH, -1, None, e)
    cond = e.condition
    if cond is not None and not cond(attrs):
        return (_TARGETING_MISMATCH, -1, hv, e)
    holdout = e.holdout
    if holdout is not None and _bucket(holdout, attrs) == 0:
        return (
            _EXPERIMENT_ASSIGNED,
            0,
            _hash_value(attrs, holdout.hash_attribute, holdout.fallback_attribute),
            holdout,
        )
    limit = e.participation_limit
    if limit is not None:
        count = 0
        for other in e.prior:
            if _bucket(other, attrs) >= 0:
                count += 1
                if count >= limit:
                    return (_PARTICIPATION_LIMIT, -1, hv, e)
    ns = e.namespace
    if ns is not None and not in_namespace(hv, ns):
        return (_LAYER_CONFLICT, -1, hv, e)
    if e.filters and _filtered_out(e.filters, attrs):
        return (_LAYER_CONFLICT, -1, hv, e)
    if not e.assignable:
        return (_NO_VARIANTS, -1, hv, e)
    n = gb_hash(e.seed, hv, e.hash_version)
    index = -1 if n is None else choose_variation(n, e.ranges)
    if index < 0:
        return (_OUTSIDE_TRAFFIC_ALLOCATION, -1, hv, e)
    if e.passthrough[index]:
        return (_PASSTHROUGH, index, hv, e)
    return (_EXPERIMENT_ASSIGNED, index, hv, e)


def _parents_verdict(
    parents: tuple[CompiledParent, ...],
    attrs: Mapping[str, Any],
    key: str,
    path: tuple[str, ...] | None,
    sticky: StickyDocs,
) -> int:
    """GrowthBook's ``evalPrereqs`` for one rule of flag ``key``, reached along ``path``.

    Each parent is decided in full for the same subject; reaching a flag already on the
    path (or a parent that did) is a cycle, which ends the evaluation as GrowthBook ends
    it. A missing parent's value is null.
    """
    sub = (key,) if path is None else (*path, key)
    for p in parents:
        target = p.flags.get(p.flag_key)
        if target is None:
            value = None
        elif target.key in sub:
            return _CYCLE
        else:
            outcome = _evaluate(target, attrs, sticky, sub)
            if outcome[3] is _PREREQUISITE_CYCLE:
                return _CYCLE
            value = outcome[0]
        cond = p.condition
        if cond is not None and not cond({"value": value}):
            return _GATE if p.gate else _FAIL
    return _PASS


def _run_sticky(e: CompiledExperiment, attrs: Mapping[str, Any], docs: StickyDocs) -> _Run:
    """``_run`` with sticky bucketing, in the order GrowthBook's JavaScript SDK evaluates an
    experiment rule with a sticky bucket service (DESIGN: a subject keeps the variant it
    first got even when targeting changes): a forced variation first (never stored); then
    the subject must have a hash value (the fallback attribute counts here, as GrowthBook
    uses it only under sticky bucketing) and pass the filters (the SDK checks a rule's
    filters, like its parent conditions, before the experiment runs); then a stored
    assignment to a current variant decides before the targeting condition is read,
    skipping it, the holdout, the participation limit, the layer and the coverage
    (``sticky_bucket``, or ``passthrough`` for a passthrough variant); else the condition
    applies (``targeting_mismatch``, also for a subject whose stored assignment is under a
    version below ``min_bucket_version``), and one under such a version keeps an otherwise
    eligible subject out (``sticky_bucket_blocked``); else the subject is assigned as
    without stickiness. (GrowthBook's Python SDK checks a rule's condition before the
    stored assignment; assay follows DESIGN and the JavaScript SDK.)"""
    if e.rolled_back or not e.running:
        return _run(e, attrs)
    if e.forced:
        index = _forced_index(e, attrs)
        if index >= 0:
            return (_FORCED_VARIATION, index, None, e)
    hv = _hash_value(attrs, e.hash_attribute, e.fallback_attribute)
    if not hv:
        return (_TARGETING_MISMATCH, -1, None, e)
    if e.filters and _filtered_out(e.filters, attrs):
        # Out either way; the reason is the one ``_run`` gives (the condition first).
        cond = e.condition
        return (
            _TARGETING_MISMATCH if cond is not None and not cond(attrs) else _LAYER_CONFLICT,
            -1,
            hv,
            e,
        )
    # The document of the hash attribute, then the fallback's for keys it lacks.
    own = _hash_value(attrs, e.hash_attribute, None)
    assignments = docs.get((e.hash_attribute, own)) if own else None
    fallback = e.fallback_attribute
    if fallback is not None:
        other = _hash_value(attrs, fallback, None)
        extra = docs.get((fallback, other)) if other else None
        if extra:
            assignments = {**extra, **assignments} if assignments else extra
    blocked = False
    if assignments:
        for key in e.blocked_keys:
            if key in assignments:
                blocked = True
                break
        if not blocked:
            stored = assignments.get(e.sticky_key)
            if stored is not None and stored in e.variant_keys:
                index = e.variant_keys.index(stored)
                return (_PASSTHROUGH if e.passthrough[index] else _STICKY_BUCKET, index, hv, e)
    result = _run(e, attrs)
    if blocked and result[0] in (_EXPERIMENT_ASSIGNED, _OUTSIDE_TRAFFIC_ALLOCATION, _PASSTHROUGH):
        return (_STICKY_BUCKET_BLOCKED, -1, hv, e)
    return result


def _sticky_assignment(
    e: CompiledExperiment, attrs: Mapping[str, Any], docs: StickyDocs, variant: str
) -> StickyAssignment | None:
    """What to store for a subject ``e`` put in ``variant``: under the attribute it hashed
    (the hash attribute, else the fallback), unless that document holds it already."""
    attribute = e.hash_attribute
    value = _hash_value(attrs, attribute, None)
    if not value and e.fallback_attribute is not None:
        attribute = e.fallback_attribute
        value = _hash_value(attrs, attribute, None)
    doc = docs.get((attribute, value))
    if doc is not None and doc.get(e.sticky_key) == variant:
        return None
    return StickyAssignment(attribute=attribute, value=value, key=e.sticky_key, variant=variant)


def _evaluate(
    cf: CompiledFlag,
    attrs: Mapping[str, Any],
    sticky: StickyDocs = _NO_DOCS,
    path: tuple[str, ...] | None = None,
) -> _Outcome:
    # ``path``: the flags being decided above this one (through prerequisites or parent
    # conditions), None at the top; only a flag that has either builds it.
    if not cf.enabled:
        return (cf.default_value, None, None, _FLAG_OFF, None, None, False, None)
    if cf.prerequisites:
        sub = (cf.key,) if path is None else (*path, cf.key)
        for pre in cf.prerequisites:
            target = pre.flag
            if target is None or target.key in sub:
                return (cf.default_value, None, None, _PREREQUISITE_FAILED, None, None, False, None)
            outcome = _evaluate(target, attrs, sticky, sub)
            if outcome[3] in _GATED or not json_equal(outcome[0], pre.value):
                return (cf.default_value, None, None, _PREREQUISITE_FAILED, None, None, False, None)

    experiment_reason: Reason | None = None
    experiment_key: str | None = None
    for rule in cf.rules:
        parents = rule.parents
        if parents:
            verdict = _parents_verdict(parents, attrs, cf.key, path, sticky)
            if verdict == _FAIL:
                continue
            if verdict != _PASS:
                return (
                    None,
                    None,
                    rule.rule_id,
                    _PREREQUISITE_GATE if verdict == _GATE else _PREREQUISITE_CYCLE,
                    experiment_key,
                    experiment_reason,
                    False,
                    None,
                )
        if type(rule) is CompiledForceRule:
            cond = rule.condition
            if (cond is None or cond(attrs)) and not (
                rule.filters and _filtered_out(rule.filters, attrs)
            ):
                return (
                    rule.value,
                    None,
                    rule.rule_id,
                    _FORCED,
                    experiment_key,
                    experiment_reason,
                    False,
                    None,
                )
        elif type(rule) is CompiledRolloutRule:
            r = rule
            cond = r.condition
            if cond is not None and not cond(attrs):
                continue
            if r.filters and _filtered_out(r.filters, attrs):
                continue
            bounds = r.range
            if bounds is None and r.coverage <= 0:
                continue
            hv = _hash_value(attrs, r.hash_attribute, r.fallback_attribute)
            if not hv:
                continue
            if bounds is not None:
                n = gb_hash(r.seed, hv, r.hash_version)
                if n is None or not bounds[0] <= n < bounds[1]:
                    continue
            elif r.coverage < 1:
                # Every hash is below 1, so full coverage needs no hashing at all.
                n = gb_hash(r.seed, hv, r.hash_version)
                if n is None or n > r.coverage:
                    continue
            return (
                r.value,
                None,
                r.rule_id,
                _ROLLOUT,
                experiment_key,
                experiment_reason,
                False,
                hv,
            )
        else:
            e = rule.experiment
            if e is None:
                reason: Reason = _NO_ACTIVE_EXPERIMENT
                key: str = rule.experiment_key
            else:
                reason, index, hv_used, decided = (
                    _run_sticky(e, attrs, sticky) if e.sticky else _run(e, attrs)
                )
                if reason is _EXPERIMENT_ASSIGNED or reason is _STICKY_BUCKET:
                    # Held out: the holdout's group sees the flag's default value.
                    value = e.variant_values[index] if decided is e else cf.default_value
                    return (
                        value,
                        decided.variant_keys[index],
                        rule.rule_id,
                        reason,
                        decided.key,
                        experiment_reason,
                        True,
                        hv_used,
                    )
                if reason is _FORCED_VARIATION:
                    if not e.passthrough[index]:
                        return (
                            e.variant_values[index],
                            e.variant_keys[index],
                            rule.rule_id,
                            _FORCED_VARIATION,
                            e.key,
                            experiment_reason,
                            False,
                            None,
                        )
                    reason = _PASSTHROUGH
                if reason is _ROLLED_BACK:
                    return (
                        e.control_value,
                        None,
                        rule.rule_id,
                        _ROLLED_BACK,
                        e.key,
                        experiment_reason,
                        False,
                        None,
                    )
                key = e.key
            if experiment_reason is None:
                experiment_reason = reason
                experiment_key = key
    return (cf.default_value, None, None, _DEFAULT, experiment_key, experiment_reason, False, None)


def _subject_attributes(subject: str, attributes: Mapping[str, Any] | None) -> Mapping[str, Any]:
    # The subject is the ``id`` attribute unless the caller's attributes carry one, which
    # is kept as given (with its JSON type: a numeric id stays a number, as in GrowthBook).
    # The caller's mapping is never mutated, and is used as is when it has an id.
    if attributes is None:
        return {"id": subject}
    if "id" in attributes:
        return attributes
    merged = dict(attributes)
    merged["id"] = subject
    return merged


def decide_python(
    snapshot: Snapshot,
    project_id: str,
    flag_key: str,
    subject: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    new_id: Callable[[], str] | None = None,
    sticky: StickyDocs | None = None,
) -> Decision:
    """Decide ``flag_key`` for ``subject`` (with ``attributes``) in ``project_id``.

    Synchronous and pure; see the module docstring for the order of evaluation. The
    subject is the attribute ``id`` unless ``attributes`` has an ``id`` of its own, which
    is then used as given (a numeric id stays a number). ``sticky``: the subject's sticky
    bucket documents (none: an empty set).

    This is the pure-Python path, the reference; ``decide`` is the compiled one where it
    was built (``_compiled``), which gives the same answers and hands this function every
    case it does not handle.
    """
    flags = snapshot.project_flags.get(project_id)
    cf = None if flags is None else flags.get(flag_key)
    if cf is None:
        return Decision(
            decision_id=_next_id() if new_id is None else new_id(),
            project_id=project_id,
            flag=flag_key,
            subject=subject,
            value=None,
            reason=_FLAG_NOT_FOUND,
            snapshot_version=snapshot.version,
            decided_at=time.time(),
        )
    # The caller's mapping as is when it carries an id (see _subject_attributes).
    attrs = (
        attributes
        if attributes is not None and "id" in attributes
        else _subject_attributes(subject, attributes)
    )
    docs = _NO_DOCS if sticky is None else sticky
    value, variant, rule, reason, experiment, experiment_reason, in_experiment, hv = _evaluate(
        cf, attrs, docs
    )
    decision = Decision(
        decision_id=_next_id() if new_id is None else new_id(),
        project_id=project_id,
        flag=flag_key,
        subject=subject,
        value=value,
        variant=variant,
        rule=rule,
        reason=reason,
        experiment=experiment,
        experiment_reason=experiment_reason,
        in_experiment=in_experiment,
        hash_value=hv,
        flag_revision=cf.revision,
        snapshot_version=snapshot.version,
        decided_at=time.time(),
    )
    if in_experiment and project_id in snapshot.sticky_projects:
        write = _sticky_write(snapshot, project_id, experiment, attrs, docs, variant)
        if write is not None:
            # Rare (a first assignment), so the common path passes no sticky_bucket: that
            # keyword alone made Decision() measurably slower on every decision.
            return msgspec.structs.replace(decision, sticky_bucket=write)
    return decision


def _finish_sticky(
    decision: Decision,
    snapshot: Snapshot,
    project_id: str,
    attrs: Mapping[str, Any],
    docs: StickyDocs,
) -> Decision:
    """The compiled path's end of a decision in a sticky project, as ``decide_python``'s."""
    write = _sticky_write(snapshot, project_id, decision.experiment, attrs, docs, decision.variant)
    return decision if write is None else msgspec.structs.replace(decision, sticky_bucket=write)


def _sticky_write(
    snapshot: Snapshot,
    project_id: str,
    experiment: str | None,
    attrs: Mapping[str, Any],
    docs: StickyDocs,
    variant: str | None,
) -> StickyAssignment | None:
    e = snapshot.compiled_experiments.get((project_id, experiment or ""))
    if e is None or not e.sticky or variant is None:
        return None
    return _sticky_assignment(e, attrs, docs, variant)


def decide_all(
    snapshot: Snapshot,
    project_id: str,
    subject: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    new_id: Callable[[], str] | None = None,
    sticky: StickyDocs | None = None,
) -> list[Decision]:
    """Decide every flag of ``project_id`` for ``subject``, in flag-key order."""
    flags = snapshot.project_flags.get(project_id)
    if not flags:
        return []
    attrs = _subject_attributes(subject, attributes)
    next_id = _next_id if new_id is None else new_id
    now = time.time()
    version = snapshot.version
    decisions: list[Decision] = []
    docs = _NO_DOCS if sticky is None else sticky
    any_sticky = project_id in snapshot.sticky_projects
    plans = snapshot.native_plans
    project_plans: Mapping[str, Any] = {}
    if plans is not None and native is not None:
        project_plans = plans[2].get(project_id, project_plans)
    for cf in flags.values():
        plan = project_plans.get(cf.key)
        outcome = None if plan is None else native_evaluate(plan, attrs, docs)
        value, variant, rule, reason, experiment, experiment_reason, in_experiment, hv = (
            _evaluate(cf, attrs, docs) if outcome is None else outcome
        )
        decision = Decision(
            decision_id=next_id(),
            project_id=project_id,
            flag=cf.key,
            subject=subject,
            value=value,
            variant=variant,
            rule=rule,
            reason=reason,
            experiment=experiment,
            experiment_reason=experiment_reason,
            in_experiment=in_experiment,
            hash_value=hv,
            flag_revision=cf.revision,
            snapshot_version=version,
            decided_at=now,
        )
        if in_experiment and any_sticky:
            write = _sticky_write(snapshot, project_id, experiment, attrs, docs, variant)
            if write is not None:
                decision = msgspec.structs.replace(decision, sticky_bucket=write)
        decisions.append(decision)
    return decisions


# --------------------------------------------------------------------------------------
# The compiled path, where it was built.
# --------------------------------------------------------------------------------------

_REASONS: Final = (
    _FLAG_NOT_FOUND,
    _FLAG_OFF,
    _PREREQUISITE_FAILED,
    _FORCED,
    _ROLLOUT,
    _NO_ACTIVE_EXPERIMENT,
    _EXPERIMENT_NOT_RUNNING,
    _TARGETING_MISMATCH,
    _PARTICIPATION_LIMIT,
    _LAYER_CONFLICT,
    _OUTSIDE_TRAFFIC_ALLOCATION,
    _NO_VARIANTS,
    _EXPERIMENT_ASSIGNED,
    _ROLLED_BACK,
    _DEFAULT,
    _FORCED_VARIATION,
    _PASSTHROUGH,
    _PREREQUISITE_GATE,
    _PREREQUISITE_CYCLE,
    _STICKY_BUCKET,
    _STICKY_BUCKET_BLOCKED,
)
"""The reasons in the order of _native.c's reason indices."""


def _no_native(plan: tuple[Any, ...], attrs: Mapping[str, Any], docs: StickyDocs) -> None:
    return None


decide = decide_python
native_evaluate: Callable[[tuple[Any, ...], Mapping[str, Any], StickyDocs], _Outcome | None] = (
    _no_native
)
if native is not None:
    # RECORD_FIELDS: the keywords _native.c passes to Decision, in their order.
    native.configure(
        decide_python, _hashable, _finish_sticky, Decision, MISSING, _REASONS, RECORD_FIELDS
    )
    decide = native.decide
    native_evaluate = native.evaluate
