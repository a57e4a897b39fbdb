"""The decision actor: compiles configuration into snapshots and publishes them.

It recompiles when told (``RefreshSnapshot``), when this process changes configuration,
and when any other process does (the store's change feed), coalescing bursts of changes
into one compile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from assay.engine._actors._base import Actor
from assay.engine._core._snapshot import Snapshot
from assay.engine._messages import DecisionMessage, Ping, Pong, RefreshSnapshot, SnapshotPublished
from assay.engine._ports import ConfigState, Store

log = logging.getLogger("assay.engine.decision")

Compiler = Callable[[ConfigState, int], Snapshot]


class DecisionActor(Actor[DecisionMessage]):
    name = "decision"

    def __init__(
        self, store: Store, compile_snapshot: Compiler, publish: Callable[[Snapshot], None]
    ) -> None:
        super().__init__()
        self._store = store
        self._compile = compile_snapshot
        self._publish = publish
        self._version = 0
        self._dirty = trio.Event()

    def mark_dirty(self) -> None:
        """Safe to call from anywhere in the Trio thread; never blocks."""
        self._dirty.set()

    async def setup(self) -> None:
        await self._refresh()

    async def background(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._store.watch_config, self.mark_dirty)
            while True:
                await self._dirty.wait()
                self._dirty = trio.Event()
                await self._refresh()

    async def handle(self, message: DecisionMessage) -> Any:
        match message:
            case RefreshSnapshot():
                return await self._refresh()
            case Ping():
                return Pong(actor=self.name, handled=self.handled)

    async def _refresh(self) -> SnapshotPublished:
        state = await self._store.load_config()
        self._version += 1
        snapshot = self._compile(state, self._version)
        self._publish(snapshot)
        log.debug("published snapshot %d", snapshot.version)
        return SnapshotPublished(
            version=snapshot.version, flags=len(state.flags), experiments=len(state.experiments)
        )
