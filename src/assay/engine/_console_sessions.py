"""Console sessions: who is signed in to the console, kept in the store so that every
process serving the same database knows them.

Rules kept:

- the browser holds only a random session id; the store keeps its SHA-256 digest, never
  the id itself, and never the API key's secret (only the key's id), so neither a copy of
  the table nor a stolen backup names a cookie or a key that would work;
- a session ends ``console_session_minutes`` after sign-in, at sign-out (its row is
  deleted, so it ends in every process at once), or at its next request once its key is
  revoked (the key is read afresh with the session, in the same lookup);
- each session carries its own CSRF token, which every state-changing form must echo;
- expired rows are purged whenever someone signs in, so the table holds no more than the
  sessions started within one lifetime.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import msgspec

from assay.engine._errors import Unauthenticated

if TYPE_CHECKING:
    from assay.engine._model import ApiKey
    from assay.engine._ports import Store


class ConsoleSession(msgspec.Struct, frozen=True, kw_only=True):
    """A console session as stored."""

    token_hash: str
    """SHA-256 hex digest of the random id the cookie holds."""
    key_id: str
    """The API key the console acts with (its id: the secret is never kept)."""
    csrf: str
    created_at: datetime
    expires_at: datetime


def token_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class ConsoleSessions:
    """Start, resume and end console sessions through the storage port."""

    def __init__(self, store: Store, lifetime: timedelta) -> None:
        self._store = store
        self._lifetime = lifetime

    async def start(self, key: ApiKey) -> tuple[str, ConsoleSession]:
        """A new session for a key that just authenticated: its cookie value and itself."""
        now = datetime.now(UTC)
        session_id = secrets.token_urlsafe(32)
        session = ConsoleSession(
            token_hash=token_hash(session_id),
            key_id=key.id,
            csrf=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + self._lifetime,
        )
        await self._store.create_console_session(session, now=now)
        return session_id, session

    async def resume(self, session_id: str) -> tuple[ConsoleSession, ApiKey] | None:
        """The live session named by a cookie and its key; None when there is none (never
        was, expired, or signed out). Raises ``Unauthenticated`` when its key was revoked
        (the session is then deleted)."""
        if not session_id:
            return None
        found = await self._store.get_console_session(token_hash(session_id), now=datetime.now(UTC))
        if found is None:
            return None
        session, key = found
        if key is None or not key.active:
            await self._store.delete_console_session(session.token_hash)
            raise Unauthenticated("the session's API key was revoked")
        return session, key

    async def end(self, session_id: str) -> None:
        if session_id:
            await self._store.delete_console_session(token_hash(session_id))
