"""The plugin interface: pluggy hook specifications, every hook prefixed ``assay_``.

A plugin is any object or module with functions marked ``@hookimpl``, registered through
the ``assay.plugins`` entry-point group (built-ins in ``assay.plugins`` are registered the
same way). The engine calls these hooks when it compiles a configuration snapshot, never
per decision: a hook returns objects (operators, metric kinds, ...) that compiled rules
then call directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from assay.engine._core._conditions import OperatorFactory
    from assay.engine._guardrails import Channel, GuardrailAction
    from assay.engine._metric_kinds import MetricKind

PROJECT_NAME = "assay"
ENTRY_POINT_GROUP = "assay.plugins"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def assay_targeting_operators() -> Mapping[str, OperatorFactory]:  # type: ignore[empty-body]
    """Return targeting operators by name (each name starts with ``$``).

    An operator factory is called once per distinct condition at snapshot compile time
    with the operator's argument and a compile context, and returns a predicate over the
    attribute's value. It should raise ``ConditionError`` for an argument it cannot accept,
    so the rule is refused when it is saved. Later plugins override earlier ones for the
    same name; built-ins are registered first.
    """


@hookspec
def assay_metric_kinds() -> Mapping[str, MetricKind]:  # type: ignore[empty-body]
    """Return metric kinds by name (the value of ``Metric.kind``).

    A ``MetricKind`` (``assay.engine._metric_kinds``) aggregates one experiment's events of
    a metric into per-variant sufficient statistics, in SQL for PostgreSQL (``sql``) and in
    Python for the memory store (``aggregate``), from relations the store prepares (period,
    attribution window and crossovers already applied), and turns them into the statistics
    ``compare`` analyses (``statistics``). Metrics naming an unregistered kind are refused
    when saved (422 ``unknown_metric_kind``). Later plugins override earlier ones for the
    same name; built-ins (proportion, count, mean, ratio, percentile) are registered first.
    """


@hookspec
def assay_guardrail_actions() -> Mapping[str, GuardrailAction]:  # type: ignore[empty-body]
    """Return guardrail actions by name (what a breached guardrail's ``action`` names).

    An action is an async callable taking an ``ActionContext`` (the experiment, the
    trigger, and ``transition(...)`` to change the experiment's status, which publishes a
    new snapshot at once) and returning a short description of what it did. Raising
    ``Conflict`` records the action as skipped. Built-ins: ``pause``, ``rollback`` and
    ``notify`` (nothing but the notifications). Later plugins override earlier ones.
    """


@hookspec
def assay_notification_channels() -> Mapping[str, Channel]:  # type: ignore[empty-body]
    """Return notification channels by type (what a channel config's ``"type"`` names).

    A channel validates its settings when an experiment is saved (``validate(config)``
    raising ``ValueError``) and delivers one outbox notification (``await
    deliver(notification)``, raising on failure so the outbox retries with backoff).
    Delivery is at least once: receivers de-duplicate on ``notification.id``. Built-ins:
    ``log``, ``webhook`` and ``slack``. Later plugins override earlier ones.
    """
