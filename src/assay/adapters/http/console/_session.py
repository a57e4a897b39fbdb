"""Console sessions on the HTTP side: what the cookie carries and how tokens compare.

Rules kept:

- the cookie holds only a random session id (HttpOnly, SameSite=Strict, Secure when the
  request came over TLS, directly or through a trusted proxy); the session itself, and
  the key it acts with, stay on the server, in the engine's store
  (``assay.engine._console_sessions``), so every worker and node serving one database
  knows it, and the API key's secret is never sent back to the browser nor kept;
- every request reads the session and its key afresh, so a session whose key was revoked
  ends at its next request, and one signed out ends in every process at once;
- a session ends ``console_session_minutes`` after sign-in, or at sign-out;
- each session carries its own CSRF token, which every state-changing form must echo;
  the sign-in form, which comes before any session, uses a double-submit cookie.
"""

from __future__ import annotations

import hmac


def same_token(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
