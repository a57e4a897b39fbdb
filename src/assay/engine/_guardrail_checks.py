"""What the guardrail actor does: check experiments, record triggers, act, notify.

One check of a running experiment:

1. gathers the per-variant sufficient statistics of its guardrail metrics (one
   aggregation, through a ``MetricStatisticsSource``) and judges each guardrail with the
   sequential test (``_core._guardrails``);
2. reads its traffic and judges the health checks: SRM, crossover rate, no traffic;
3. records each breach as a trigger, with one outbox notification per channel, in one
   store call (atomic), unless the same breach was already recorded at this revision;
4. carries out each new trigger's action (``pause``, ``rollback``, a plugin's), claimed in
   the store first so that only one process acts on it, and records the outcome.

Notifications are delivered afterwards by ``Outbox``, from the store, so a crash between
any two steps loses nothing: a trigger whose action never finished is picked up by the
leader's next round (``settle_unfinished``), and a notification stays due until a delivery
succeeds.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from assay.engine._core._guardrails import (
    HealthVerdict,
    PairVerdict,
    judge_crossover_rate,
    judge_guardrail,
    judge_no_traffic,
    judge_srm,
)
from assay.engine._errors import AssayError
from assay.engine._guardrails import (
    GUARDRAIL_KEY,
    LOG_CHANNEL,
    ActionStatus,
    Channel,
    CheckKind,
    CheckOutcome,
    ExperimentCheck,
    GuardrailAction,
    GuardrailTrigger,
    MetricStatisticsSource,
    Notification,
    Traffic,
    channels_of,
)
from assay.engine._metric_kinds import MetricKind, ReportMetric, ReportRequest, RollupSpec
from assay.engine._model import (
    AuditEntry,
    Experiment,
    ExperimentStatus,
    Guardrail,
    Metric,
    Project,
    Transition,
)

if TYPE_CHECKING:
    from assay.engine._config import EngineConfig
    from assay.engine._core._stats_sufficient import MetricStats
    from assay.engine._ports import Store
    from assay.engine._service import ConfigService

log = logging.getLogger("assay.engine.guardrails")

_PAGE = 100


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id(prefix: str) -> str:
    # Time-ordered like every assay id, so listings sort newest first by id.
    return f"{prefix}_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(4)}"


# --- statistics -----------------------------------------------------------------------


class ReportStatistics:
    """Guardrail statistics from the reports' aggregation (``Store.report_aggregates`` and
    the metric kinds' ``statistics``), over every first exposure so far: a guardrail
    judges exactly the numbers a report shows, for every metric kind a plugin provides."""

    def __init__(self, store: Store, kinds: Mapping[str, MetricKind]) -> None:
        self._store = store
        self._kinds = kinds

    async def variant_statistics(
        self, experiment: Experiment, metrics: Sequence[Metric]
    ) -> Mapping[str, Mapping[str, MetricStats]]:
        known: dict[str, Metric] = {m.key: m for m in metrics}
        requested: list[ReportMetric] = []
        inputs: dict[str, RollupSpec] = {}
        async with self._store.read() as tx:
            for metric in metrics:
                kind = self._kinds.get(metric.kind)
                if kind is None:
                    continue
                parts: list[Metric] = []
                for key in kind.inputs(metric):
                    part = known.get(key) or await tx.get(Metric, experiment.project_id, key)
                    if part is None:
                        break
                    known[key] = part
                    parts.append(part)
                else:
                    requested.append(ReportMetric(metric, kind))
                    for part in parts:
                        inputs[part.key] = RollupSpec(
                            part.key,
                            part.attribution_window_hours,
                            None if part.cuped_days is None else part.cuped_days * 24,
                        )
        if not requested:
            return {}
        aggregates = await self._store.report_aggregates(
            ReportRequest(
                experiment_id=experiment.id,
                start=None,
                end=None,
                until=experiment.ended_at,
                rollups=tuple(inputs.values()),
                metrics=tuple(requested),
                now=_now(),
            )
        )
        out: dict[str, dict[str, MetricStats]] = {}
        for spec, kind in requested:
            rows = aggregates.rows.get(spec.key, {})
            out[spec.key] = {variant: kind.statistics(spec, row) for variant, row in rows.items()}
        return out


# --- actions --------------------------------------------------------------------------


@dataclass(frozen=True)
class _ActionContext:
    experiment: Experiment
    trigger: GuardrailTrigger
    _project: Project
    _service: ConfigService
    _refresh: Callable[[], Awaitable[object]]
    _changed: list[Experiment]

    async def transition(self, transition: Transition, *, reason: str) -> Experiment:
        updated = await self._service.transition_experiment(
            GUARDRAIL_KEY,
            self._project.key,
            self.experiment.key,
            transition,
            # Only the experiment as observed: one changed since (resumed, edited) is judged
            # afresh by the next check instead of being acted on with stale evidence.
            expected_revision=self.trigger.experiment_revision,
            reason=reason,
        )
        self._changed.append(updated)
        # Published before returning, so decide stops assigning the moment this is done.
        try:
            await self._refresh()
        except Exception:
            # The change is committed either way, and the decision actor's change feed
            # publishes it anyway; only the "at once" is lost (e.g. the engine is closing).
            log.warning("publishing the snapshot after %s failed", transition.value, exc_info=True)
        return updated


# --- the checker ----------------------------------------------------------------------


class GuardrailChecker:
    """Checks experiments and acts on breaches; see the module docstring. Checks in one
    process are serialised (one lock), so an on-demand check never races the periodic one."""

    def __init__(
        self,
        *,
        store: Store,
        service: ConfigService,
        statistics: MetricStatisticsSource,
        actions: Mapping[str, GuardrailAction],
        config: EngineConfig,
        refresh: Callable[[], Awaitable[object]],
    ) -> None:
        self._store = store
        self._service = service
        self.statistics = statistics
        self._actions = actions
        self._config = config
        self._refresh = refresh
        self._lock = trio.Lock()
        self.triggers_recorded = 0
        self.actions_taken = 0

    @property
    def _lease(self) -> timedelta:
        # A claim outlives any action by far; a crashed claimer's lapses after this.
        return timedelta(seconds=max(60.0, 2 * self._config.guardrail_interval_seconds))

    async def check_running(self, project_id: str | None = None) -> list[ExperimentCheck]:
        """Check every running experiment (of one project, when given), then finish the
        actions earlier rounds left unfinished. An experiment whose check fails is logged
        and skipped: one broken experiment must not blind the guardrails of the others."""
        async with self._lock:
            state = await self._store.load_config()
            projects = {p.id: p for p in state.projects}
            metrics = _metrics_by_project(state.metrics)
            results: list[ExperimentCheck] = []
            for experiment in state.experiments:
                if experiment.status is not ExperimentStatus.RUNNING:
                    continue
                if project_id is not None and experiment.project_id != project_id:
                    continue
                project = projects.get(experiment.project_id)
                if project is None:
                    continue
                try:
                    results.append(
                        await self._check(
                            experiment, project, metrics.get(experiment.project_id, {})
                        )
                    )
                except Exception:
                    log.exception("guardrail check of experiment %s failed", experiment.key)
            await self._settle_unfinished({e.id: e for e in state.experiments}, projects)
        return results

    async def check_experiment(
        self, experiment_id: str, *, requested_by: str | None = None
    ) -> ExperimentCheck | None:
        """Check one experiment now (None when it does not exist). A check someone asked
        for is written to the audit log with what it found."""
        async with self._lock:
            state = await self._store.load_config()
            experiment = next((e for e in state.experiments if e.id == experiment_id), None)
            project = next(
                (p for p in state.projects if experiment and p.id == experiment.project_id), None
            )
            if experiment is None or project is None:
                return None
            if experiment.status is ExperimentStatus.RUNNING:
                metrics = _metrics_by_project(state.metrics).get(project.id, {})
                result = await self._check(experiment, project, metrics)
            else:
                result = ExperimentCheck(
                    experiment=experiment.key,
                    experiment_id=experiment.id,
                    project_id=project.id,
                    status=experiment.status.value,
                    checked_at=_now(),
                )
            if requested_by is not None:
                await self._audit_check(experiment, result, requested_by)
        return result

    # --- one experiment ---------------------------------------------------------------

    async def _check(
        self, experiment: Experiment, project: Project, metrics: Mapping[str, Metric]
    ) -> ExperimentCheck:
        now = _now()
        outcomes: list[CheckOutcome] = []
        breaches: list[tuple[CheckOutcome, Guardrail | None]] = []
        wanted = [metrics[g.metric] for g in experiment.guardrails if g.metric in metrics]
        statistics = (
            await self.statistics.variant_statistics(
                experiment, list({m.key: m for m in wanted}.values())
            )
            if wanted
            else {}
        )
        variants = [v.key for v in experiment.variants]
        for i, guardrail in enumerate(experiment.guardrails):
            outcome = _guardrail_outcome(i, guardrail, statistics.get(guardrail.metric), variants)
            outcomes.append(outcome)
            if outcome.status == "breached":
                breaches.append((outcome, guardrail))
        for outcome in self._health(
            experiment, await self._store.guardrail_traffic(experiment.id), now
        ):
            outcomes.append(outcome)
            if outcome.status == "breached":
                breaches.append((outcome, None))

        recorded: dict[str, str] = {}
        new: list[GuardrailTrigger] = []
        for outcome, breached in breaches:
            trigger, notifications = _trigger_of(experiment, project, outcome, breached, now)
            stored, created = await self._store.record_trigger(trigger, notifications)
            recorded[outcome.check] = stored.id
            if created:
                self.triggers_recorded += 1
                new.append(stored)
                log.warning(
                    "guardrail trigger %s: experiment %s: %s (action %s)",
                    stored.id,
                    experiment.key,
                    stored.message,
                    stored.action,
                )

        status = experiment.status
        settled: list[GuardrailTrigger] = []
        for trigger in new:
            done, changed = await self._act(trigger, experiment, project)
            settled.append(done)
            if changed is not None:
                status = changed.status
        return ExperimentCheck(
            experiment=experiment.key,
            experiment_id=experiment.id,
            project_id=project.id,
            status=status.value,
            checked_at=now,
            outcomes=[
                msgspec.structs.replace(o, trigger_id=recorded[o.check])
                if o.check in recorded
                else o
                for o in outcomes
            ],
            triggers=settled,
        )

    def _health(
        self, experiment: Experiment, traffic: Traffic, now: datetime
    ) -> list[CheckOutcome]:
        config = self._config
        assigned = traffic.assigned
        # Health checks count assigned subjects (crossovers included; docs/reports.md).
        units = {v.key: assigned.get(v.key, 0) for v in experiment.variants}
        srm = judge_srm(
            list(units.values()),
            [v.weight for v in experiment.variants],
            min_units=config.guardrail_health_min_units,
            threshold=config.guardrail_srm_p_value,
        )
        crossovers = judge_crossover_rate(
            traffic.crossovers,
            sum(assigned.values()),
            limit=config.guardrail_crossover_limit,
            min_units=config.guardrail_health_min_units,
        )
        # The allowance starts again whenever the experiment changes (a start, a resume).
        since = max(
            t for t in (traffic.last_exposure_at, experiment.started_at, experiment.updated_at) if t
        )
        idle = judge_no_traffic(since, now, minutes=config.guardrail_no_traffic_minutes)
        return [
            _health_outcome("srm", "srm", srm, units),
            _health_outcome("crossover_rate", "crossover_rate", crossovers, units),
            # Keyed by when the silence began: traffic that comes back and stops again is
            # a new episode, notified again.
            _health_outcome(f"no_traffic:{since.isoformat()}", "no_traffic", idle, units),
        ]

    # --- actions ----------------------------------------------------------------------

    async def _act(
        self, trigger: GuardrailTrigger, experiment: Experiment, project: Project
    ) -> tuple[GuardrailTrigger, Experiment | None]:
        """Carry out ``trigger``'s action if this process wins the claim on it."""
        now = _now()
        if not await self._store.claim_trigger(trigger.id, now=now, lease_until=now + self._lease):
            return trigger, None
        action = self._actions.get(trigger.action)
        changed: list[Experiment] = []
        status: ActionStatus
        if action is None:
            status, result = "failed", f"no guardrail action {trigger.action!r} is registered"
        elif experiment.revision != trigger.experiment_revision:
            status = "skipped"
            result = (
                f"the experiment changed since the breach (revision {trigger.experiment_revision}"
                f" -> {experiment.revision}); the next check judges it afresh"
            )
        else:
            context = _ActionContext(
                experiment, trigger, project, self._service, self._refresh, changed
            )
            try:
                result = await action(context)
                status = "done"
                self.actions_taken += 1
            except AssayError as exc:
                # Conflict (changed meanwhile, illegal transition, archived project) or
                # NotFound: the action no longer applies.
                status, result = "skipped", f"{exc.code}: {exc.message}"
            except Exception as exc:
                # Anything else (the database went away mid-action) is retried by the
                # leader's next round.
                log.exception(
                    "guardrail action %s of trigger %s failed", trigger.action, trigger.id
                )
                status, result = "pending", f"error, will retry: {exc!r}"
        settled = await self._store.settle_trigger(
            trigger.id,
            status=status,
            result=result,
            at=_now(),
        )
        log.info(
            "guardrail trigger %s: action %s %s: %s", trigger.id, trigger.action, status, result
        )
        return settled or trigger, changed[-1] if changed else None

    async def _settle_unfinished(
        self, experiments: Mapping[str, Experiment], projects: Mapping[str, Project]
    ) -> None:
        """Carry out actions that an earlier round (here or in a process that died) did
        not finish."""
        for status in ("pending", "acting"):
            before: str | None = None
            while True:
                batch = await self._store.list_triggers(
                    experiment_id=None, action_status=status, before=before, limit=_PAGE
                )
                for trigger in batch:
                    experiment = experiments.get(trigger.experiment_id)
                    project = projects.get(trigger.project_id)
                    if experiment is None or project is None:
                        await self._settle_gone(trigger)
                        continue
                    try:
                        await self._act(trigger, experiment, project)
                    except Exception:
                        log.exception("finishing guardrail trigger %s failed", trigger.id)
                if len(batch) < _PAGE:
                    break
                before = batch[-1].id

    async def _settle_gone(self, trigger: GuardrailTrigger) -> None:
        now = _now()
        if await self._store.claim_trigger(trigger.id, now=now, lease_until=now + self._lease):
            await self._store.settle_trigger(
                trigger.id, status="skipped", result="the experiment no longer exists", at=now
            )

    async def _audit_check(
        self, experiment: Experiment, result: ExperimentCheck, requested_by: str
    ) -> None:
        after = {
            "status": result.status,
            "breached": [o.check for o in result.outcomes if o.status == "breached"],
            "triggers": [t.id for t in result.triggers],
        }
        async with self._store.transaction() as tx:
            await tx.append_audit(
                AuditEntry(
                    project_id=experiment.project_id,
                    actor=requested_by,
                    at=_now(),
                    action="experiment.guardrails_check",
                    resource_kind="experiment",
                    resource_id=experiment.id,
                    resource_key=experiment.key,
                    after=after,
                )
            )


def _metrics_by_project(metrics: Sequence[Metric]) -> dict[str, dict[str, Metric]]:
    out: dict[str, dict[str, Metric]] = {}
    for metric in metrics:
        out.setdefault(metric.project_id, {})[metric.key] = metric
    return out


# --- outcomes and triggers ------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{x:+.2%}"


def _guardrail_outcome(
    index: int,
    guardrail: Guardrail,
    statistics: Mapping[str, MetricStats] | None,
    variants: Sequence[str],
) -> CheckOutcome:
    check = f"guardrail:{index}:{guardrail.metric}"
    base = CheckOutcome(
        check=check,
        kind="guardrail",
        status="not_computable",
        metric=guardrail.metric,
        threshold=guardrail.threshold,
    )
    if statistics is None:
        return msgspec.structs.replace(
            base, message=f"no statistics for metric {guardrail.metric!r} (unknown or unsupported)"
        )
    verdict = judge_guardrail(guardrail, statistics, variants)
    units = {v: statistics[v].n for v in variants if v in statistics}
    return msgspec.structs.replace(
        base,
        status=verdict.status,
        variant=verdict.variant,
        observed=verdict.estimate,
        ci_low=verdict.ci_low,
        ci_high=verdict.ci_high,
        statistic=verdict.p_value,
        units=units,
        message=_describe(guardrail, verdict, variants[0] if variants else ""),
    )


def _describe(guardrail: Guardrail, verdict: PairVerdict, control: str) -> str:
    relative = guardrail.threshold_type == "relative"
    fmt = _pct if relative else (lambda x: f"{x:+.4g}")
    limit = f"{guardrail.threshold:.2%}" if relative else f"{guardrail.threshold:.4g}"
    harm = "rise" if guardrail.harmful_direction == "increase" else "fall"
    if verdict.status == "insufficient_sample":
        return (
            f"{verdict.n_control} / {verdict.n_treatment} units in control / treatment; "
            f"judged from {guardrail.min_sample} per variant"
        )
    if verdict.status == "not_computable" or verdict.estimate is None:
        return f"cannot be judged: {verdict.error}"
    assert verdict.ci_low is not None
    assert verdict.ci_high is not None
    level = 1 - 2 * guardrail.alpha
    head = (
        f"{guardrail.metric} in {verdict.variant} vs {control}: {fmt(verdict.estimate)} "
        f"(always-valid {level:.0%} interval [{fmt(verdict.ci_low)}, {fmt(verdict.ci_high)}])"
    )
    if verdict.status == "breached":
        return f"{head}: must not {harm} by more than {limit}"
    return f"{head}: within the limit ({harm} of at most {limit})"


def _health_outcome(
    check: str, kind: CheckKind, verdict: HealthVerdict, units: dict[str, int]
) -> CheckOutcome:
    return CheckOutcome(
        check=check,
        kind=kind,
        status=verdict.status,
        observed=verdict.observed,
        threshold=verdict.threshold,
        statistic=verdict.statistic,
        units=units,
        message=verdict.message,
    )


def _trigger_of(
    experiment: Experiment,
    project: Project,
    outcome: CheckOutcome,
    guardrail: Guardrail | None,
    now: datetime,
) -> tuple[GuardrailTrigger, list[Notification]]:
    trigger = GuardrailTrigger(
        id=_new_id("grt"),
        project_id=project.id,
        experiment_id=experiment.id,
        experiment_key=experiment.key,
        experiment_revision=experiment.revision,
        check=outcome.check,
        kind=outcome.kind,
        metric=outcome.metric,
        variant=outcome.variant,
        observed=outcome.observed,
        ci_low=outcome.ci_low,
        ci_high=outcome.ci_high,
        threshold=outcome.threshold if outcome.threshold is not None else 0.0,
        threshold_type=guardrail.threshold_type if guardrail else None,
        harmful_direction=guardrail.harmful_direction if guardrail else None,
        statistic=outcome.statistic,
        units=outcome.units,
        message=outcome.message,
        # Health checks say the data cannot be trusted, not that the treatment harms:
        # they notify and leave the decision to people.
        action=guardrail.action if guardrail else "notify",
        triggered_at=now,
    )
    # A guardrail without channels notifies through the log; health checks, which belong
    # to no one guardrail, through every channel the experiment's guardrails name.
    channels = (guardrail.channels or [dict(LOG_CHANNEL)]) if guardrail else channels_of(experiment)
    notifications = []
    for channel in channels:
        notification_id = _new_id("ntf")
        notifications.append(
            Notification(
                id=notification_id,
                trigger_id=trigger.id,
                project_id=project.id,
                experiment_id=experiment.id,
                channel=dict(channel),
                payload=_payload(notification_id, trigger, experiment, project),
                created_at=now,
                next_attempt_at=now,
            )
        )
    return trigger, notifications


def _payload(
    notification_id: str, trigger: GuardrailTrigger, experiment: Experiment, project: Project
) -> dict[str, Any]:
    """The JSON every channel sends (a Slack channel reshapes it). Fixed at trigger time,
    so each retry sends the same bytes."""
    details: dict[str, Any] = msgspec.to_builtins(trigger)
    for private in ("action_status", "action_result", "acted_at"):
        details.pop(private, None)
    return {
        "id": notification_id,
        "type": "guardrail.triggered",
        "message": f"experiment {experiment.key} ({project.key}): {trigger.message}; "
        f"action: {trigger.action}",
        "project": {"id": project.id, "key": project.key},
        "experiment": {
            "id": experiment.id,
            "key": experiment.key,
            "name": experiment.name,
            "revision": experiment.revision,
            "status": experiment.status.value,
        },
        "trigger": details,
    }


# --- the outbox -----------------------------------------------------------------------


class Outbox:
    """Delivers due notifications through their channels, each attempt recorded: success
    marks it delivered; failure counts the attempt and schedules the next one with
    exponential backoff (``guardrail_retry_base_seconds`` doubling up to
    ``guardrail_retry_max_seconds``), for as long as it takes."""

    def __init__(self, store: Store, channels: Mapping[str, Channel], config: EngineConfig) -> None:
        self._store = store
        self._channels = channels
        self._config = config
        # A few at a time: one dead endpoint waiting out its timeout must not hold the rest.
        self._limiter = trio.CapacityLimiter(8)
        self.delivered = 0
        self.failed_attempts = 0

    def backoff(self, attempts: int) -> timedelta:
        base = self._config.guardrail_retry_base_seconds
        return timedelta(
            seconds=min(base * 2 ** min(attempts - 1, 60), self._config.guardrail_retry_max_seconds)
        )

    async def purge_delivered(self) -> int:
        """Delete what was delivered longer ago than the retention; how many rows."""
        retention = timedelta(days=self._config.guardrail_outbox_retention_days)
        purged = await self._store.purge_delivered_notifications(_now() - retention)
        if purged:
            log.info("purged %d delivered guardrail notifications", purged)
        return purged

    async def deliver_due(self) -> int:
        """Attempt every notification due now; how many were attempted."""
        attempted = 0
        while True:
            due = await self._store.due_notifications(_now(), limit=_PAGE)
            async with trio.open_nursery() as nursery:
                for notification in due:
                    nursery.start_soon(self._deliver, notification)
            attempted += len(due)
            if len(due) < _PAGE:
                return attempted

    async def _deliver(self, notification: Notification) -> None:
        async with self._limiter:
            attempts = notification.attempts + 1
            channel = self._channels.get(notification.channel_type)
            try:
                if channel is None:
                    raise LookupError(
                        f"no notification channel {notification.channel_type!r} is registered"
                    )
                with trio.fail_after(self._config.guardrail_delivery_timeout_seconds):
                    await channel.deliver(notification)
            except Exception as exc:
                self.failed_attempts += 1
                delay = self.backoff(attempts)
                error = str(exc) or repr(exc)
                log.warning(
                    "notification %s (%s) attempt %d failed: %s; retrying in %.1fs",
                    notification.id,
                    notification.channel_type,
                    attempts,
                    error,
                    delay.total_seconds(),
                )
                await self._store.record_delivery(
                    notification.id,
                    attempts=attempts,
                    delivered_at=None,
                    next_attempt_at=_now() + delay,
                    error=error[:1000],
                )
                return
            self.delivered += 1
            # A crash before this line means one more delivery later: at least once.
            await self._store.record_delivery(
                notification.id,
                attempts=attempts,
                delivered_at=_now(),
                next_attempt_at=notification.next_attempt_at,
                error=None,
            )
