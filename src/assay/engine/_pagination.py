"""Opaque cursors for list endpoints: base64url of the last item's sort key."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Generic, TypeVar

import msgspec

from assay.engine._errors import ValidationFailed

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class Page(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    """One page of a list. Pass ``next_cursor`` back as ``cursor`` for the next page;
    it is null on the last page."""

    items: list[T]
    next_cursor: str | None = None


def encode_cursor(position: str | int) -> str:
    raw = f"{type(position).__name__[0]}:{position}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, kind: type[str] | type[int]) -> str | int | None:
    if cursor is None or cursor == "":
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        tag, _, value = base64.urlsafe_b64decode(padded.encode()).decode().partition(":")
        if tag != kind.__name__[0]:
            raise ValueError(tag)
        return kind(value)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise ValidationFailed("malformed cursor", code="invalid_cursor") from exc


def check_limit(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed(f"limit must be between 1 and {MAX_LIMIT}", code="invalid_limit")
    return limit


def page_of(items: list[T], limit: int, position: Callable[[T], str | int]) -> Page[T]:
    """The page for ``limit + 1`` items read from a store: the first ``limit``, with a
    cursor at the last of them when there were more."""
    if len(items) > limit:
        items = items[:limit]
        return Page(items=items, next_cursor=encode_cursor(position(items[-1])))
    return Page(items=items)
