"""Console sessions in process memory: the memory store's half of the sessions port.

With the memory store there is one process, so process memory is where every request
finds them. Kept msgspec-encoded, like every record in the memory store.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import msgspec
import trio

from assay.engine._console_sessions import ConsoleSession

if TYPE_CHECKING:
    from assay.engine._model import ApiKey


class MemorySessionStore:
    """Mixed into ``MemoryStore``: console sessions."""

    __sessions: dict[str, bytes] | None = None

    def _stored_key(self, key_id: str) -> ApiKey | None:
        raise NotImplementedError  # provided by MemoryStore

    @property
    def _console_sessions(self) -> dict[str, bytes]:
        # Created on first use, so the store's own constructor needs no change.
        if self.__sessions is None:
            self.__sessions = {}
        return self.__sessions

    async def create_console_session(self, session: ConsoleSession, *, now: datetime) -> None:
        await trio.lowlevel.checkpoint()
        sessions = self._console_sessions
        for digest, raw in list(sessions.items()):
            if msgspec.json.decode(raw, type=ConsoleSession).expires_at <= now:
                del sessions[digest]
        sessions[session.token_hash] = msgspec.json.encode(session)

    async def get_console_session(
        self, token_hash: str, *, now: datetime
    ) -> tuple[ConsoleSession, ApiKey | None] | None:
        await trio.lowlevel.checkpoint()
        raw = self._console_sessions.get(token_hash)
        if raw is None:
            return None
        session = msgspec.json.decode(raw, type=ConsoleSession)
        if session.expires_at <= now:
            return None
        return session, self._stored_key(session.key_id)

    async def delete_console_session(self, token_hash: str) -> None:
        await trio.lowlevel.checkpoint()
        self._console_sessions.pop(token_hash, None)
