"""The engine runtime: opens the store, builds the plugin manager, starts the decision,
ingestion and guardrail actors under supervisors in one nursery, and stops them cleanly.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Generic, TypeVar

import pluggy
import trio

from assay.engine._actors._base import Actor, supervise
from assay.engine._actors._decision import DecisionActor
from assay.engine._actors._guardrail import GuardrailActor
from assay.engine._actors._ingestion import IngestionActor
from assay.engine._config import EngineConfig
from assay.engine._core._snapshot import EMPTY_SNAPSHOT, Snapshot, index_snapshot
from assay.engine._errors import AssayError, EngineOverloaded
from assay.engine._messages import (
    DecisionMessage,
    Envelope,
    GuardrailMessage,
    IngestionMessage,
    Message,
    RefreshSnapshot,
    SnapshotPublished,
)
from assay.engine._plugins import build_plugin_manager
from assay.engine._ports import ConfigState, Store
from assay.engine._service import ConfigService

log = logging.getLogger("assay.engine")

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


class Engine:
    """A running assay engine. Obtain one with ``open_engine``."""

    def __init__(
        self, config: EngineConfig, store: Store, plugins: pluggy.PluginManager
    ) -> None:
        self.config = config
        self.store = store
        self.plugins = plugins
        self._snapshot: Snapshot = EMPTY_SNAPSHOT
        self.decision = Mailbox[DecisionMessage](
            DecisionActor(store, self._compile, self._publish), config.inbox_size
        )
        self.ingestion = Mailbox[IngestionMessage](IngestionActor(), config.inbox_size)
        self.guardrail = Mailbox[GuardrailMessage](
            GuardrailActor(config.guardrail_interval_seconds), config.inbox_size
        )
        decision_actor = self.decision.actor
        assert isinstance(decision_actor, DecisionActor)
        self.service = ConfigService(store, on_change=decision_actor.mark_dirty)

    @property
    def snapshot(self) -> Snapshot:
        """The configuration snapshot in force now."""
        return self._snapshot

    @property
    def mailboxes(self) -> tuple[Mailbox[Any], ...]:
        return (self.decision, self.ingestion, self.guardrail)

    async def refresh(self) -> SnapshotPublished:
        """Compile and publish a snapshot now, and wait until it is in force."""
        result = await self.decision.request(RefreshSnapshot(reason="requested"))
        assert isinstance(result, SnapshotPublished)
        return result

    def _compile(self, state: ConfigState, version: int) -> Snapshot:
        return index_snapshot(
            version,
            list(state.projects),
            list(state.flags),
            list(state.experiments),
            list(state.layers),
            list(state.metrics),
        )

    def _publish(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot


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
    plugins = build_plugin_manager(builtin_plugins, load_entry_points=load_entry_points)
    async with store_factory() as store:
        engine = Engine(config, store, plugins)
        async with trio.open_nursery() as nursery:
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
