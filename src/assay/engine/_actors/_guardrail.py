"""The guardrail actor: checks running experiments on an interval and on demand, acts on
breaches, and delivers notifications from the outbox.

Leadership: among the engine processes sharing a database exactly one guardrail actor
leads (``Store.guardrail_leadership``). Every interval each actor asks for the lead: the
leader keeps it and runs a round (check every running experiment, finish unfinished
actions); a follower does nothing that round, and takes over once the leader's process is
gone (its lock is released with its connection). Only the leader delivers the outbox.
Checks someone asks for (``CheckGuardrails``) run in whichever process receives them; the
store's unique triggers and claims keep them from acting twice. The leader also runs the
data lifecycle (``Retention``: partitions ahead, expiry), so one process does it.

A round that fails (the database is away) is logged and tried again next interval rather
than crashing the actor: a restart would give up the lead for nothing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from assay.engine._actors._base import Actor
from assay.engine._messages import CheckGuardrails, GuardrailMessage, GuardrailsChecked, Ping, Pong

if TYPE_CHECKING:
    from assay.engine._guardrail_checks import GuardrailChecker, Outbox
    from assay.engine._guardrails import Leadership
    from assay.engine._ports import Store
    from assay.engine._retention import Retention

log = logging.getLogger("assay.engine.guardrails")

PURGE_EVERY_SECONDS = 3600.0
"""How often the leader deletes delivered notifications past their retention."""


class GuardrailActor(Actor[GuardrailMessage]):
    name = "guardrail"

    def __init__(
        self,
        interval_seconds: float,
        *,
        store: Store,
        checker: GuardrailChecker,
        outbox: Outbox,
        outbox_poll_seconds: float,
        retention: Retention | None = None,
    ) -> None:
        super().__init__()
        self._interval = interval_seconds
        self._store = store
        self.checker = checker
        self.outbox = outbox
        self._poll = outbox_poll_seconds
        self.retention = retention
        self._outbox_due = trio.Event()
        self._next_purge = float("-inf")
        self.purged = 0
        """Delivered notifications deleted past their retention, by this process."""
        self.leading = False
        """Whether this process led at its last attempt."""
        self._attempted = False
        self.rounds = 0
        """Rounds run as the leader."""
        self.checks = 0
        """Experiment checks run, periodic and on demand."""

    def wake_outbox(self) -> None:
        """New notifications were recorded: deliver now rather than at the next poll."""
        self._outbox_due.set()

    async def background(self) -> None:
        async with (
            self._store.guardrail_leadership() as leadership,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(self._deliver_forever)
            if self.retention is not None:
                nursery.start_soon(self._expire_forever, self.retention)
            # The lead is taken at once (so the outbox is served from the start), the first
            # round runs after one interval: a short-lived engine (the CLI's) checks only
            # what it is asked to.
            await self._lead(leadership)
            while True:
                await trio.sleep(self._interval)
                if await self._lead(leadership):
                    await self._round()

    async def _lead(self, leadership: Leadership) -> bool:
        leading = await leadership.acquire()
        first, self._attempted = not self._attempted, True
        if leading != self.leading:
            # The first outcome is part of starting up; a change later is news.
            log.log(
                logging.DEBUG if first else logging.INFO,
                "guardrail actor %s",
                "leads" if leading else "follows",
            )
            self.leading = leading
            if leading:
                self.wake_outbox()  # what an earlier leader left undelivered
        return leading

    async def _round(self) -> None:
        try:
            results = await self.checker.check_running()
        except Exception:
            log.exception("guardrail round failed; trying again in %.1fs", self._interval)
            return
        self.rounds += 1
        self.checks += len(results)
        if any(r.triggers for r in results):
            self.wake_outbox()

    async def _deliver_forever(self) -> None:
        while True:
            # Polled as well as woken: retries fall due, and other processes' on-demand
            # checks write notifications this process is not told about.
            with trio.move_on_after(self._poll):
                await self._outbox_due.wait()
            self._outbox_due = trio.Event()
            if not self.leading:
                continue
            try:
                await self.outbox.deliver_due()
            except Exception:
                log.exception("delivering guardrail notifications failed")
            if trio.current_time() >= self._next_purge:
                # Only delivered rows go, long after delivery: the outbox stays small
                # without ever losing one still to be sent.
                self._next_purge = trio.current_time() + PURGE_EVERY_SECONDS
                try:
                    self.purged += await self.outbox.purge_delivered()
                except Exception:
                    log.exception("purging delivered guardrail notifications failed")

    async def _expire_forever(self, retention: Retention) -> None:
        # Checked as often as the outbox is polled; expiry runs once per its own
        # interval, and only while this process leads.
        while True:
            if self.leading:
                await retention.tick(trio.current_time())
            await trio.sleep(self._poll)

    async def handle(self, message: GuardrailMessage) -> Any:
        match message:
            case CheckGuardrails():
                return await self._check(message)
            case Ping():
                return Pong(actor=self.name, handled=self.handled)

    async def _check(self, message: CheckGuardrails) -> GuardrailsChecked:
        if message.experiment is not None:
            result = await self.checker.check_experiment(
                message.experiment, requested_by=message.requested_by
            )
            results = [] if result is None else [result]
        else:
            results = await self.checker.check_running(message.project_id)
        self.checks += len(results)
        if any(r.triggers for r in results):
            self.wake_outbox()
        return GuardrailsChecked(checked=len(results), experiments=results)
