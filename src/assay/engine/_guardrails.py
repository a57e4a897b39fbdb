"""Guardrails: what a check finds and records, and the interfaces plugins implement.

- ``GuardrailTrigger``: a breach, recorded once per (experiment, check, experiment revision)
  with what was observed and what action it asked for.
- ``Notification``: one message to one channel about one trigger, kept in a durable outbox
  written in the same transaction as its trigger, and delivered at least once.
- ``GuardrailAction`` and ``Channel``: what the ``assay_guardrail_actions`` and
  ``assay_notification_channels`` hooks return (built-ins in ``assay.plugins.guardrails``).
- ``MetricStatisticsSource``: where per-variant sufficient statistics come from.
- ``Leadership``: the store's way of electing the one process whose guardrail actor acts.

This module does no I/O itself; the checker (``_guardrail_checks``) does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import msgspec

from assay.engine._errors import ValidationFailed
from assay.engine._model import ApiKey, Experiment, Metric, Role, Transition

if TYPE_CHECKING:
    import pluggy

    from assay.engine._core._stats_sufficient import MetricStats
    from assay.engine._ports import StoreTransaction

log = logging.getLogger("assay.engine.guardrails")

GUARDRAIL_KEY: Final = ApiKey(
    id="guardrail",
    name="the guardrail actor",
    role=Role.ADMIN,
    project_id=None,
    prefix="",
    secret_hash="",
    created_at=datetime(2000, 1, 1, tzinfo=UTC),
)
"""The principal guardrail actions act as: audit entries they cause name ``guardrail``."""

NOTIFY: Final = "notify"
"""The action that changes nothing: the breach is recorded and notified only."""
LOG_CHANNEL: Final[dict[str, Any]] = {"type": "log"}
"""Where a trigger's notifications go when its guardrail names no channel."""

CheckKind = Literal["guardrail", "srm", "no_traffic", "crossover_rate"]
ActionStatus = Literal["pending", "acting", "done", "skipped", "failed"]
"""``pending``: not yet carried out; ``acting``: claimed by a process now; ``done``;
``skipped``: no longer applicable (the experiment changed or stopped meanwhile); ``failed``:
the action raised (kept for people to look at, not retried)."""


class _Record(msgspec.Struct, frozen=True, kw_only=True):
    pass


class GuardrailTrigger(_Record, frozen=True, kw_only=True):
    """A breach. At most one per (experiment, check, experiment revision): a breach that
    persists is not re-triggered every interval, but it is again after the experiment
    changes (e.g. once a paused experiment is resumed)."""

    id: str
    project_id: str
    experiment_id: str
    experiment_key: str
    experiment_revision: int
    check: str
    """Which check: ``guardrail:<index>:<metric>``, ``srm``, ``crossover_rate`` or
    ``no_traffic:<since>``."""
    kind: CheckKind
    metric: str | None = None
    variant: str | None = None
    """The treatment that breached (guardrails only)."""
    observed: float | None = None
    """Guardrails: the lift; SRM: the p-value; no traffic: idle minutes; crossovers: rate."""
    ci_low: float | None = None
    ci_high: float | None = None
    threshold: float
    threshold_type: str | None = None
    harmful_direction: str | None = None
    statistic: float | None = None
    """Guardrails: the sequential p-value; SRM: the chi-square statistic."""
    units: dict[str, int] = {}
    """Units per variant behind the judgement."""
    message: str
    action: str
    action_status: ActionStatus = "pending"
    action_result: str | None = None
    triggered_at: datetime
    acted_at: datetime | None = None


class Notification(_Record, frozen=True, kw_only=True):
    """One outbox entry: ``payload`` goes to the channel ``channel`` describes. ``id`` is
    stable across retries (it is in the payload too), so receivers de-duplicate on it."""

    id: str
    trigger_id: str
    project_id: str
    experiment_id: str
    channel: dict[str, Any]
    payload: dict[str, Any]
    created_at: datetime
    attempts: int = 0
    next_attempt_at: datetime
    delivered_at: datetime | None = None
    last_error: str | None = None

    @property
    def channel_type(self) -> str:
        return str(self.channel.get("type", ""))


class NotificationStatus(_Record, frozen=True, kw_only=True):
    """An outbox entry as the API shows it: the channel's settings (URLs, secrets) stay
    private."""

    id: str
    trigger_id: str
    channel_type: str
    status: Literal["delivered", "pending", "retrying"]
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    delivered_at: datetime | None
    last_error: str | None

    @classmethod
    def of(cls, n: Notification) -> NotificationStatus:
        if n.delivered_at is not None:
            status: Literal["delivered", "pending", "retrying"] = "delivered"
        else:
            status = "retrying" if n.attempts else "pending"
        return cls(
            id=n.id,
            trigger_id=n.trigger_id,
            channel_type=n.channel_type,
            status=status,
            attempts=n.attempts,
            created_at=n.created_at,
            next_attempt_at=n.next_attempt_at,
            delivered_at=n.delivered_at,
            last_error=n.last_error,
        )


class Traffic(_Record, frozen=True, kw_only=True):
    """An experiment's exposures: what the health checks read."""

    exposures: dict[str, int]
    """Analysed subjects per variant (first-exposed there, crossovers excluded)."""
    crossovers: int
    """Assigned subjects exposed to more than one variant."""
    assigned: dict[str, int] = {}
    """Assigned subjects per variant: first exposed there, crossovers included. What the
    SRM health check tests."""
    last_exposure_at: datetime | None
    """When the newest subject was first exposed."""


class CheckOutcome(_Record, frozen=True, kw_only=True):
    """The result of one check of one experiment."""

    check: str
    kind: CheckKind
    status: Literal["ok", "breached", "insufficient_sample", "not_computable"]
    metric: str | None = None
    variant: str | None = None
    observed: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    threshold: float | None = None
    statistic: float | None = None
    units: dict[str, int] = {}
    message: str = ""
    trigger_id: str | None = None
    """The trigger this breach is recorded as (new, or recorded by an earlier check)."""


class ExperimentCheck(_Record, frozen=True, kw_only=True):
    """Every check of one experiment, and the triggers this check recorded."""

    experiment: str
    experiment_id: str
    project_id: str
    status: str
    """The experiment's status after the actions this check took."""
    checked_at: datetime
    outcomes: list[CheckOutcome] = []
    triggers: list[GuardrailTrigger] = []
    """Triggers recorded by this check, with the outcome of their actions."""


# --- what plugins implement -----------------------------------------------------------


class ActionContext(Protocol):
    """What a guardrail action may do and see."""

    @property
    def experiment(self) -> Experiment: ...

    @property
    def trigger(self) -> GuardrailTrigger: ...

    async def transition(self, transition: Transition, *, reason: str) -> Experiment:
        """Change the experiment's status as the ``guardrail`` principal (audited with
        ``reason``) and publish the new configuration snapshot before returning, so
        decide follows at once. Raises ``Conflict`` when the experiment changed since the
        breach was observed or the transition is not allowed from its status."""
        ...


class GuardrailAction(Protocol):
    """An action on breach: an async callable returning a short description of what it
    did. Raising ``Conflict`` means "no longer applicable" (recorded as skipped)."""

    async def __call__(self, context: ActionContext) -> str: ...


class Channel(Protocol):
    """A notification channel: checks its settings when an experiment is saved and
    delivers one notification (raising on failure: the outbox retries)."""

    def validate(self, config: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` with a message for people when ``config`` is unusable."""
        ...

    async def deliver(self, notification: Notification) -> None: ...


class MetricStatisticsSource(Protocol):
    """Per-variant sufficient statistics of an experiment's metrics, over every analysed
    subject so far (crossovers excluded, conversions within each metric's attribution
    window): per metric key, per variant key. A metric the source cannot aggregate (an
    unknown kind, a missing input) is left out."""

    async def variant_statistics(
        self, experiment: Experiment, metrics: Sequence[Metric]
    ) -> Mapping[str, Mapping[str, MetricStats]]: ...


class Leadership(Protocol):
    """The store's leader election for guardrail actors (one per database)."""

    async def acquire(self) -> bool:
        """Whether this process leads now: takes the lead if it is free, or confirms it
        still holds it. Never raises for a lost connection: answers False."""
        ...


# --- plugins --------------------------------------------------------------------------


def collect_actions(pm: pluggy.PluginManager) -> dict[str, GuardrailAction]:
    """Every plugin's guardrail actions; a later plugin overrides an earlier one's."""
    actions: dict[str, GuardrailAction] = {}
    for answer in reversed(pm.hook.assay_guardrail_actions()):
        actions.update(answer)
    return actions


def collect_channels(pm: pluggy.PluginManager) -> dict[str, Channel]:
    """Every plugin's notification channels; a later plugin overrides an earlier one's."""
    channels: dict[str, Channel] = {}
    for answer in reversed(pm.hook.assay_notification_channels()):
        channels.update(answer)
    return channels


class GuardrailValidator:
    """Save-time checks of an experiment's guardrails: the metric exists, the action and
    every channel type are registered, and each channel accepts its settings. Without
    registries (a bare ``ConfigService``) only the metrics are checked."""

    def __init__(
        self,
        actions: Mapping[str, GuardrailAction] | None = None,
        channels: Mapping[str, Channel] | None = None,
    ) -> None:
        self._actions = actions
        self._channels = channels

    async def __call__(self, tx: StoreTransaction, experiment: Experiment) -> None:
        for i, guardrail in enumerate(experiment.guardrails):
            where = f"guardrails[{i}]"
            if await tx.get(Metric, experiment.project_id, guardrail.metric) is None:
                raise ValidationFailed(
                    f"metric {guardrail.metric!r} does not exist",
                    code="unknown_reference",
                    details={"field": f"{where}.metric"},
                )
            if self._actions is not None and guardrail.action not in self._actions:
                raise ValidationFailed(
                    f"unknown guardrail action {guardrail.action!r}; registered: "
                    + ", ".join(sorted(self._actions)),
                    code="unknown_action",
                    details={"field": f"{where}.action"},
                )
            for j, config in enumerate(guardrail.channels):
                self._check_channel(config, f"{where}.channels[{j}]")

    def _check_channel(self, config: Mapping[str, Any], where: str) -> None:
        kind = config.get("type")
        if not isinstance(kind, str):
            raise ValidationFailed(
                'a channel needs a "type"', code="invalid_channel", details={"field": where}
            )
        if self._channels is None:
            return
        channel = self._channels.get(kind)
        if channel is None:
            raise ValidationFailed(
                f"unknown notification channel {kind!r}; registered: "
                + ", ".join(sorted(self._channels)),
                code="unknown_channel",
                details={"field": f"{where}.type"},
            )
        try:
            channel.validate(config)
        except ValueError as exc:
            raise ValidationFailed(
                f"{kind} channel: {exc}", code="invalid_channel", details={"field": where}
            ) from exc


def channels_of(experiment: Experiment) -> list[dict[str, Any]]:
    """Every distinct channel the experiment's guardrails name, in order; the ``log``
    channel when there are none. Health-check triggers (not tied to one guardrail) go
    here."""
    seen: dict[bytes, dict[str, Any]] = {}
    for guardrail in experiment.guardrails:
        for config in guardrail.channels:
            seen.setdefault(msgspec.json.encode(config), config)
    return list(seen.values()) or [dict(LOG_CHANNEL)]
