"""The engine runtime: opens the store, builds the plugin manager, starts the decision,
ingestion and guardrail actors under supervisors in one nursery, and stops them cleanly.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from time import perf_counter
from types import MethodType
from typing import Any, Generic, TypeVar

import pluggy
import trio

from assay.engine._actors._base import Actor, supervise
from assay.engine._actors._decision import DecisionActor
from assay.engine._actors._guardrail import GuardrailActor
from assay.engine._actors._ingestion import IngestionActor
from assay.engine._compaction import ExperimentCompactor
from assay.engine._config import EngineConfig
from assay.engine._console_sessions import ConsoleSessions
from assay.engine._core import (
    EMPTY_SNAPSHOT,
    ConditionCompiler,
    Decision,
    DecisionCache,
    Reason,
    Snapshot,
    StickyDocs,
    compile_snapshot,
)
from assay.engine._core import decide as decide_core
from assay.engine._core._compiled import STATUS as COMPILED_STATUS
from assay.engine._core._compiled import native
from assay.engine._core._decide import hash_value
from assay.engine._core._stats_sufficient import MetricStats
from assay.engine._errors import AssayError, EngineOverloaded, ValidationFailed
from assay.engine._events import Exposure
from assay.engine._guardrail_checks import GuardrailChecker, Outbox, ReportStatistics
from assay.engine._guardrails import (
    GuardrailValidator,
    MetricStatisticsSource,
    collect_actions,
    collect_channels,
)
from assay.engine._guardrails_api import GuardrailAPI
from assay.engine._ingestion_api import IngestionAPI
from assay.engine._latency import LatencyRecorder
from assay.engine._messages import (
    DecisionMessage,
    Envelope,
    GuardrailMessage,
    IngestionMessage,
    Message,
    RecordEvents,
    RefreshSnapshot,
    SnapshotPublished,
)
from assay.engine._metric_kinds import MetricKind, collect_metric_kinds, metric_kind_validator
from assay.engine._model import Experiment, Metric
from assay.engine._planning_api import PlanningAPI
from assay.engine._plugins import build_plugin_manager, collect_operators, condition_validator
from assay.engine._ports import ConfigState, Store
from assay.engine._reports import ReportAPI
from assay.engine._retention import Retention, RetentionPolicy
from assay.engine._service import ConfigService
from assay.engine._sticky_buckets import StickyBuckets

log = logging.getLogger("assay.engine")

LATENCY_SAMPLE = 16
"""In-process decide latency is timed on one decision in this many."""

StoreFactory = Callable[[], AbstractAsyncContextManager[Store]]
M = TypeVar("M", bound=Message)


class Mailbox(Generic[M]):
    """The send side of an actor's bounded inbox."""

    def __init__(self, actor: Actor[M], size: int) -> None:
        self.actor = actor
        self.send_channel, self.receive_channel = trio.open_memory_channel[Envelope[M]](size)

    async def send(self, message: M) -> None:
        """Queue a message, waiting while the inbox is full (backpressure)."""
        await self.send_channel.send(Envelope(message))

    def send_nowait(self, message: M) -> None:
        try:
            self.send_channel.send_nowait(Envelope(message))
        except trio.WouldBlock:
            raise EngineOverloaded(f"{self.actor.name} inbox is full") from None

    async def request(self, message: M) -> Any:
        """Send and wait for the actor's answer; an actor's failure is raised here."""
        reply_send, reply_receive = trio.open_memory_channel[Any](1)
        await self.send_channel.send(Envelope(message, reply_send))
        async with reply_receive:
            answer = await reply_receive.receive()
        if isinstance(answer, AssayError):
            raise answer
        return answer


class Engine(IngestionAPI, ReportAPI, PlanningAPI, GuardrailAPI):
    """A running assay engine. Obtain one with ``open_engine``."""

    def __init__(self, config: EngineConfig, store: Store, plugins: pluggy.PluginManager) -> None:
        self.config = config
        self.store = store
        self.plugins = plugins
        self._snapshot: Snapshot = EMPTY_SNAPSHOT
        self._snapshot_published = trio.Event()
        self.decision = Mailbox[DecisionMessage](
            DecisionActor(
                store,
                self._compile,
                self._publish,
                write_interval=config.decision_records_write_interval_seconds,
            ),
            config.inbox_size,
        )
        self.ingestion = Mailbox[IngestionMessage](
            IngestionActor(
                store,
                lambda: self._snapshot,
                future_skew=timedelta(seconds=config.event_future_skew_seconds),
                max_age=timedelta(days=config.event_max_age_days),
                write_lanes=config.ingestion_write_lanes,
            ),
            config.inbox_size,
        )
        decision_actor = self.decision.actor
        assert isinstance(decision_actor, DecisionActor)
        self._decision_actor = decision_actor
        # One compiler for the engine's life: it caches compiled conditions by content,
        # so a recompile after a change only compiles what is new.
        self.conditions = ConditionCompiler(collect_operators(plugins), strict=True)
        # Metric kinds, asked of the plugins once: reports and the save-time check use them.
        self.metric_kinds: dict[str, MetricKind] = collect_metric_kinds(plugins)
        # Guardrail actions and notification channels, asked of the plugins once too.
        self.guardrail_actions = collect_actions(plugins)
        self.notification_channels = collect_channels(plugins)
        self.console_sessions = ConsoleSessions(
            store, timedelta(minutes=config.console_session_minutes)
        )
        self.service = ConfigService(
            store,
            on_change=decision_actor.catch_up,
            validate_condition=condition_validator(self.conditions),
            validate_metric=metric_kind_validator(self.metric_kinds),
            validate_guardrails=GuardrailValidator(
                self.guardrail_actions, self.notification_channels
            ),
        )
        # Guardrail statistics: the reports' aggregation, so a guardrail judges the numbers
        # a report shows. Replaceable by any MetricStatisticsSource: read on every check.
        self.metric_statistics: MetricStatisticsSource = ReportStatistics(store, self.metric_kinds)
        self._guardrail_actor = GuardrailActor(
            config.guardrail_interval_seconds,
            store=store,
            checker=GuardrailChecker(
                store=store,
                service=self.service,
                statistics=_Deferred(self),
                actions=self.guardrail_actions,
                config=config,
                refresh=self.refresh,
            ),
            outbox=Outbox(store, self.notification_channels, config),
            outbox_poll_seconds=config.guardrail_outbox_poll_seconds,
            retention=Retention(
                store,
                RetentionPolicy.from_config(config),
                config.retention_interval_seconds,
                compactor=ExperimentCompactor(self, RetentionPolicy.from_config(config)),
            ),
        )
        self.guardrail = Mailbox[GuardrailMessage](self._guardrail_actor, config.inbox_size)
        self.decision_cache = DecisionCache(
            config.decision_cache_size, config.decision_cache_ttl_seconds
        )
        self.latency: dict[str, LatencyRecorder] = {"decide": LatencyRecorder()}
        self._decide_latency = self.latency["decide"]
        self.exposures_dropped = 0
        self.decisions_made = 0
        """Every decision made, in process and over HTTP."""
        self._default_project_id: str | None = None
        self._logs_exposures = False
        """Whether any experiment in the snapshot logs exposures on assignment: when none
        does (the usual case), decide skips looking for one on every assignment."""
        self._records_on = config.decision_records != "disabled"
        self.sticky_buckets = StickyBuckets(store, config.sticky_bucket_cache_size)
        self._sticky_attributes: dict[str, tuple[str, ...]] = {}
        """Per project with sticky experiments: the attributes their documents are kept by."""
        self._sticky_docs = self.sticky_buckets.by_project
        # With the cache off, decide straight from the core (no wrapper call per decision).
        self._decide_one = (
            self.decision_cache.get_or_decide if self.decision_cache.enabled else decide_core
        )
        if native is not None:
            # The compiled path: ``decide`` below, in C, for its common case (a decision
            # that is not timed, in a snapshot that logs no exposures); it calls this
            # method for everything else. The method stays the reference.
            self.__dict__["decide"] = native.engine_decider(
                self,
                MethodType(Engine.decide, self),
                self._decide_one,
                self._decision_actor.enqueue if self._records_on else None,
                self.sticky_buckets.note,
                self.sticky_buckets.by_project,
                LATENCY_SAMPLE,
            )

    @property
    def snapshot(self) -> Snapshot:
        """The configuration snapshot in force now."""
        return self._snapshot

    def experiments(self) -> Iterable[Experiment]:
        """Every experiment of every project in the snapshot (compaction reads them)."""
        return self._snapshot.experiments.values()

    def metrics_of(self, project_id: str) -> Iterable[Metric]:
        return [m for (pid, _), m in self._snapshot.metrics.items() if pid == project_id]

    async def next_snapshot(self, after: int) -> Snapshot:
        """The snapshot in force once its version is above ``after``: at once when it
        already is, else when the next one is published (a change made here, on another
        node through the store's change feed, or a ``refresh``). For whatever serves a
        view of the configuration and must follow it, e.g. streaming SDK payloads.
        Versions only grow, but a new version does not promise a different
        configuration: compare what you derive from it."""
        while self._snapshot.version <= after:
            await self._snapshot_published.wait()
        return self._snapshot

    @property
    def mailboxes(self) -> tuple[Mailbox[Any], ...]:
        return (self.decision, self.ingestion, self.guardrail)

    async def refresh(self) -> SnapshotPublished:
        """Compile and publish a snapshot now, and wait until it is in force."""
        result = await self.decision.request(RefreshSnapshot(reason="requested"))
        assert isinstance(result, SnapshotPublished)
        return result

    # --- deciding ---------------------------------------------------------------------

    def project_id(self, project: str | None = None) -> str:
        """The id of ``project`` (a key), else of the configured default project, else of
        the only project there is. Unknown projects decide ``flag_not_found``, so an
        unknown key maps to an id no flag has."""
        key = project if project is not None else self.config.project
        snapshot = self._snapshot
        if key is not None:
            return snapshot.project_ids.get(key, "")
        if len(snapshot.project_ids) == 1:
            return next(iter(snapshot.project_ids.values()))
        raise ValidationFailed(
            "name a project: decide(..., project=KEY) or EngineConfig.project",
            code="project_required",
        )

    def decide(
        self,
        flag: str,
        subject: str,
        attributes: Mapping[str, Any] | None = None,
        *,
        project: str | None = None,
        sticky: StickyDocs | None = None,
    ) -> Decision:
        """Decide one flag for one subject: synchronous, no I/O, from the snapshot in
        force. Its record is queued to the decision actor (``decision_records`` mode);
        use ``adecide`` when the record must be durable before you act on it.

        Sticky experiments read the subject's sticky documents from ``sticky`` if given,
        else from the engine's cache (see ``load_sticky_buckets``); a new assignment is
        cached and written behind."""
        # The hot path: every attribute read here is precomputed, and latency is timed on
        # one decision in LATENCY_SAMPLE (quantiles of a uniform sample are unbiased; two
        # clock reads per decision would cost a tenth of the decision).
        snapshot = self._snapshot
        if project is None:
            project_id = self._default_project_id
            if project_id is None:
                project_id = self.project_id(None)  # raises: which project is ambiguous
        else:
            project_id = snapshot.project_ids.get(project, "")
        self.decisions_made = n = self.decisions_made + 1
        timed = not n % LATENCY_SAMPLE
        if timed:
            started = perf_counter()
        if project_id in snapshot.sticky_projects:
            # Past the decision cache (an outcome depends on the subject's documents too),
            # from ``sticky`` or the engine's cache; a new assignment is cached and
            # written behind. Inline: a method call here costs a tenth of a decision.
            if sticky is None:
                sticky = self._sticky_docs.get(project_id)
                if sticky is None:
                    sticky = self.sticky_buckets.view(project_id)
            decision = decide_core(snapshot, project_id, flag, subject, attributes, sticky=sticky)
            if decision.sticky_bucket is not None:
                self.sticky_buckets.note(project_id, decision.sticky_bucket)
        else:
            decision = self._decide_one(snapshot, project_id, flag, subject, attributes)
        if timed:
            self._decide_latency.observe(perf_counter() - started)
        if self._records_on:
            self._decision_actor.enqueue((decision,))
        if self._logs_exposures and decision.in_experiment:
            self._log_exposures((decision,))
        return decision

    def explain(
        self,
        flag: str,
        subject: str,
        attributes: Mapping[str, Any] | None = None,
        *,
        project_id: str,
    ) -> Decision:
        """What ``decide`` would answer now, from the snapshot in force, with nothing
        recorded, cached or logged as an exposure (the console's playground): trying a
        subject out must not enter it into an experiment's data."""
        return decide_core(self._snapshot, project_id, flag, subject, attributes)

    def _decide_sticky(
        self,
        snapshot: Snapshot,
        project_id: str,
        flag: str,
        subject: str,
        attributes: Mapping[str, Any] | None,
        sticky: StickyDocs | None,
    ) -> Decision:
        """Decide in a project with sticky experiments, as ``decide`` does inline."""
        docs = self.sticky_buckets.view(project_id) if sticky is None else sticky
        decision = decide_core(snapshot, project_id, flag, subject, attributes, sticky=docs)
        if decision.sticky_bucket is not None:
            self.sticky_buckets.note(project_id, decision.sticky_bucket)
        return decision

    def sticky_keys(
        self, project_id: str, subject: str, attributes: Mapping[str, Any] | None
    ) -> list[tuple[str, str]]:
        """The (attribute, value) pairs whose sticky documents deciding this subject in
        this project may read."""
        names = self._sticky_attributes.get(project_id)
        if not names:
            return []
        # As decide reads them: an id among the attributes is kept as given.
        attrs = (
            attributes
            if attributes is not None and "id" in attributes
            else {**(attributes or {}), "id": subject}
        )
        keys = []
        for name in names:
            value = hash_value(attrs, name, None)
            if value:
                keys.append((name, value))
        return keys

    async def load_sticky_buckets(
        self,
        subjects: Sequence[tuple[str, Mapping[str, Any] | None]],
        *,
        project: str | None = None,
    ) -> None:
        """Read the sticky documents of these (subject, attributes) pairs that are not
        cached yet, in one batch, so the synchronous ``decide`` finds them. Call it once per
        request (or user session) before deciding, where an ``await`` is cheap."""
        project_id = self.project_id(project)
        keys = [k for s, a in subjects for k in self.sticky_keys(project_id, s, a)]
        await self.sticky_buckets.load(project_id, keys)

    async def _adecide_sticky(
        self,
        snapshot: Snapshot,
        project_id: str,
        requests: Sequence[tuple[str, str, Mapping[str, Any] | None]],
    ) -> list[Decision]:
        """The durable path: documents read first (cache misses, one batch), decisions
        made, new assignments stored before returning; a subject another process assigned
        meanwhile is decided again from the stored document (the first write wins)."""
        keys = [k for _, s, a in requests for k in self.sticky_keys(project_id, s, a)]
        await self.sticky_buckets.load(project_id, keys)
        docs = self.sticky_buckets.view(project_id)
        decisions = [
            decide_core(snapshot, project_id, f, s, a, sticky=docs) for f, s, a in requests
        ]
        writes = [d.sticky_bucket for d in decisions if d.sticky_bucket is not None]
        if not writes:
            return decisions
        stored = await self.sticky_buckets.persist(project_id, writes)
        out = []
        for (f, s, a), d in zip(requests, decisions, strict=True):
            w = d.sticky_bucket
            if w is not None and stored.get((w.attribute, w.value), {}).get(w.key) != w.variant:
                d = decide_core(snapshot, project_id, f, s, a, sticky=docs)
            out.append(d)
        return out

    def decide_all(
        self,
        subject: str,
        attributes: Mapping[str, Any] | None = None,
        *,
        project: str | None = None,
    ) -> list[Decision]:
        """Every flag of the project for one subject (synchronous, like ``decide``)."""
        started = perf_counter()
        project_id = self.project_id(project)
        snapshot = self._snapshot
        if project_id in snapshot.sticky_projects:
            decisions = [
                self._decide_sticky(snapshot, project_id, key, subject, attributes, None)
                for key in snapshot.project_flags.get(project_id, {})
            ]
        else:
            decisions = self.decision_cache.get_or_decide_all(
                snapshot, project_id, subject, attributes
            )
        self._decide_latency.observe(perf_counter() - started)
        self.decisions_made += len(decisions)
        self._queue_records(decisions)
        self._log_exposures(decisions)
        return decisions

    async def adecide(
        self,
        flag: str,
        subject: str,
        attributes: Mapping[str, Any] | None = None,
        *,
        project: str | None = None,
    ) -> Decision:
        """``decide``, returning only once the record is durable where it must be: every
        ``experiment_assigned`` decision, and every decision in ``sync`` mode."""
        started = perf_counter()
        snapshot = self._snapshot
        project_id = self.project_id(project)
        if project_id in snapshot.sticky_projects:
            [decision] = await self._adecide_sticky(
                snapshot, project_id, [(flag, subject, attributes)]
            )
        else:
            decision = self.decision_cache.get_or_decide(
                snapshot, project_id, flag, subject, attributes
            )
        self._decide_latency.observe(perf_counter() - started)
        self.decisions_made += 1
        await self.record_decisions([decision])
        if decision.in_experiment:
            self._log_exposures((decision,))
        return decision

    async def adecide_many(
        self, requests: Sequence[tuple[str, str, Mapping[str, Any] | None]], *, project_id: str
    ) -> list[Decision]:
        """Decide (flag, subject, attributes) triples in one project; records as
        ``adecide`` does, written in one batch."""
        started = perf_counter()
        snapshot = self._snapshot
        if project_id in snapshot.sticky_projects:
            decisions = await self._adecide_sticky(snapshot, project_id, requests)
        else:
            get = self.decision_cache.get_or_decide
            decisions = [get(snapshot, project_id, f, s, a) for f, s, a in requests]
        if decisions:
            per = (perf_counter() - started) / len(decisions)
            for _ in decisions:
                self._decide_latency.observe(per)
            self.decisions_made += len(decisions)
        await self.record_decisions(decisions)
        self._log_exposures(decisions)
        return decisions

    async def record_decisions(self, decisions: Sequence[Decision]) -> None:
        """Write records per the mode: durable ones are awaited (group commit by the
        decision actor), the rest are queued."""
        mode = self.config.decision_records
        if mode == "disabled" or not decisions:
            return
        if mode == "sync":
            durable, queued = list(decisions), []
        else:
            durable = [d for d in decisions if d.reason is Reason.EXPERIMENT_ASSIGNED]
            queued = [d for d in decisions if d.reason is not Reason.EXPERIMENT_ASSIGNED]
        if queued:
            self._queue_records(queued)
        if durable:
            await self._decision_actor.record(durable)

    def _queue_records(self, decisions: Sequence[Decision]) -> None:
        if self.config.decision_records == "disabled" or not decisions:
            return
        # Never waits: the actor gathers these into its next batch (or drops and counts
        # them past its bound).
        self._decision_actor.enqueue(decisions)

    def _log_exposures(self, decisions: Sequence[Decision]) -> None:
        """Experiments with ``log_exposures_on_assignment`` get an exposure for every
        assignment, sent to the ingestion actor without waiting. The decision id is the
        event id, so a repeated send is a duplicate, and first exposure wins anyway."""
        if not self._logs_exposures:
            return
        snapshot = self._snapshot
        by_project: dict[str, list[Exposure]] = {}
        for d in decisions:
            if not d.in_experiment or d.experiment is None:
                continue
            experiment = snapshot.experiments.get((d.project_id, d.experiment))
            if experiment is None or not experiment.log_exposures_on_assignment:
                continue
            by_project.setdefault(d.project_id, []).append(
                Exposure(
                    experiment=d.experiment,
                    subject=d.subject,
                    variant=d.variant or "",
                    event_id=d.decision_id,
                    timestamp=datetime.fromtimestamp(d.decided_at, UTC),
                )
            )
        for project_id, exposures in by_project.items():
            message = RecordEvents(
                project_id=project_id,
                principal_id="decide",
                events=list(exposures),
                received_at=datetime.now(UTC),
            )
            try:
                self.ingestion.send_nowait(message)
            except EngineOverloaded:
                # Never block a decision on ingestion; the loss is counted.
                self.exposures_dropped += len(exposures)

    async def get_decision(self, decision_id: str) -> Decision | None:
        return await self.store.get_decision(decision_id)

    async def decision_expired(self, decision_id: str) -> bool:
        """Whether an unknown decision id belongs to a record past retention."""
        return await self.store.decision_expired(decision_id)

    @property
    def retention(self) -> Retention:
        """The data lifecycle (retention policy, expiry runs); the leader runs it."""
        retention = self._guardrail_actor.retention
        assert retention is not None
        return retention

    @property
    def decision_stats(self) -> dict[str, int]:
        actor = self._decision_actor
        cache = self.decision_cache
        return {
            "records_written": actor.records_written,
            "records_dropped": actor.records_dropped,
            "record_batches": actor.record_batches,
            "cache_hits": cache.hits,
            "cache_misses": cache.misses,
        }

    # --- snapshots ------------------------------------------------------------------

    def _compile(self, state: ConfigState, version: int) -> Snapshot:
        snapshot = compile_snapshot(state, version, self.conditions)
        for e in snapshot.errors:
            log.warning(
                "snapshot %d: %s %s %s: %s %s", version, e.kind, e.key, e.field, e.code, e.message
            )
        return snapshot

    def _publish(self, snapshot: Snapshot) -> None:
        sticky: dict[str, set[str]] = {}
        for (project_id, _), e in snapshot.compiled_experiments.items():
            if e.sticky:
                names = sticky.setdefault(project_id, set())
                names.add(e.hash_attribute)
                if e.fallback_attribute is not None:
                    names.add(e.fallback_attribute)
        self._sticky_attributes = {p: tuple(sorted(n)) for p, n in sticky.items()}
        self._snapshot = snapshot
        self._logs_exposures = any(
            e.log_exposures_on_assignment for e in snapshot.experiments.values()
        )
        # The project decide uses when none is named, resolved once per snapshot.
        key = self.config.project
        if key is not None:
            self._default_project_id = snapshot.project_ids.get(key, "")
        elif len(snapshot.project_ids) == 1:
            self._default_project_id = next(iter(snapshot.project_ids.values()))
        else:
            self._default_project_id = None
        published, self._snapshot_published = self._snapshot_published, trio.Event()
        published.set()


class _Deferred:
    """Reads ``engine.metric_statistics`` at each call, so whoever embeds the engine may
    swap the statistics source after it is built."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def variant_statistics(
        self, experiment: Experiment, metrics: Sequence[Metric]
    ) -> Mapping[str, Mapping[str, MetricStats]]:
        return await self._engine.metric_statistics.variant_statistics(experiment, metrics)


@asynccontextmanager
async def open_engine(
    config: EngineConfig,
    *,
    store_factory: StoreFactory,
    builtin_plugins: Iterable[object] = (),
    load_entry_points: bool = True,
) -> AsyncIterator[Engine]:
    """Run an engine for the duration of the block.

    Leaving the block closes every inbox; each actor handles what is already queued and
    stops, then the store closes.
    """
    _notice_decide_path()
    plugins = build_plugin_manager(builtin_plugins, load_entry_points=load_entry_points)
    async with store_factory() as store:
        engine = Engine(config, store, plugins)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(engine.sticky_buckets.run)
            for mailbox in engine.mailboxes:
                await nursery.start(
                    _run_actor,
                    mailbox,
                    config.restart_backoff_seconds,
                    config.restart_backoff_max_seconds,
                )
            try:
                yield engine
            finally:
                for mailbox in engine.mailboxes:
                    await mailbox.send_channel.aclose()
                engine.sticky_buckets.close()


_noticed = False


def _notice_decide_path() -> None:
    """Once per process, one line when decide runs in pure Python (no compiler when assay
    was installed, a stale build, or ASSAY_PURE_PYTHON)."""
    global _noticed
    if not _noticed and COMPILED_STATUS != "compiled":
        _noticed = True
        log.warning("decide: %s", COMPILED_STATUS)


async def _run_actor(
    mailbox: Mailbox[Any],
    backoff: float,
    max_backoff: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with mailbox.receive_channel:
        await supervise(
            mailbox.actor,
            mailbox.receive_channel,
            backoff=backoff,
            max_backoff=max_backoff,
            task_status=task_status,
        )
