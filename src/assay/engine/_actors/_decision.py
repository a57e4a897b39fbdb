"""The decision actor: compiles configuration into snapshots and publishes them, and writes
decision records.

Snapshots: it recompiles when told (``RefreshSnapshot``), when this process changes
configuration, and when any other process does (the store's change feed), coalescing bursts
of changes into one compile. A change made in this process is waited for (``catch_up``):
the service returns only once a snapshot loaded after its commit is in force, so the
engine's own decide and ingestion read its writes. Snapshots are compiled one at a time, so
an older load is never published over a newer one.

The change feed announces this process's own changes too, usually while ``catch_up``'s
load runs or just after. Each announcement names its change and each load says which
changes it holds (``ConfigHorizon``), so an announced change is loaded again only when no
snapshot published since holds it: an own write costs one load, not two. An announcement
that names nothing (the feed reconnected), or a load that cannot say what it holds, is
settled only by a load started after it, as every announcement was before.

Records (from ``record`` and ``enqueue``, direct calls on the hot path, or from
``RecordDecisions`` messages) are group-committed. While one batch is being written, new
records gather; the next write takes all of them. Writes start at most once per
``decision_records_write_interval_seconds``: under load records gather for up to that long,
so batches are fewer and larger; when writes are rarer nobody waits.
Callers that asked for an answer (durable records: every ``experiment_assigned`` decision,
and all records in ``sync`` mode) get it only after their batch committed; fire-and-forget
records (``async`` mode) ride along in the same batches.

Faults: the change feed, the record writer and snapshot reloads each retry on their own, so
none stops another. A failed write is retried at once; while the database stays away the
durable callers get ``StoreUnavailable`` and fire-and-forget records wait (bounded) for it
to return. A durable caller arriving while the writer backs off is told at once rather
than after the next attempt: the writer has just learnt the database is away. A record
the database refuses (what it holds) is isolated by splitting its batch: only its own
caller learns of it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import trio

from assay.engine._actors._base import Actor, answer
from assay.engine._core import Decision, Snapshot
from assay.engine._errors import ActorCrashed, StoreUnavailable
from assay.engine._messages import (
    DecisionMessage,
    DecisionsRecorded,
    Envelope,
    Ping,
    Pong,
    RecordDecisions,
    RefreshSnapshot,
    SnapshotPublished,
)
from assay.engine._ports import ConfigHorizon, ConfigState, Store

log = logging.getLogger("assay.engine.decision")

Compiler = Callable[[ConfigState, int], Snapshot]

MAX_BATCH = 5_000
"""Records per write: large enough to amortise the round trip, small enough to keep the
latency of the callers waiting on it low."""
MAX_PENDING = 200_000
"""Fire-and-forget records held at most (also while the database is away); beyond this
they are dropped and counted, since the hot path must never wait on the database."""
_IMMEDIATE_RETRIES = 3
"""Failed writes in a row retried at once, before durable callers are told: when the
server closed every pooled connection, the pool may hand out one it has not noticed yet."""
_DRAIN_GIVE_UP = 5
"""Failed writes in a row after which stopping gives up what is left."""
_NOT_RECORDED = "the database is unavailable: the decision was not recorded"


def _backoff(failures: int) -> float:
    """Seconds before retrying after ``failures`` failures in a row: 0.1 doubling to 1."""
    return float(min(1.0, 0.05 * 2**failures))


class DecisionActor(Actor[DecisionMessage]):
    name = "decision"

    def __init__(
        self,
        store: Store,
        compile_snapshot: Compiler,
        publish: Callable[[Snapshot], None],
        *,
        write_interval: float = 0.0,
    ) -> None:
        super().__init__()
        self._store = store
        self._write_interval = write_interval
        self._last_write = float("-inf")
        self._compile = compile_snapshot
        self._publish = publish
        self._version = 0
        self._dirty = trio.Event()
        self._refreshing = trio.Lock()
        # Read-your-writes: catch_up() takes a ticket, kept with the caller's changes
        # until a load holds them all or a load started after the ticket was taken ends
        # (a failed one too: it gives up on it).
        self._tickets = 0
        self._catch_ups: dict[int, Sequence[int | None]] = {}
        self._settled_changed = trio.Event()
        # The change feed: what the snapshot in force holds, and the announced changes it
        # may not hold, each with the number of loads started when it was announced (a
        # load started later holds it, whatever it can say about itself).
        self._horizon: ConfigHorizon | None = None
        self._loads_started = 0
        self._unheld: list[tuple[int, int | None]] = []
        self.changes_announced = 0
        """Changes the store's feed announced (``None`` ones included)."""
        self.changes_settled = 0
        """Announced changes that a published snapshot holds (equal to the above when no
        load is due); those held when announced cost no load at all."""
        self._pending: list[Decision] = []
        self._closed = False
        self._waiters: list[tuple[int, int, trio.MemorySendChannel[Any]]] = []
        self._failures = 0
        """Failed writes in a row."""
        self._backing_off = False
        """The writer is waiting out a back-off: the last attempts found the database away."""
        self._records_ready = trio.Event()
        self._batch_done = trio.Event()
        self.records_written = 0
        self.records_dropped = 0
        self.record_batches = 0

    def mark_dirty(self, change: int | None = None) -> None:
        """The store announced a committed change (``None``: one it cannot name). Safe to
        call from anywhere in the Trio thread; never blocks. A change the snapshot in force
        already holds (typically this process's own, loaded for ``catch_up``) is settled
        here and costs no load."""
        self.changes_announced += 1
        if change is not None and self._holds((change,), self._horizon):
            self.changes_settled += 1
            return
        self._unheld.append((self._loads_started, change))
        self._dirty.set()

    async def catch_up(self, changes: Sequence[int | None] = (None,)) -> None:
        """Return once the snapshot in force holds ``changes``, committed by this process
        (``StoreTransaction.change``; ``None``, a change the store cannot name, is held by
        any snapshot loaded after this call): they are then visible to decide and
        ingestion. Concurrent calls share one load, and so does the change feed's
        announcement of the same changes: a load it started (the announcement may come
        back before this is called) ends the wait if it holds them. If the load fails
        (the store went away right after the commit) this returns anyway and the
        snapshot follows when the store is back: the write is committed and must not be
        reported as failed."""
        if self._closed or self._holds(changes, self._horizon):
            return
        self._tickets += 1
        ticket = self._tickets
        self._catch_ups[ticket] = changes
        self._dirty.set()
        while ticket in self._catch_ups and not self._closed:
            await self._settled_changed.wait()

    @staticmethod
    def _holds(changes: Sequence[int | None], horizon: ConfigHorizon | None) -> bool:
        return horizon is not None and all(c is not None and horizon.holds(c) for c in changes)

    def _load_due(self) -> bool:
        """Whether an announced change or a ``catch_up`` waits for a load."""
        return bool(self._unheld or self._catch_ups)

    def _settle_changes(self, load: int, horizon: ConfigHorizon | None) -> None:
        """Load number ``load``, holding ``horizon``, is in force: forget the announced
        changes it holds. Any left were announced while it ran and set ``_dirty``, which
        is cleared only before a load starts, so the next load is due."""
        self._horizon = horizon
        unheld = [
            (announced_at, change)
            for announced_at, change in self._unheld
            if announced_at >= load and not (change is not None and self._holds((change,), horizon))
        ]
        self.changes_settled += len(self._unheld) - len(unheld)
        self._unheld = unheld

    def _settle(self, started: int, horizon: ConfigHorizon | None) -> None:
        """A load has ended (published holding ``horizon``, or failed: None): the
        catch-ups whose ticket was taken before it started (``started``: the last ticket
        then) are over, and so are those whose changes it holds."""
        settled = [
            ticket
            for ticket, changes in self._catch_ups.items()
            if ticket <= started or self._holds(changes, horizon)
        ]
        for ticket in settled:
            del self._catch_ups[ticket]
        if settled:
            self._settled_changed.set()
            self._settled_changed = trio.Event()

    async def setup(self) -> None:
        await self._refresh()

    async def background(self) -> None:
        # Three independent loops, none of which may take the others down: a lost
        # connection under the record writer must not stop the change feed, and a
        # snapshot that cannot be reloaded while the database is away is retried.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_config)
            nursery.start_soon(self._write_records)
            failures = 0
            while True:
                await self._dirty.wait()
                self._dirty = trio.Event()
                if not failures and not self._load_due():
                    # Whatever woke us was settled meanwhile, by a load already running
                    # when it was announced (this process's own write and its catch_up).
                    continue
                try:
                    await self._refresh()
                except Exception:
                    failures += 1
                    log.warning("reloading the configuration failed; retrying", exc_info=True)
                    self._dirty.set()
                    await trio.sleep(_backoff(failures))
                else:
                    failures = 0

    async def _watch_config(self) -> None:
        failures = 0
        while True:
            try:
                await self._store.watch_config(self.mark_dirty)
            except Exception:
                failures += 1
                log.warning("the configuration change feed failed; restarting", exc_info=True)
                await trio.sleep(_backoff(failures))

    async def receive(self, envelope: Envelope[DecisionMessage]) -> None:
        message = envelope.message
        if isinstance(message, RecordDecisions):
            self._queue(message.decisions, envelope.reply)
            return
        await super().receive(envelope)

    async def handle(self, message: DecisionMessage) -> Any:
        match message:
            case RefreshSnapshot():
                return await self._refresh()
            case Ping():
                return Pong(actor=self.name, handled=self.handled)
            case RecordDecisions():  # pragma: no cover - receive() takes these
                raise AssertionError("RecordDecisions is handled in receive")

    def enqueue(self, decisions: Sequence[Decision]) -> None:
        """Fire-and-forget records from the synchronous decide path. A direct call rather
        than a message: one message per decision cost more than the decision itself. It
        only appends to the batch being gathered (bounded by MAX_PENDING) and wakes the
        writer, which is exactly what handling a ``RecordDecisions`` without a reply does."""
        self._queue(decisions, None)

    async def record(self, decisions: Sequence[Decision]) -> DecisionsRecorded:
        """Durable records: queue them and return once they are written.

        What handling ``RecordDecisions`` with a reply does, called directly (as
        ``enqueue`` is for fire-and-forget records): every assignment comes with a durable
        record, and the trip through the inbox (a message, the actor's task woken to move
        it to the queue) cost as much as the rest of waiting for a group commit. The writer
        answers the reply channel as it answers a message's; a failed write raises
        ``ActorCrashed`` here."""
        if self._closed:
            raise ActorCrashed("the engine is closed: decision records are no longer written")
        reply, answered = trio.open_memory_channel[Any](1)
        self._queue(decisions, reply)
        async with answered:
            result = await answered.receive()
        if isinstance(result, ActorCrashed | StoreUnavailable):
            raise result
        assert isinstance(result, DecisionsRecorded)
        return result

    async def drain(self) -> None:
        # The writer runs in background(); wait for it to empty the queue, for as long as
        # it makes progress: with the database away, shutdown must not wait for it.
        while self._pending or self._waiters:
            if self._failures >= _DRAIN_GIVE_UP:
                self.records_dropped += len(self._pending)
                self._fail_waiters(keep_async=False)
                log.error("stopping with the database unavailable: decision records lost")
                break
            self._batch_done = trio.Event()
            await self._batch_done.wait()
        # The writer stops with the actor: from now on nobody would answer a caller.
        self._closed = True
        self._settled_changed.set()

    def _queue(
        self, decisions: Sequence[Decision], reply: trio.MemorySendChannel[Any] | None
    ) -> None:
        if reply is None and len(self._pending) >= MAX_PENDING:
            self.records_dropped += len(decisions)
            return
        if reply is not None and self._backing_off:
            # The writer just found the database away and waits before trying again:
            # waiting for that attempt would only delay the same answer (up to a second).
            # Not queued, so nothing of the caller's is written later behind its back.
            answer(reply, StoreUnavailable(_NOT_RECORDED))
            return
        if reply is not None:
            # Answered when every record up to its end has been written; [start, end) are
            # its own records, given up if it is told that writing failed.
            start = self.records_written + len(self._pending)
            self._waiters.append((start, start + len(decisions), reply))
        self._pending.extend(decisions)
        self._records_ready.set()

    async def _write_records(self) -> None:
        """Write what is pending, batch after batch. A failed batch is written again (on a
        fresh connection: the pool replaces a lost one), so a dropped connection costs
        nobody anything. When the third attempt fails too (the database is away), the
        durable callers are told (``StoreUnavailable``) and their records given up, as are
        those of durable callers arriving during the back-off before the next attempt; the
        fire-and-forget ones stay queued (up to ``MAX_PENDING``) and are written once the
        database is back. Writes after a failure skip records already there: the failed
        attempt may have committed without the answer reaching us."""
        while True:
            await self._records_ready.wait()
            self._records_ready = trio.Event()
            while self._pending:
                if self._write_interval:
                    # Let the batch gather when the last write started a moment ago. A
                    # write costs a round trip and a commit whatever its size (through
                    # trio-asyncio, ~200 us of this process's CPU); under load the next
                    # batch would otherwise start as soon as the last commit returned:
                    # hundreds of tiny batches a second. Durable callers then wait up to
                    # the interval longer; when writes are rarer than that, not at all.
                    wait = self._last_write + self._write_interval - trio.current_time()
                    if wait > 0:
                        await trio.sleep(wait)
                    self._last_write = trio.current_time()
                batch = self._pending[:MAX_BATCH]
                try:
                    rejected = await self._write(batch, again=self._failures > 0)
                except Exception:
                    self._failures += 1
                    log.warning(
                        "writing %d decision records failed (attempt %d)",
                        len(batch),
                        self._failures,
                        exc_info=True,
                    )
                    if self._failures >= _IMMEDIATE_RETRIES:
                        self._fail_waiters(keep_async=True)
                    self._batch_done.set()
                    if self._failures >= _IMMEDIATE_RETRIES:
                        # Only for the wait itself: the next attempt is made as before,
                        # and durable callers arriving during it wait for its outcome.
                        self._backing_off = True
                        try:
                            await trio.sleep(_backoff(self._failures))
                        finally:
                            self._backing_off = False
                    continue
                self._failures = 0
                first = self.records_written
                del self._pending[: len(batch)]
                self.records_written += len(batch)
                self.records_dropped += len(rejected)
                self.record_batches += 1
                self._answer_waiters({first + i for i in rejected})
                self._batch_done.set()

    async def _write(self, batch: list[Decision], *, again: bool) -> list[int]:
        """Write ``batch``; the positions of records refused for what they hold. A record
        the database refuses must not fail the others (another caller's): a refused batch
        is split in halves until the refused records stand alone. A database that cannot
        be reached is not a refused record: ``StoreUnavailable`` propagates."""
        try:
            await self._store.record_decisions(batch, again=again)
        except StoreUnavailable:
            raise
        except Exception:
            try:
                # Once more first, whole: a connection dying under a write sometimes
                # fails it with an error that does not say so.
                await self._store.record_decisions(batch, again=True)
            except StoreUnavailable:
                raise
            except Exception:
                pass
            else:
                return []
            if len(batch) == 1:
                log.exception("a decision record was refused: %r", batch[0])
                return [0]
            half = len(batch) // 2
            left = await self._write(batch[:half], again=True)
            right = await self._write(batch[half:], again=True)
            return left + [half + i for i in right]
        return []

    def _answer_waiters(self, rejected: set[int]) -> None:
        done = self.records_written
        keep = []
        for start, end, reply in self._waiters:
            if end > done:
                keep.append((start, end, reply))
            elif rejected and any(start <= i < end for i in rejected):
                answer(reply, ActorCrashed("a decision record could not be written"))
            else:
                answer(reply, DecisionsRecorded(count=end))
        self._waiters = keep

    def _fail_waiters(self, *, keep_async: bool) -> None:
        """The database is away: nobody waiting may be told their records are safe. The
        durable callers' records are given up (they were not acknowledged; the callers
        may retry), fire-and-forget ones are kept for later when ``keep_async``."""
        error = StoreUnavailable(_NOT_RECORDED)
        base = self.records_written
        given_up = [False] * len(self._pending)
        for start, end, reply in self._waiters:
            answer(reply, error)
            for i in range(max(start - base, 0), min(end - base, len(given_up))):
                given_up[i] = True
        self._waiters = []
        if keep_async:
            self._pending = [d for d, gone in zip(self._pending, given_up, strict=True) if not gone]
        else:
            self._pending = []

    async def _refresh(self) -> SnapshotPublished:
        async with self._refreshing:
            ticket = self._tickets
            self._loads_started += 1
            load = self._loads_started
            horizon = None
            try:
                state = await self._store.load_config()
                self._version += 1
                snapshot = self._compile(state, self._version)
                self._publish(snapshot)
                horizon = state.horizon
                self._settle_changes(load, horizon)
            except Exception:
                log.warning("loading the configuration failed; changes still wait for it")
                raise
            finally:
                # On failure too: a caller of catch_up must not wait on a store that is
                # away; the next successful refresh (the actor restarts) publishes it.
                self._settle(ticket, horizon)
        log.debug("published snapshot %d", snapshot.version)
        return SnapshotPublished(
            version=snapshot.version, flags=len(state.flags), experiments=len(state.experiments)
        )
