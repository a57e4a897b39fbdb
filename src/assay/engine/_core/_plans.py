"""Plans: a snapshot's flags laid out for the compiled decide path (``_native.c``).

A plan is nested tuples of plain values in fixed positions, built once per snapshot, so
the C code reads each field with one index and no attribute lookup. The layouts are the
``enum``s at the top of ``_native.c``; this module is their only producer.

A flag gets a plan only when everything it can reach is one of the shapes the compiled
path evaluates: force, rollout and experiment rules, parent conditions, filters, layers,
explicit ranges and sticky bucketing. A prerequisite, a forced variation, a holdout or a
participation limit (anywhere the flag reaches), a cycle of parent conditions, or a value
of an unexpected type leaves the flag without a plan, and the pure-Python path decides it.
Conditions become nodes from the shapes their closures describe (``_conditions.describe``);
a closure without one becomes a node that calls it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from assay.engine._core._conditions import shape_of
from assay.engine._core._snapshot import (
    CompiledExperiment,
    CompiledFilter,
    CompiledFlag,
    CompiledForceRule,
    CompiledParent,
    CompiledRolloutRule,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

__all__ = ["Plans", "build_plans", "condition_node"]

Plans = tuple[int, frozenset[str], dict[str, dict[str, tuple[Any, ...]]], dict[str, str]]
"""(snapshot version, sticky project ids, {project id: {flag key: plan}}, {project key:
project id})."""

# Condition node tags, rule kinds: as in _native.c.
_CALL, _ALL, _ANY, _NOT, _TRUE, _FALSE, _PATH, _STR_IN, _STR_EQ, _IS, _STR_CMP = range(11)
_FORCE, _ROLLOUT, _EXPERIMENT = range(3)
_OPS: Final = {"<": 0, "<=": 1, "==": 2, "!=": 3, ">": 4, ">=": 5}  # Py_LT .. Py_GE
_MAX_DEPTH: Final = 40
"""Deeper condition trees stay a call to their closure (which recurses in Python)."""


class _NoPlan(Exception):
    """The flag takes the pure-Python path."""


def _float(value: Any) -> float:
    # Comparisons against hashes in [0, 1) are exact in both paths only if the number is.
    if type(value) is float:
        return value
    if type(value) is int and float(value) == value:
        return float(value)
    raise _NoPlan


def _str(value: Any) -> str:
    if type(value) is not str:
        raise _NoPlan
    return value


def _int(value: Any) -> int:
    if type(value) is not int:
        raise _NoPlan
    return value


def condition_node(predicate: Callable[[Any], Any], depth: int = 0) -> tuple[Any, ...]:
    """The node ``_native.c`` evaluates for ``predicate`` (its shape, else a call)."""
    shape = shape_of(predicate)
    if shape is None or depth > _MAX_DEPTH:
        return (_CALL, predicate)
    kind = shape[0]
    if kind in ("all", "any"):
        children = tuple(condition_node(p, depth + 1) for p in shape[1])
        return (_ALL if kind == "all" else _ANY, predicate, children)
    if kind == "not":
        return (_NOT, predicate, condition_node(shape[1], depth + 1))
    if kind == "true":
        return (_TRUE, predicate)
    if kind == "false":
        return (_FALSE, predicate)
    if kind == "path" and type(shape[1]) is str:
        return (_PATH, predicate, shape[1], condition_node(shape[2], depth + 1))
    if kind == "str_in" and isinstance(shape[1], (set, frozenset)):
        return (_STR_IN, predicate, shape[1])
    if kind == "str_eq" and type(shape[1]) is str:
        return (_STR_EQ, predicate, shape[1])
    if kind == "is":
        return (_IS, predicate, shape[1])
    if kind == "str_cmp" and shape[3] in _OPS:
        # The last item: the node's own cache of f's results (f is pure, see describe).
        return (_STR_CMP, predicate, shape[1], shape[2], _OPS[shape[3]], {})
    return (_CALL, predicate)


def _condition(predicate: Callable[[Any], Any] | None) -> tuple[Any, ...] | None:
    return None if predicate is None else condition_node(predicate)


def _ranges(ranges: Iterable[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    return tuple((_float(a), _float(b)) for a, b in ranges)


def _filters(filters: tuple[CompiledFilter, ...]) -> tuple[Any, ...]:
    return tuple(
        (_str(f.attribute), _str(f.seed), _int(f.hash_version), _ranges(f.ranges)) for f in filters
    )


def _experiment(e: CompiledExperiment) -> tuple[Any, ...]:
    if e.forced or e.holdout is not None or e.participation_limit is not None:
        raise _NoPlan
    # The C code indexes the variants with a range's index: they must line up (where they
    # do not, the Python path raises as it always has).
    variants = len(e.variant_keys)
    if not len(e.ranges) == len(e.variant_values) == len(e.passthrough) == variants:
        raise _NoPlan
    ns = e.namespace
    return (
        e.key,
        bool(e.rolled_back),
        bool(e.running),
        _str(e.hash_attribute),
        None if e.fallback_attribute is None else _str(e.fallback_attribute),
        _condition(e.condition),
        None if ns is None else ("__" + _str(ns[0]), _float(ns[1]), _float(ns[2])),
        _filters(e.filters),
        bool(e.assignable),
        _str(e.seed),
        _int(e.hash_version),
        _ranges(e.ranges),
        tuple(e.variant_keys),
        tuple(e.variant_values),
        tuple(bool(p) for p in e.passthrough),
        e.control_value,
        bool(e.sticky),
        e.sticky_key,
        tuple(e.blocked_keys),
    )


class _Builder:
    def __init__(self) -> None:
        self._done: dict[int, tuple[Any, ...] | None] = {}
        self._visiting: set[int] = set()

    def flag(self, cf: CompiledFlag) -> tuple[Any, ...] | None:
        ref = id(cf)
        if ref in self._done:
            return self._done[ref]
        if ref in self._visiting:
            return None  # a cycle of parent conditions: decided in Python
        self._visiting.add(ref)
        try:
            plan: tuple[Any, ...] | None = self._flag(cf)
        except _NoPlan:
            plan = None
        self._visiting.discard(ref)
        self._done[ref] = plan
        return plan

    def _flag(self, cf: CompiledFlag) -> tuple[Any, ...]:
        if cf.prerequisites:
            raise _NoPlan
        rules: list[tuple[Any, ...]] = []
        for rule in cf.rules:
            parents = self._parents(rule.parents)
            if type(rule) is CompiledForceRule:
                rules.append(
                    (
                        _FORCE,
                        parents,
                        rule.rule_id,
                        _condition(rule.condition),
                        rule.value,
                        _filters(rule.filters),
                    )
                )
            elif type(rule) is CompiledRolloutRule:
                bounds = rule.range
                rules.append(
                    (
                        _ROLLOUT,
                        parents,
                        rule.rule_id,
                        _condition(rule.condition),
                        rule.value,
                        _filters(rule.filters),
                        _float(rule.coverage),
                        _str(rule.seed),
                        _int(rule.hash_version),
                        _str(rule.hash_attribute),
                        None if rule.fallback_attribute is None else _str(rule.fallback_attribute),
                        None if bounds is None else (_float(bounds[0]), _float(bounds[1])),
                    )
                )
            else:
                e = rule.experiment
                rules.append(
                    (
                        _EXPERIMENT,
                        parents,
                        rule.rule_id,
                        rule.experiment_key,
                        None if e is None else _experiment(e),
                    )
                )
        return (cf.key, bool(cf.enabled), cf.default_value, cf.revision, tuple(rules))

    def _parents(self, parents: tuple[CompiledParent, ...]) -> tuple[Any, ...]:
        out = []
        for p in parents:
            target = p.flags.get(p.flag_key)
            plan = None if target is None else self.flag(target)
            if target is not None and plan is None:
                raise _NoPlan
            out.append(
                (
                    plan,
                    None if target is None else target.key,
                    _condition(p.condition),
                    bool(p.gate),
                )
            )
        return tuple(out)


def build_plans(
    version: int,
    project_flags: Mapping[str, Mapping[str, CompiledFlag]],
    sticky_projects: frozenset[str],
    project_ids: Mapping[str, str],
) -> Plans:
    """Every flag's plan that can have one, for snapshot ``version``."""
    builder = _Builder()
    per_project: dict[str, dict[str, tuple[Any, ...]]] = {}
    for project_id, flags in project_flags.items():
        plans = {}
        for key, cf in flags.items():
            plan = builder.flag(cf)
            if plan is not None:
                plans[key] = plan
        per_project[project_id] = plans
    return (version, sticky_projects, per_project, dict(project_ids))
