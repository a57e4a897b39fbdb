"""The ingestion actor: checks batches of exposures and conversions and writes them,
many batches per transaction.

Two tasks share the work so that checking overlaps writing. The reader takes messages
from the inbox, checks each batch against the configuration snapshot in force and adds the
events that pass to the next group. The writer commits one group at a time with a single
store call and only then answers every caller in it. While one group is being written,
the batches arriving meanwhile gather in the next one: under load a transaction carries
many batches (up to ``max_group_events`` events), and when traffic is light a batch is
written as soon as it arrives, with no timer to wait for.

Failure: every caller whose batch the actor took and has not answered gets
``ActorCrashed``, and the supervisor restarts the actor; batches still in the inbox wait
for the restart. A caller answered with an error may send its batch again: events that
carry an ``event_id`` or an idempotency key are then de-duplicated, and exposures always
are (first exposure wins).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import trio

from assay.engine._actors._base import Actor
from assay.engine._errors import ActorCrashed, ValidationFailed
from assay.engine._events import (
    MAX_BATCH_EVENTS,
    EventChecker,
    EventsRecorded,
    Rejection,
    StagedEvent,
    count_outcomes,
)
from assay.engine._messages import (
    Envelope,
    IngestionMessage,
    PendingPurged,
    Ping,
    Pong,
    PurgePending,
    RecordEvents,
)

if TYPE_CHECKING:
    from assay.engine._core._snapshot import Snapshot
    from assay.engine._ports import Store

log = logging.getLogger("assay.engine.ingestion")

MAX_GROUP_EVENTS = 20_000
"""Events per transaction, at most (plus one batch): big enough to amortise a commit,
small enough that a transaction stays short."""
PURGE_INTERVAL_SECONDS = 300.0
"""How often expired pending conversions are purged."""
_CHECKPOINT_EVERY = 256
"""Events checked between two yields to other tasks: a 10,000-event batch must not hold
the Trio thread (and every decision waiting on it) for its whole check. Small, because
the writer's round trips to PostgreSQL wait for the same thread: at 1024 each trip waited
about 3 ms for a check to yield."""


class _Caller:
    """One batch inside a group: who to answer, and which events of the group are its."""

    __slots__ = ("count", "envelope", "received", "rejected", "start")

    def __init__(
        self, envelope: Envelope[Any], received: int, rejected: list[Rejection], start: int
    ) -> None:
        self.envelope = envelope
        self.received = received
        self.rejected = rejected
        self.start = start
        self.count = 0


class _Group:
    """Batches written together, in one transaction."""

    __slots__ = ("callers", "events")

    def __init__(self) -> None:
        self.events: list[StagedEvent] = []
        self.callers: list[_Caller] = []


class _Pipeline:
    """What the reader and the writer share during one run of the actor."""

    def __init__(self) -> None:
        self.next = _Group()
        self.writing: _Group | None = None
        self.checking: Envelope[Any] | None = None
        self.closing = False
        self.work = trio.lowlevel.ParkingLot()
        """The writer waits here for a group."""
        self.room = trio.lowlevel.ParkingLot()
        """The reader waits here while the next group is full."""

    def unanswered(self) -> list[Envelope[Any]]:
        envelopes = [] if self.checking is None else [self.checking]
        for group in (self.writing, self.next):
            if group is not None:
                envelopes += [caller.envelope for caller in group.callers]
        return envelopes


class IngestionActor(Actor[IngestionMessage]):
    name = "ingestion"

    def __init__(
        self,
        store: Store,
        snapshot: Callable[[], Snapshot],
        *,
        future_skew: timedelta = timedelta(minutes=5),
        max_age: timedelta = timedelta(days=30),
        max_group_events: int = MAX_GROUP_EVENTS,
        purge_interval: float = PURGE_INTERVAL_SECONDS,
    ) -> None:
        super().__init__()
        self._store = store
        self._snapshot = snapshot
        self._future_skew = future_skew
        self._max_age = max_age
        self._max_group_events = max_group_events
        self._purge_interval = purge_interval
        self.groups_written = 0
        self.events_written = 0

    # --- the pipeline -------------------------------------------------------------------

    async def serve(self, inbox: trio.MemoryReceiveChannel[Envelope[IngestionMessage]]) -> None:
        pipeline = _Pipeline()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_groups, pipeline)
                async for envelope in inbox:
                    await self._take(envelope, pipeline)
                # Inbox closed and drained: the writer finishes what is left, then stops.
                pipeline.closing = True
                pipeline.work.unpark_all()
        except BaseException as exc:
            # Cancelled too: nobody may be left waiting for an answer that never comes.
            error = ActorCrashed(f"{self.name} actor failed: {exc!r}")
            error.__cause__ = exc
            for envelope in pipeline.unanswered():
                _answer(envelope, error)
            raise

    async def _take(self, envelope: Envelope[IngestionMessage], pipeline: _Pipeline) -> None:
        match envelope.message:
            case RecordEvents() as message:
                while len(pipeline.next.events) >= self._max_group_events:
                    await pipeline.room.park()
                pipeline.checking = envelope
                checked = await self._check(message)
                pipeline.checking = None
                if isinstance(checked, ValidationFailed):
                    _answer(envelope, checked)
                    self.handled += 1
                    return
                staged, rejected = checked
                # No await between here and the append: ``start`` stays true.
                group = pipeline.next
                caller = _Caller(envelope, len(message.events), rejected, len(group.events))
                caller.count = len(staged)
                group.events += staged
                group.callers.append(caller)
                pipeline.work.unpark_all()
            case PurgePending():
                pipeline.checking = envelope
                _answer(envelope, await self._purge_now())
                pipeline.checking = None
                self.handled += 1
            case Ping():
                _answer(envelope, Pong(actor=self.name, handled=self.handled))
                self.handled += 1

    async def _write_groups(self, pipeline: _Pipeline) -> None:
        while True:
            while not pipeline.next.callers:
                if pipeline.closing:
                    return
                await pipeline.work.park()
            group, pipeline.next = pipeline.next, _Group()
            pipeline.writing = group
            pipeline.room.unpark_all()
            results = await self._write(group)
            # Committed: answer everyone. Nothing here awaits, so a cancellation cannot
            # land between the commit and the answers.
            for caller, result in zip(group.callers, results, strict=True):
                if caller.envelope.reply is None and caller.rejected:
                    # Nobody to tell (e.g. exposures logged on assignment): leave a trace.
                    log.debug(
                        "%d events rejected, e.g. %s", len(caller.rejected), caller.rejected[0]
                    )
                _answer(caller.envelope, result)
                self.handled += 1
            pipeline.writing = None

    async def _write(self, group: _Group) -> list[EventsRecorded]:
        """Commit the group's events; what to answer each caller in it."""
        outcomes: Sequence[int] = ()
        if group.events:
            outcomes = await self._store.record_events(group.events, now=datetime.now(UTC))
            self.groups_written += 1
            self.events_written += len(group.events)
        results = []
        for caller in group.callers:
            recorded, duplicates, pending = count_outcomes(
                outcomes[caller.start : caller.start + caller.count]
            )
            results.append(
                EventsRecorded(
                    received=caller.received,
                    recorded=recorded,
                    deduplicated=duplicates,
                    pending=pending,
                    rejected=caller.rejected,
                )
            )
        return results

    # --- one message at a time (the runtime uses ``serve``; this serves direct calls) ---

    async def handle(self, message: IngestionMessage) -> Any:
        match message:
            case RecordEvents():
                checked = await self._check(message)
                if isinstance(checked, ValidationFailed):
                    raise checked
                staged, rejected = checked
                group = _Group()
                group.events = staged
                caller = _Caller(Envelope(message), len(message.events), rejected, 0)
                caller.count = len(staged)
                group.callers.append(caller)
                return (await self._write(group))[0]
            case PurgePending():
                return await self._purge_now()
            case Ping():
                return Pong(actor=self.name, handled=self.handled)

    # --- checking -----------------------------------------------------------------------

    async def _check(
        self, message: RecordEvents
    ) -> tuple[list[StagedEvent], list[Rejection]] | ValidationFailed:
        events = message.events
        if len(events) > MAX_BATCH_EVENTS:
            return ValidationFailed(
                f"a batch holds at most {MAX_BATCH_EVENTS} events, not {len(events)}",
                code="batch_too_large",
                details={"max_events": MAX_BATCH_EVENTS, "received": len(events)},
            )
        snapshot = self._snapshot()
        checker = EventChecker(
            message.project_id,
            snapshot.experiments,
            snapshot.metrics,
            received_at=message.received_at,
            future_skew=self._future_skew,
            max_age=self._max_age,
        )
        check = checker.check
        staged: list[StagedEvent] = []
        rejected: list[Rejection] = []
        for start in range(0, len(events), _CHECKPOINT_EVERY):
            if start:
                await trio.lowlevel.checkpoint()
            for index in range(start, min(start + _CHECKPOINT_EVERY, len(events))):
                result = check(index, events[index])
                if type(result) is Rejection:
                    rejected.append(result)
                else:
                    assert isinstance(result, StagedEvent)
                    staged.append(result)
        return staged, rejected

    # --- purging ------------------------------------------------------------------------

    async def background(self) -> None:
        while True:
            await trio.sleep(self._purge_interval)
            try:
                purged = await self._store.purge_pending(datetime.now(UTC))
            except Exception:
                # Purging can wait for the next round; ingestion must not stop for it.
                log.warning("purging expired pending conversions failed", exc_info=True)
            else:
                if purged:
                    log.info("purged %d expired pending conversions", purged)

    async def _purge_now(self) -> PendingPurged | ActorCrashed:
        try:
            purged = await self._store.purge_pending(datetime.now(UTC))
        except Exception as exc:
            # Only the caller who asked learns of it; batches in flight are unaffected.
            error = ActorCrashed(f"purging pending conversions failed: {exc!r}")
            error.__cause__ = exc
            return error
        return PendingPurged(purged=purged)


def _answer(envelope: Envelope[Any], value: Any) -> None:
    if envelope.reply is None:
        return
    # The caller may have stopped waiting (cancelled); its batch was handled all the same.
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        envelope.reply.send_nowait(value)
