"""The guardrail actor: checks running experiments on an interval and on demand. The
checks themselves arrive with the guardrails work; the interval and the on-demand path
are in place."""

from __future__ import annotations

from typing import Any

import trio

from assay.engine._actors._base import Actor
from assay.engine._messages import CheckGuardrails, GuardrailMessage, GuardrailsChecked, Ping, Pong


class GuardrailActor(Actor[GuardrailMessage]):
    name = "guardrail"

    def __init__(self, interval_seconds: float) -> None:
        super().__init__()
        self._interval = interval_seconds
        self.checks = 0

    async def background(self) -> None:
        while True:
            await trio.sleep(self._interval)
            await self._check(CheckGuardrails())

    async def handle(self, message: GuardrailMessage) -> Any:
        match message:
            case CheckGuardrails():
                return await self._check(message)
            case Ping():
                return Pong(actor=self.name, handled=self.handled)

    async def _check(self, message: CheckGuardrails) -> GuardrailsChecked:
        self.checks += 1
        return GuardrailsChecked(checked=0)
