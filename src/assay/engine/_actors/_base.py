"""Actors and their supervisor.

An actor owns its state and reads one bounded inbox. The supervisor runs it; when it
crashes, the supervisor logs the crash, answers the message that crashed it with the error
(so no caller waits forever), waits with exponential backoff and starts it again on the
same inbox, so messages already queued are not lost. Closing the inbox's send side stops
the actor once the messages already queued have been handled (drain, then stop).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Generic, TypeVar

import trio

from assay.engine._errors import ActorCrashed, AssayError, StoreUnavailable
from assay.engine._messages import Envelope, Message

log = logging.getLogger("assay.engine.actors")

M = TypeVar("M", bound=Message)


def answer(reply: trio.MemorySendChannel[Any], value: Any) -> None:
    """Answer a caller. One who gave up (cancelled, so its receive side is closed) is not an
    error of the actor's: its work is done all the same."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        reply.send_nowait(value)


class Actor(Generic[M]):
    """Subclasses implement ``handle`` and optionally ``setup`` and ``background``."""

    name = "actor"

    def __init__(self) -> None:
        self.handled = 0
        self.restarts = 0

    async def setup(self) -> None:
        """Called before the inbox is read, on the first start and after every restart."""

    async def background(self) -> None:
        """Work the actor does besides answering messages (timers, watchers). Cancelled
        when the inbox closes; a crash here restarts the actor like a crash in handle."""

    async def handle(self, message: M) -> Any:
        raise NotImplementedError

    async def serve(self, inbox: trio.MemoryReceiveChannel[Envelope[M]]) -> None:
        """Read and answer the inbox until it is closed and drained: one message at a time
        through ``handle``. An actor that answers several messages together (ingestion
        commits queued batches in one transaction) overrides this; it must then answer
        every message it took, with ``ActorCrashed`` if it fails."""
        await _serve_inbox(self, inbox)

    async def drain(self) -> None:
        """Called once the inbox is closed and empty, while background work still runs:
        finish what was accepted (e.g. flush buffered writes) before the actor stops."""

    async def receive(self, envelope: Envelope[M]) -> None:
        """Handle one envelope. The default answers at once with ``handle``'s result; an
        actor that answers later (group commit) overrides this and keeps the channel."""
        reply = await self.handle(envelope.message)
        if envelope.reply is not None:
            answer(envelope.reply, reply)


async def _serve_inbox(actor: Actor[M], inbox: trio.MemoryReceiveChannel[Envelope[M]]) -> None:
    async for envelope in inbox:
        try:
            await actor.receive(envelope)
        except Exception as exc:
            if envelope.reply is not None:
                # Never the exception's text: it may hold anything (SQL, another input).
                error: AssayError = (
                    exc
                    if isinstance(exc, StoreUnavailable)
                    else ActorCrashed(f"the {actor.name} actor failed; retry the request")
                )
                error.__cause__ = exc
                # The reply channel holds one answer; the actor may have answered already.
                with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError):
                    envelope.reply.send_nowait(error)
            raise
        actor.handled += 1


async def supervise(
    actor: Actor[M],
    inbox: trio.MemoryReceiveChannel[Envelope[M]],
    *,
    backoff: float,
    max_backoff: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``actor`` until its inbox is closed and drained, restarting it on crashes."""
    delay = backoff
    first = True
    while True:
        started_at = trio.current_time()
        try:
            await actor.setup()
            if first:
                task_status.started()
                first = False
            async with trio.open_nursery() as nursery:
                nursery.start_soon(actor.background)
                await actor.serve(inbox)
                await actor.drain()
                # Inbox closed and drained: stop the background work too.
                nursery.cancel_scope.cancel()
            log.debug("%s actor stopped after %d messages", actor.name, actor.handled)
            return
        except Exception:
            actor.restarts += 1
            if trio.current_time() - started_at > max_backoff:
                delay = backoff  # it had been healthy for a while: start the backoff over
            log.exception(
                "%s actor crashed (restart %d in %.2fs)", actor.name, actor.restarts, delay
            )
            await trio.sleep(delay)
            delay = min(delay * 2, max_backoff)
            if first:
                # Crashed during its first setup: report started anyway so the engine
                # opens; the actor keeps retrying in the background.
                task_status.started()
                first = False
