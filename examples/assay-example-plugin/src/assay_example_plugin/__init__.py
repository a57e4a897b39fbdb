"""An example assay plugin: one targeting operator, one metric kind, one notification
channel and one guardrail action.

assay finds this module through the ``assay.plugins`` entry point in pyproject.toml and
calls each ``@hookimpl`` function once, when an engine starts. Everything imported here
comes from ``assay.engine.hookspecs``, the plugin interface.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import trio

from assay.engine.hookspecs import (
    ActionContext,
    Channel,
    CompileContext,
    GuardrailAction,
    MeanStats,
    MemorySource,
    MetricKind,
    MetricSpec,
    MetricStats,
    Notification,
    OperatorFactory,
    Row,
    SqlPlan,
    SqlQuery,
    SqlSource,
    Transition,
    hookimpl,
)

# --- a targeting operator ---------------------------------------------------------------


def domain(argument: Any, context: CompileContext) -> Callable[[Any], bool]:
    """``{"email": {"$domain": ["example.com", "example.org"]}}``: the attribute is an
    email address at one of these domains (case-insensitive).

    Called once per distinct condition when the rule is saved and compiled; the predicate
    it returns is what decide calls. A bad argument is refused at save time (422)."""
    if not isinstance(argument, list) or not argument:
        raise context.error("invalid_operator_argument", "$domain takes a list of domains")
    if not all(isinstance(d, str) and d and "@" not in d for d in argument):
        raise context.error("invalid_operator_argument", "$domain: each domain is a name")
    domains = frozenset(d.lower() for d in argument)

    def matches(value: Any) -> bool:
        return isinstance(value, str) and value.rpartition("@")[2].lower() in domains

    return matches


@hookimpl
def assay_targeting_operators() -> dict[str, OperatorFactory]:
    return {"$domain": domain}


# --- a metric kind ----------------------------------------------------------------------


class PerConverterMean:
    """The mean value per subject who converted at least once (e.g. average order value
    among buyers, where the built-in ``mean`` averages over every exposed subject).

    Read from the ``totals`` relation, which the store keeps cheap whatever the data
    size: ``n_post`` subjects converted in the window, ``s_sum`` their value sums and
    ``ss_sum`` the sum of squared value sums (non-converters add zeros to both)."""

    supports_cuped = False

    def check(self, metric: MetricSpec) -> None:
        pass  # nothing to refuse: any metric may be read this way

    def inputs(self, metric: MetricSpec) -> tuple[str, ...]:
        return (metric.key,)

    def sql(self, metric: MetricSpec, source: SqlSource) -> SqlPlan:
        query = SqlQuery()
        totals = source.totals(query, metric.key)
        query.text = f"SELECT t.variant, t.n_post, t.s_sum, t.ss_sum FROM {totals} t"
        rows = yield query
        return {
            str(r["variant"]): {k: float(v or 0.0) for k, v in r.items() if k != "variant"}
            for r in rows
        }

    def aggregate(self, metric: MetricSpec, source: MemorySource) -> Mapping[str, Row]:
        return source.totals(metric.key)

    def statistics(self, metric: MetricSpec, row: Row) -> MetricStats:
        return MeanStats(
            n=int(row.get("n_post", 0.0)),
            sum=row.get("s_sum", 0.0),
            sum_squares=row.get("ss_sum", 0.0),
        )


@hookimpl
def assay_metric_kinds() -> dict[str, MetricKind]:
    return {"per_converter_mean": PerConverterMean()}


# --- a notification channel -------------------------------------------------------------


class JsonLines:
    """``{"type": "jsonl", "path": "/var/log/assay-alerts.jsonl"}``: each notification's
    payload appended as one JSON line. Delivery is at least once, so a reader
    de-duplicates on the payload's ``id``."""

    def validate(self, config: Mapping[str, Any]) -> None:
        path = config.get("path")
        if not isinstance(path, str) or not path:
            raise ValueError('a jsonl channel needs a "path"')

    async def deliver(self, notification: Notification) -> None:
        # Raising here (disk full, no permission) makes the outbox retry with backoff.
        line = json.dumps(notification.payload, sort_keys=True, default=str) + "\n"
        async with await trio.open_file(notification.channel["path"], "a") as file:
            await file.write(line)


@hookimpl
def assay_notification_channels() -> dict[str, Channel]:
    return {"jsonl": JsonLines()}


# --- a guardrail action -----------------------------------------------------------------


async def pause_on_harm(context: ActionContext) -> str:
    """Pause when a guardrail metric breached; only notify on a health check (SRM, no
    traffic, crossovers), which more often means broken instrumentation than harm."""
    if context.trigger.kind != "guardrail":
        return f"left running: {context.trigger.kind} is a health check"
    await context.transition(Transition.PAUSE, reason=context.trigger.message)
    return "paused"


@hookimpl
def assay_guardrail_actions() -> dict[str, GuardrailAction]:
    return {"pause-on-harm": pause_on_harm}
