"""Actor messages. One tagged union per mailbox; requests are imperative, events are past
tense. Messages are frozen msgspec Structs so each one stays encodable; a reply channel
travels beside the message in an ``Envelope``, never inside it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import msgspec
import trio

from assay.engine._core import Decision
from assay.engine._events import Event
from assay.engine._guardrails import ExperimentCheck


class Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every actor message."""


# --- decision actor -------------------------------------------------------------------


class RefreshSnapshot(Message, frozen=True, kw_only=True, tag="refresh_snapshot"):
    """Configuration changed (here or in another process): compile and publish anew."""

    reason: str = "change"


class SnapshotPublished(Message, frozen=True, kw_only=True, tag="snapshot_published"):
    version: int
    flags: int
    experiments: int


class RecordDecisions(Message, frozen=True, kw_only=True, tag="record_decisions"):
    """Write these decision records. With a reply channel the answer (``DecisionsRecorded``)
    comes only after they are committed; without one it is fire-and-forget."""

    decisions: list[Decision]


class DecisionsRecorded(Message, frozen=True, kw_only=True, tag="decisions_recorded"):
    count: int


class Ping(Message, frozen=True, kw_only=True, tag="ping"):
    """Answered with ``Pong`` by any actor: proves it is alive and draining its inbox."""


class Pong(Message, frozen=True, kw_only=True, tag="pong"):
    actor: str
    handled: int


DecisionMessage = RefreshSnapshot | RecordDecisions | Ping

# --- ingestion actor ------------------------------------------------------------------


class RecordEvents(Message, frozen=True, kw_only=True, tag="record_events"):
    """Check and write a batch of exposures and conversions (at most ``MAX_BATCH_EVENTS``)
    for one project. With a reply channel the answer (``EventsRecorded``) comes only after
    the batch is committed; without one (e.g. exposures logged on assignment) it is
    fire-and-forget. ``received_at`` is the default event time and the reference for the
    timestamp checks."""

    project_id: str
    principal_id: str
    events: list[Event]
    received_at: datetime


class PurgePending(Message, frozen=True, kw_only=True, tag="purge_pending"):
    """Purge expired pending conversions now (the actor also does it periodically)."""


class PendingPurged(Message, frozen=True, kw_only=True, tag="pending_purged"):
    purged: int


IngestionMessage = RecordEvents | PurgePending | Ping

# --- guardrail actor ------------------------------------------------------------------


class CheckGuardrails(Message, frozen=True, kw_only=True, tag="check_guardrails"):
    """Check now: the experiment with id ``experiment`` (whatever this process's
    leadership: triggers are unique per check and revision, so concurrent checks record a
    breach once), else every running experiment (of ``project_id`` when given).
    ``requested_by`` (a principal id) writes the check to the audit log."""

    project_id: str | None = None
    experiment: str | None = None
    requested_by: str | None = None


class GuardrailsChecked(Message, frozen=True, kw_only=True, tag="guardrails_checked"):
    checked: int
    experiments: list[ExperimentCheck] = []


GuardrailMessage = CheckGuardrails | Ping

M = TypeVar("M", bound=Message)


@dataclass(slots=True)
class Envelope(Generic[M]):
    """A message and, when the sender awaits an answer, the channel to answer on."""

    message: M
    reply: trio.MemorySendChannel[Any] | None = field(default=None)
