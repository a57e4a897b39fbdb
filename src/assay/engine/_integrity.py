"""Rules that tie configuration objects together, which ``ConfigService`` enforces on save:
what may run at once (one experiment per flag, no overlapping layer ranges), what may be
deleted (nothing still referenced), and what an experiment may change once started.

Each rule reads the project's objects inside the caller's store transaction, so what it
checks is what commits; a broken rule raises ``Conflict`` with a stable code.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from assay.engine._errors import Conflict
from assay.engine._model import (
    Experiment,
    ExperimentRule,
    ExperimentStatus,
    Flag,
    Layer,
    Metric,
    Segment,
)
from assay.engine._ports import KIND_NAMES, StoreTransaction
from assay.engine._segments import segment_users
from assay.engine._validation import flag_references

Scoped = Flag | Experiment | Layer | Metric | Segment
ScopedT = TypeVar("ScopedT", Flag, Experiment, Layer, Metric, Segment)

# Experiment fields that decide who gets which variant; changing them after start would
# silently move subjects between variants, so they are frozen once an experiment runs.
_ASSIGNMENT_FIELDS = (
    "variants",
    "seed",
    "hash_version",
    "hash_attribute",
    "fallback_attribute",
    "fallback_sticky_only",
    "layer",
    "ranges",
)


def has_passthrough(experiment: Experiment) -> bool:
    """A holdout in GrowthBook's form: an experiment with a passthrough variant, which
    lets the flag go on to its next rule, so it may run beside the flag's experiment."""
    return any(v.passthrough for v in experiment.variants)


async def _all(tx: StoreTransaction, kind: type[ScopedT], project_id: str) -> list[ScopedT]:
    """Every object of this kind in the project, read a page at a time."""
    out: list[ScopedT] = []
    after: str | None = None
    while True:
        batch = await tx.list(kind, project_id, after=after, limit=500)
        out.extend(batch)
        if len(batch) < 500:
            return out
        after = batch[-1].key


async def check_can_run(tx: StoreTransaction, experiment: Experiment) -> None:
    """At most one running experiment per flag (holdouts in GrowthBook's form, with a
    passthrough variant, aside); no overlapping layer ranges."""
    experiments = {e.key: e for e in await _all(tx, Experiment, experiment.project_id)}
    for flag in await _all(tx, Flag, experiment.project_id):
        refs = {r.experiment for r in flag.rules if isinstance(r, ExperimentRule)}
        if experiment.key not in refs or has_passthrough(experiment):
            continue
        for other in refs - {experiment.key}:
            o = experiments.get(other)
            if o is not None and o.status is ExperimentStatus.RUNNING and not has_passthrough(o):
                raise Conflict(
                    f"flag {flag.key!r} already has a running experiment {other!r}",
                    code="flag_has_running_experiment",
                    details={"flag": flag.key, "experiment": other},
                )
    if experiment.layer is not None:
        mine = experiment.layer
        for o in experiments.values():
            if (
                o.key != experiment.key
                and o.status is ExperimentStatus.RUNNING
                and o.layer is not None
                and o.layer.layer == mine.layer
                and o.layer.start < mine.end
                and mine.start < o.layer.end
            ):
                raise Conflict(
                    f"layer range overlaps running experiment {o.key!r}",
                    code="layer_range_overlap",
                    details={"layer": mine.layer, "experiment": o.key},
                )


async def check_unreferenced(tx: StoreTransaction, obj: Scoped) -> None:
    """Refuse to delete an object another object of the project still names."""
    users: list[str] = []
    if isinstance(obj, Flag):
        users = [
            f"flag {f.key}"
            for f in await _all(tx, Flag, obj.project_id)
            if obj.key in flag_references(f) and f.key != obj.key
        ]
    elif isinstance(obj, Experiment):
        users = [
            f"flag {f.key}"
            for f in await _all(tx, Flag, obj.project_id)
            if any(isinstance(r, ExperimentRule) and r.experiment == obj.key for r in f.rules)
        ] + [
            f"experiment {e.key}"
            for e in await _all(tx, Experiment, obj.project_id)
            if e.holdout == obj.key
        ]
    elif isinstance(obj, Layer):
        users = [
            f"experiment {e.key}"
            for e in await _all(tx, Experiment, obj.project_id)
            if e.layer is not None and e.layer.layer == obj.key
        ]
    elif isinstance(obj, Metric):
        users = [
            f"experiment {e.key}"
            for e in await _all(tx, Experiment, obj.project_id)
            if obj.key
            in (
                *e.primary_metrics,
                *e.secondary_metrics,
                *e.guardrail_metrics,
                *(g.metric for g in e.guardrails),
            )
        ] + [
            f"metric {m.key}"
            for m in await _all(tx, Metric, obj.project_id)
            if obj.key in (m.numerator, m.denominator)
        ]
    elif isinstance(obj, Segment):
        users = segment_users(
            obj,
            await _all(tx, Flag, obj.project_id),
            await _all(tx, Experiment, obj.project_id),
            await _all(tx, Segment, obj.project_id),
        )
    if users:
        raise Conflict(
            f"{KIND_NAMES[type(obj)]} {obj.key!r} is used by {', '.join(users)}",
            code="in_use",
            details={"used_by": users},
        )


def check_experiment_edit(current: Experiment, updated: Experiment) -> None:
    """Refuse an edit a started experiment may not take: bucket versions going down,
    anything once it has ended, and the fields that decide assignment while it runs."""
    for field in ("bucket_version", "min_bucket_version"):
        # Going back would hand subjects assignments they were moved away from.
        if getattr(updated, field) < getattr(current, field):
            raise Conflict(
                f"{field} cannot go down ({getattr(current, field)} -> {getattr(updated, field)})",
                code="bucket_version_decreased",
                details={"field": field},
            )
    if current.status is ExperimentStatus.DRAFT:
        return
    if current.status not in (ExperimentStatus.RUNNING, ExperimentStatus.PAUSED):
        raise Conflict(
            f"experiment {current.key!r} is {current.status.value} and can no longer change",
            code="experiment_locked",
        )
    changed = [f for f in _ASSIGNMENT_FIELDS if getattr(current, f) != getattr(updated, f)]
    if "variants" in changed and updated.sticky_bucketing and _same_but_weights(current, updated):
        # Sticky bucketing keeps those already assigned where they are: new weights only
        # shape where newcomers go.
        changed.remove("variants")
    if changed:
        raise Conflict(
            "these fields decide assignment and cannot change after start: " + ", ".join(changed),
            code="experiment_locked",
            details={"fields": changed},
        )


def _same_but_weights(current: Experiment, updated: Experiment) -> bool:
    def strip(e: Experiment) -> list[tuple[str, Any, str]]:
        return [(v.key, msgspec.to_builtins(v.value), v.name) for v in e.variants]

    return strip(current) == strip(updated)
