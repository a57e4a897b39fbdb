"""Identities and timestamps for new configuration objects and keys.

Ids are time-ordered so listings sorted by id are sorted by creation; timestamps are
timezone-aware UTC.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime


def new_id(prefix: str) -> str:
    """Time-ordered, so ids sort by creation: 12 hex digits of ms, then 8 random."""
    return f"{prefix}_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(4)}"


def now() -> datetime:
    return datetime.now(UTC)
