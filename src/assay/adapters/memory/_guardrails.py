"""Guardrail triggers, their outbox and traffic counts in process memory: the memory
Store's guardrail methods.

Records are kept msgspec-encoded, as everywhere in the memory store, so nobody can alter
what another caller was handed. Every method runs without awaiting between its first
change and its last, which makes it atomic in Trio's single thread (a trigger and its
notifications appear together). There is one process, so it always leads.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import msgspec
import trio

from assay.engine._guardrails import ActionStatus, GuardrailTrigger, Notification, Traffic

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from assay.adapters.memory._events import _EventTables


@dataclass
class _GuardrailTables:
    triggers: dict[str, bytes] = field(default_factory=dict)
    """Trigger id -> encoded trigger."""
    trigger_keys: dict[tuple[str, str, int], str] = field(default_factory=dict)
    """(experiment id, check, experiment revision) -> trigger id: the unique key."""
    leases: dict[str, datetime] = field(default_factory=dict)
    """Trigger id -> until when its ``acting`` claim holds."""
    outbox: dict[str, bytes] = field(default_factory=dict)
    """Notification id -> encoded notification."""


class _AlwaysLeader:
    async def acquire(self) -> bool:
        await trio.lowlevel.checkpoint()
        return True


_decode_trigger = msgspec.json.Decoder(GuardrailTrigger).decode
_decode_notification = msgspec.json.Decoder(Notification).decode


class MemoryGuardrailStore:
    """Mixed into ``MemoryStore``: the guardrail half of the Store port."""

    __tables: _GuardrailTables | None = None

    @property
    def _event_tables(self) -> _EventTables:
        raise NotImplementedError  # provided by MemoryEventStore, earlier in the MRO

    @property
    def _guardrail_tables(self) -> _GuardrailTables:
        # Created on first use, so the store's own constructor needs no change.
        if self.__tables is None:
            self.__tables = _GuardrailTables()
        return self.__tables

    async def guardrail_traffic(self, experiment_id: str) -> Traffic:
        await trio.lowlevel.checkpoint()
        t = self._event_tables
        crossed = {s for (x, s, _) in t.crossovers if x == experiment_id}
        exposures: dict[str, int] = defaultdict(int)
        assigned: dict[str, int] = defaultdict(int)
        last: datetime | None = None
        for (x, subject), exposure in t.exposures.items():
            if x != experiment_id:
                continue
            if last is None or exposure.exposed_at > last:
                last = exposure.exposed_at
            assigned[exposure.variant] += 1
            if subject not in crossed:
                exposures[exposure.variant] += 1
        return Traffic(
            exposures=dict(sorted(exposures.items())),
            crossovers=len(crossed),
            assigned=dict(sorted(assigned.items())),
            last_exposure_at=last,
        )

    async def record_trigger(
        self, trigger: GuardrailTrigger, notifications: Sequence[Notification]
    ) -> tuple[GuardrailTrigger, bool]:
        await trio.lowlevel.checkpoint()
        g = self._guardrail_tables
        unique = (trigger.experiment_id, trigger.check, trigger.experiment_revision)
        existing = g.trigger_keys.get(unique)
        if existing is not None:
            return _decode_trigger(g.triggers[existing]), False
        g.trigger_keys[unique] = trigger.id
        g.triggers[trigger.id] = msgspec.json.encode(trigger)
        for n in notifications:
            g.outbox[n.id] = msgspec.json.encode(n)
        return _decode_trigger(g.triggers[trigger.id]), True

    async def list_triggers(
        self,
        *,
        experiment_id: str | None,
        action_status: str | None = None,
        before: str | None = None,
        limit: int,
    ) -> list[GuardrailTrigger]:
        await trio.lowlevel.checkpoint()
        found: list[GuardrailTrigger] = []
        for trigger_id in sorted(self._guardrail_tables.triggers, reverse=True):
            if before is not None and trigger_id >= before:
                continue
            trigger = _decode_trigger(self._guardrail_tables.triggers[trigger_id])
            if experiment_id is not None and trigger.experiment_id != experiment_id:
                continue
            if action_status is not None and trigger.action_status != action_status:
                continue
            found.append(trigger)
            if len(found) >= limit:
                break
        return found

    async def claim_trigger(self, trigger_id: str, *, now: datetime, lease_until: datetime) -> bool:
        await trio.lowlevel.checkpoint()
        g = self._guardrail_tables
        raw = g.triggers.get(trigger_id)
        if raw is None:
            return False
        trigger = _decode_trigger(raw)
        lapsed = trigger.action_status == "acting" and g.leases.get(trigger_id, now) <= now
        if trigger.action_status != "pending" and not lapsed:
            return False
        g.triggers[trigger_id] = msgspec.json.encode(
            msgspec.structs.replace(trigger, action_status="acting")
        )
        g.leases[trigger_id] = lease_until
        return True

    async def settle_trigger(
        self, trigger_id: str, *, status: ActionStatus, result: str | None, at: datetime
    ) -> GuardrailTrigger | None:
        await trio.lowlevel.checkpoint()
        g = self._guardrail_tables
        raw = g.triggers.get(trigger_id)
        if raw is None:
            return None
        settled = msgspec.structs.replace(
            _decode_trigger(raw),
            action_status=status,
            action_result=result,
            acted_at=at,
        )
        encoded = msgspec.json.encode(settled)
        g.triggers[trigger_id] = encoded
        g.leases.pop(trigger_id, None)
        return _decode_trigger(encoded)

    async def list_notifications(
        self, *, experiment_id: str, before: str | None = None, limit: int
    ) -> list[Notification]:
        await trio.lowlevel.checkpoint()
        found: list[Notification] = []
        for notification_id in sorted(self._guardrail_tables.outbox, reverse=True):
            if before is not None and notification_id >= before:
                continue
            n = _decode_notification(self._guardrail_tables.outbox[notification_id])
            if n.experiment_id == experiment_id:
                found.append(n)
                if len(found) >= limit:
                    break
        return found

    async def due_notifications(self, now: datetime, *, limit: int) -> list[Notification]:
        await trio.lowlevel.checkpoint()
        due = [
            n
            for n in map(_decode_notification, self._guardrail_tables.outbox.values())
            if n.delivered_at is None and n.next_attempt_at <= now
        ]
        due.sort(key=lambda n: (n.next_attempt_at, n.id))
        return due[:limit]

    async def purge_delivered_notifications(self, before: datetime) -> int:
        await trio.lowlevel.checkpoint()
        outbox = self._guardrail_tables.outbox
        purged = [
            notification_id
            for notification_id, raw in outbox.items()
            if (delivered := _decode_notification(raw).delivered_at) is not None
            and delivered < before
        ]
        for notification_id in purged:
            del outbox[notification_id]
        return len(purged)

    async def record_delivery(
        self,
        notification_id: str,
        *,
        attempts: int,
        delivered_at: datetime | None,
        next_attempt_at: datetime,
        error: str | None,
    ) -> None:
        await trio.lowlevel.checkpoint()
        outbox = self._guardrail_tables.outbox
        raw = outbox.get(notification_id)
        if raw is None:
            return
        outbox[notification_id] = msgspec.json.encode(
            msgspec.structs.replace(
                _decode_notification(raw),
                attempts=attempts,
                delivered_at=delivered_at,
                next_attempt_at=next_attempt_at,
                last_error=error,
            )
        )

    @asynccontextmanager
    async def guardrail_leadership(self) -> AsyncIterator[_AlwaysLeader]:
        """One process, so one leader: itself."""
        yield _AlwaysLeader()
