"""Console sessions: who is signed in, kept on the server, named by an unguessable cookie.

Rules kept:

- the cookie holds only a random session id (HttpOnly, SameSite=Strict, Secure when the
  request came over TLS, directly or through a trusted proxy); the API key stays on the
  server, in this process's memory, and is never sent back to the browser;
- every request authenticates the key again (``ConfigService.authenticate``), so a
  session whose key was revoked ends at its next request;
- a session ends ``console_session_minutes`` after sign-in, or at sign-out;
- each session carries its own CSRF token, which every state-changing form must echo;
  the sign-in form, which comes before any session, uses a double-submit cookie.

Sessions live in the serving process: with several workers or nodes, route a person to
the same one (sticky sessions) or they sign in again (see docs/console.md).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

MAX_SESSIONS = 10_000


@dataclass(frozen=True)
class Session:
    secret: str
    """The API key the console acts with."""
    key_id: str
    csrf: str
    expires_at: float
    """``time.monotonic()`` deadline."""


def _digest(session_id: str) -> str:
    # Held by digest, so the table itself names no cookie that would work.
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    def __init__(self, lifetime_seconds: float) -> None:
        self._lifetime = lifetime_seconds
        self._sessions: dict[str, Session] = {}

    def create(self, secret: str, key_id: str) -> tuple[str, Session]:
        """A new session for a key that just authenticated: its cookie value and itself."""
        self._expire()
        if len(self._sessions) >= MAX_SESSIONS:
            # The oldest give way (dicts keep insertion order).
            for digest in list(self._sessions)[: MAX_SESSIONS // 10]:
                del self._sessions[digest]
        session_id = secrets.token_urlsafe(32)
        session = Session(
            secret=secret,
            key_id=key_id,
            csrf=secrets.token_urlsafe(32),
            expires_at=time.monotonic() + self._lifetime,
        )
        self._sessions[_digest(session_id)] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        digest = _digest(session_id)
        session = self._sessions.get(digest)
        if session is not None and session.expires_at <= time.monotonic():
            del self._sessions[digest]
            return None
        return session

    def end(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(_digest(session_id), None)

    def _expire(self) -> None:
        now = time.monotonic()
        for digest, session in list(self._sessions.items()):
            if session.expires_at <= now:
                del self._sessions[digest]


def same_token(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
