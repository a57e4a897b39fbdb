"""Actor messages. One tagged union per mailbox; requests are imperative, events are past
tense. Messages are frozen msgspec Structs so each one stays encodable; a reply channel
travels beside the message in an ``Envelope``, never inside it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec
import trio


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


class Ping(Message, frozen=True, kw_only=True, tag="ping"):
    """Answered with ``Pong`` by any actor: proves it is alive and draining its inbox."""


class Pong(Message, frozen=True, kw_only=True, tag="pong"):
    actor: str
    handled: int


DecisionMessage = RefreshSnapshot | Ping

# --- ingestion actor ------------------------------------------------------------------


IngestionMessage = Ping

# --- guardrail actor ------------------------------------------------------------------


class CheckGuardrails(Message, frozen=True, kw_only=True, tag="check_guardrails"):
    """Check running experiments now (``experiment`` None: all of them)."""

    project_id: str | None = None
    experiment: str | None = None


class GuardrailsChecked(Message, frozen=True, kw_only=True, tag="guardrails_checked"):
    checked: int


GuardrailMessage = CheckGuardrails | Ping

M = TypeVar("M", bound=Message)


@dataclass(slots=True)
class Envelope(Generic[M]):
    """A message and, when the sender awaits an answer, the channel to answer on."""

    message: M
    reply: trio.MemorySendChannel[Any] | None = field(default=None)
