"""The ingestion actor: checks batches of exposures and conversions and writes them,
many batches per transaction, in several transactions at once.

A reader task takes messages from the inbox, checks each batch against the configuration
snapshot in force and adds the events that pass to the next group of a write lane. Each
lane has a writer task that commits one group at a time with a single store call, on its
own pooled connection. While a lane's group is being written, the batches arriving
meanwhile gather in its next one: under load a transaction carries many batches (up to
``max_group_events`` events), and when traffic is light a batch is written as soon as it
arrives, with no timer to wait for. With several lanes, PostgreSQL works on one lane's
transaction while another lane waits: for its commit to reach the disk, or for this
process (one thread) to stage its events, send them and answer its round trips. One
writer alone leaves the server idle in those gaps: it used about 0.7 of a core, and 1.1
with two lanes on two cores. One lane is the plain pipeline: one transaction in flight,
nothing split.

An event goes to the lane of its subject (a hash of it), so every event of one
(experiment, subject) goes through the same lane, in the order it arrived. The store's
fast path assumes that nothing else writes the keys of a batch meanwhile; per subject
(exposures, crossovers, pending conversions, the per-subject report rollup rows) that
still holds, lane by lane. The rollups' hourly rows are append-only deltas (migration
0004), so lanes do not queue on them. What lanes can still share is an ``event_id`` or
an idempotency key reused by events of different subjects: the store then meets a unique
violation and writes that batch again on its careful path (or retries it after a
deadlock), so each id and key is still taken once; which of those events takes it may
depend on which lane commits first.

A caller's batch may be split over several lanes. It is answered once, after every lane
holding some of its events has committed them, with the outcomes of its parts added up. A
batch none of whose events passed the checks rides with the first lane's next group, so
its caller is answered in turn as before. The reader waits, before checking a batch,
while any lane's next group is full: subjects hash evenly, so a batch of any size has
events for every lane, and waiting for one lane is in effect waiting for all.

Failure: a group the database refuses is written again batch by batch, so only the caller
whose batch it refuses gets an error; one the database cannot take (it is away) answers
each of its callers ``StoreUnavailable`` and the lane carries on. If the actor itself
crashes, every caller whose batch it took and has not answered gets ``ActorCrashed``, and
the supervisor restarts the actor; batches still in the inbox wait for the restart. A
caller is never answered with success unless all its parts committed; but the parts that
other lanes did commit stay written. A caller answered with an error may send
its batch again: events that carry an ``event_id`` or an idempotency key are then
de-duplicated, and exposures always are (first exposure wins); a conversion with neither
may be recorded twice.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import trio

from assay.engine._actors._base import Actor
from assay.engine._errors import ActorCrashed, AssayError, StoreUnavailable, ValidationFailed
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
WRITE_LANES = 2
"""Transactions in flight at once, by default: see the module's docstring."""
PURGE_INTERVAL_SECONDS = 300.0
"""How often expired pending conversions are purged."""
_ATTEMPTS = 3
"""Attempts at a group while the database is unavailable, before its callers are told."""
_CHECKPOINT_EVERY = 256
"""Events checked between two yields to other tasks: a 10,000-event batch must not hold
the Trio thread (and every decision waiting on it) for its whole check. Small, because
the writers' round trips to PostgreSQL wait for the same thread: at 1024 each trip waited
about 3 ms for a check to yield."""


class _Caller:
    """One batch: who to answer, and what the parts of it committed so far came to."""

    __slots__ = (
        "deduplicated",
        "envelope",
        "error",
        "pending",
        "received",
        "recorded",
        "rejected",
        "waiting",
    )

    def __init__(self, envelope: Envelope[Any], received: int, rejected: list[Rejection]) -> None:
        self.envelope = envelope
        self.received = received
        self.rejected = rejected
        self.waiting = 0
        """Parts of the batch not committed yet."""
        self.recorded = self.deduplicated = self.pending = 0
        self.error: AssayError | None = None
        """Set when a part of the batch could not be written: the caller's answer."""

    def fail(self, error: AssayError) -> None:
        self.error = error
        self.waiting -= 1

    def add(self, outcomes: Sequence[int]) -> None:
        recorded, duplicates, pending = count_outcomes(outcomes)
        self.recorded += recorded
        self.deduplicated += duplicates
        self.pending += pending
        self.waiting -= 1

    def result(self) -> EventsRecorded | AssayError:
        if self.error is not None:
            return self.error
        return EventsRecorded(
            received=self.received,
            recorded=self.recorded,
            deduplicated=self.deduplicated,
            pending=self.pending,
            rejected=self.rejected,
        )


class _Group:
    """Batches (or their parts) written together, in one transaction: ``parts`` holds, for
    each, its caller and where its events start in ``events`` and how many there are."""

    __slots__ = ("events", "parts")

    def __init__(self) -> None:
        self.events: list[StagedEvent] = []
        self.parts: list[tuple[_Caller, int, int]] = []

    def add(self, caller: _Caller, events: list[StagedEvent]) -> None:
        self.parts.append((caller, len(self.events), len(events)))
        self.events += events
        caller.waiting += 1


class _Lane:
    """One writer's groups: the one being written and the one gathering."""

    __slots__ = ("next", "work", "writing")

    def __init__(self) -> None:
        self.next = _Group()
        self.writing: _Group | None = None
        self.work = trio.lowlevel.ParkingLot()
        """The lane's writer waits here for a group."""


class _Pipeline:
    """What the reader and the writers share during one run of the actor."""

    def __init__(self, lanes: int) -> None:
        self.lanes = [_Lane() for _ in range(lanes)]
        self.checking: Envelope[Any] | None = None
        self.closing = False
        self.room = trio.lowlevel.ParkingLot()
        """The reader waits here while a lane's next group is full."""

    def full(self, limit: int) -> bool:
        return any(len(lane.next.events) >= limit for lane in self.lanes)

    def unanswered(self) -> list[Envelope[Any]]:
        envelopes = [] if self.checking is None else [self.checking]
        # A batch split over lanes is in several groups: one answer each, all the same.
        callers: dict[_Caller, None] = {}
        for lane in self.lanes:
            for group in (lane.writing, lane.next):
                if group is not None:
                    callers.update((part[0], None) for part in group.parts)
        envelopes += [caller.envelope for caller in callers if caller.waiting]
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
        write_lanes: int = WRITE_LANES,
    ) -> None:
        super().__init__()
        if write_lanes < 1:
            raise ValueError(f"write_lanes must be at least 1, not {write_lanes}")
        self._store = store
        self._snapshot = snapshot
        self._future_skew = future_skew
        self._max_age = max_age
        self._max_group_events = max_group_events
        self._purge_interval = purge_interval
        self._write_lanes = write_lanes
        self.groups_written = 0
        self.events_written = 0

    # --- the pipeline -------------------------------------------------------------------

    async def serve(self, inbox: trio.MemoryReceiveChannel[Envelope[IngestionMessage]]) -> None:
        pipeline = _Pipeline(self._write_lanes)
        try:
            async with trio.open_nursery() as nursery:
                for lane in pipeline.lanes:
                    nursery.start_soon(self._write_lane, pipeline, lane)
                async for envelope in inbox:
                    await self._take(envelope, pipeline)
                # Inbox closed and drained: the writers finish what is left, then stop.
                pipeline.closing = True
                for lane in pipeline.lanes:
                    lane.work.unpark_all()
        except BaseException as exc:
            # Cancelled too: nobody may be left waiting for an answer that never comes.
            error = ActorCrashed(f"the {self.name} actor failed; retry the request")
            error.__cause__ = exc
            for envelope in pipeline.unanswered():
                _answer(envelope, error)
            raise

    async def _take(self, envelope: Envelope[IngestionMessage], pipeline: _Pipeline) -> None:
        match envelope.message:
            case RecordEvents() as message:
                while pipeline.full(self._max_group_events):
                    await pipeline.room.park()
                pipeline.checking = envelope
                checked = await self._check(message)
                pipeline.checking = None
                if isinstance(checked, ValidationFailed):
                    _answer(envelope, checked)
                    self.handled += 1
                    return
                staged, rejected = checked
                caller = _Caller(envelope, len(message.events), rejected)
                lanes = pipeline.lanes
                # No await from here on: the caller is in every group it waits for before
                # any of them can be written.
                if len(lanes) == 1 or not staged:
                    lanes[0].next.add(caller, staged)
                    lanes[0].work.unpark_all()
                    return
                for lane, events in zip(lanes, _split(staged, len(lanes)), strict=True):
                    if events:
                        lane.next.add(caller, events)
                        lane.work.unpark_all()
            case PurgePending():
                pipeline.checking = envelope
                _answer(envelope, await self._purge_now())
                pipeline.checking = None
                self.handled += 1
            case Ping():
                _answer(envelope, Pong(actor=self.name, handled=self.handled))
                self.handled += 1

    async def _write_lane(self, pipeline: _Pipeline, lane: _Lane) -> None:
        while True:
            while not lane.next.parts:
                if pipeline.closing:
                    return
                await lane.work.park()
            group, lane.next = lane.next, _Group()
            lane.writing = group
            pipeline.room.unpark_all()
            results = await self._commit_group(group)
            # Committed: answer every caller whose last part this was. Nothing here
            # awaits, so a cancellation cannot land between the commit and the answers.
            for (caller, _, _), result in zip(group.parts, results, strict=True):
                if isinstance(result, AssayError):
                    caller.fail(result)
                else:
                    caller.add(result)
                if caller.waiting:
                    continue
                if caller.envelope.reply is None and caller.rejected:
                    # Nobody to tell (e.g. exposures logged on assignment): leave a trace.
                    log.debug(
                        "%d events rejected, e.g. %s", len(caller.rejected), caller.rejected[0]
                    )
                _answer(caller.envelope, caller.result())
                self.handled += 1
            lane.writing = None

    async def _commit_group(self, group: _Group) -> list[Sequence[int] | AssayError]:
        """Each part's outcomes, or the error that its caller gets. One transaction for the
        group; when the database refuses it for what some batch holds, each batch is written
        on its own, so one caller's bad input fails only that caller. When the database
        cannot be reached, every caller of the group gets ``StoreUnavailable`` and the
        actor carries on (nothing of the group was committed)."""
        try:
            try:
                outcomes = await self._commit_again(group.events)
            except StoreUnavailable:
                raise
            except Exception:
                # Once more first, whole: a connection dying under a write sometimes
                # fails it with an error that does not say so.
                log.info("writing a group failed; writing it again", exc_info=True)
                outcomes = await self._commit_again(group.events)
        except Exception as exc:
            if isinstance(exc, StoreUnavailable) or len(group.parts) == 1:
                log.warning("writing %d events failed", len(group.events), exc_info=True)
                return [_failure(exc)] * len(group.parts)
        else:
            return [outcomes[start : start + count] for _, start, count in group.parts]
        results: list[Sequence[int] | AssayError] = []
        for _, start, count in group.parts:
            try:
                results.append(await self._commit(group.events[start : start + count]))
            except Exception as exc:
                log.warning("writing a batch of %d events failed", count, exc_info=True)
                results.append(_failure(exc))
        return results

    async def _commit_again(self, events: list[StagedEvent]) -> Sequence[int]:
        """``_commit``, tried again at once when the database was unavailable (up to
        ``_ATTEMPTS`` in all): the pool replaces a connection the server closed, but may
        first hand out others it closed too, and a lost connection must not cost the
        callers anything. Were a failed attempt committed after all, ids and keys make
        its events duplicates now, and exposures always are."""
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return await self._commit(events)
            except StoreUnavailable:
                if attempt == _ATTEMPTS:
                    raise
                log.info("the database connection was lost; writing the group again")
        raise AssertionError("unreachable")

    async def _commit(self, events: list[StagedEvent]) -> Sequence[int]:
        """Write the events in one transaction; their outcomes, in order."""
        if not events:
            return ()
        outcomes = await self._store.record_events(events, now=datetime.now(UTC))
        self.groups_written += 1
        self.events_written += len(events)
        return outcomes

    # --- one message at a time (the runtime uses ``serve``; this serves direct calls) ---

    async def handle(self, message: IngestionMessage) -> Any:
        match message:
            case RecordEvents():
                checked = await self._check(message)
                if isinstance(checked, ValidationFailed):
                    raise checked
                staged, rejected = checked
                # A direct call has no other transaction to overlap with: no lanes.
                caller = _Caller(Envelope(message), len(message.events), rejected)
                caller.waiting = 1
                caller.add(await self._commit(staged))
                return caller.result()
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
        staged: list[StagedEvent] = []
        rejected: list[Rejection] = []
        for start in range(0, len(events), _CHECKPOINT_EVERY):
            if start:
                await trio.lowlevel.checkpoint()
            stop = min(start + _CHECKPOINT_EVERY, len(events))
            checker.check_into(events, start, stop, staged, rejected)
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

    async def _purge_now(self) -> PendingPurged | AssayError:
        try:
            purged = await self._store.purge_pending(datetime.now(UTC))
        except Exception as exc:
            # Only the caller who asked learns of it; batches in flight are unaffected.
            if isinstance(exc, StoreUnavailable):
                return exc
            error = ActorCrashed("purging pending conversions failed")
            error.__cause__ = exc
            return error
        return PendingPurged(purged=purged)


def _failure(exc: Exception) -> AssayError:
    """What a caller is told when its events could not be written: never the text of an
    exception from inside (it may carry anything, the caller's own input included)."""
    if isinstance(exc, StoreUnavailable):
        return exc
    return ActorCrashed("the events could not be written; nothing of this batch was recorded")


def _split(events: list[StagedEvent], lanes: int) -> list[list[StagedEvent]]:
    """The events by lane: the lane of an event is its subject's."""
    parts: list[list[StagedEvent]] = [[] for _ in range(lanes)]
    appends = [part.append for part in parts]
    for event in events:
        # The subject alone, not (experiment, subject): no tuple to build per event, and
        # keeping a subject's events of every experiment together is as safe.
        appends[hash(event[3]) % lanes](event)
    return parts


def _answer(envelope: Envelope[Any], value: Any) -> None:
    if envelope.reply is None:
        return
    # The caller may have stopped waiting (cancelled); its batch was handled all the same.
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        envelope.reply.send_nowait(value)
