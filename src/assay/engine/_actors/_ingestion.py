"""The ingestion actor: receives event batches and writes them. Grows with the events
work; today it answers liveness pings so the runtime and supervisor are exercised."""

from __future__ import annotations

from typing import Any

from assay.engine._actors._base import Actor
from assay.engine._messages import IngestionMessage, Ping, Pong


class IngestionActor(Actor[IngestionMessage]):
    name = "ingestion"

    async def handle(self, message: IngestionMessage) -> Any:
        match message:
            case Ping():
                return Pong(actor=self.name, handled=self.handled)
