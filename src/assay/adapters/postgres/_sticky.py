"""Sticky-bucket documents in PostgreSQL (``assay_sticky_buckets``, migration 0012).

Both operations are one statement on a pooled connection, outside configuration
transactions: a batch read by key, and a merge that keeps an assignment already stored
under the same key, so two processes assigning one subject at once agree on the first
write (the statement returns the documents as stored, which the engine then follows).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from assay.engine._core import StickyAssignment

__all__ = ["aio_load_sticky", "aio_save_sticky"]

Docs = dict[tuple[str, str], dict[str, str]]

_LOAD = """
SELECT s.attribute, s.value, s.assignments
FROM unnest($2::text[], $3::text[]) AS k(attribute, value)
JOIN assay_sticky_buckets s
  ON s.project_id = $1 AND s.attribute = k.attribute AND s.value = k.value
"""
_SAVE = """
INSERT INTO assay_sticky_buckets AS s (project_id, attribute, value, assignments)
SELECT $1, k.attribute, k.value, k.doc::jsonb
FROM unnest($2::text[], $3::text[], $4::text[]) AS k(attribute, value, doc)
ON CONFLICT (project_id, attribute, value) DO UPDATE
SET assignments = EXCLUDED.assignments || s.assignments, updated_at = now()
RETURNING s.attribute, s.value, s.assignments
"""

_decode = msgspec.json.Decoder(dict[str, str]).decode
_encode = msgspec.json.Encoder(order="sorted").encode


def _rows(rows: Sequence[Any]) -> Docs:
    return {(r["attribute"], r["value"]): _decode(r["assignments"]) for r in rows}


async def aio_load_sticky(pool: Any, project_id: str, keys: Sequence[tuple[str, str]]) -> Docs:
    if not keys:
        return {}
    unique = list(dict.fromkeys(keys))
    rows = await pool.fetch(_LOAD, project_id, [k[0] for k in unique], [k[1] for k in unique])
    return _rows(rows)


async def aio_save_sticky(
    pool: Any, project_id: str, assignments: Sequence[StickyAssignment]
) -> Docs:
    if not assignments:
        return {}
    docs: Docs = {}
    for a in assignments:
        # Within one batch too, the first assignment of a key wins.
        docs.setdefault((a.attribute, a.value), {}).setdefault(a.key, a.variant)
    keys = sorted(docs)  # a fixed order: concurrent batches lock rows in the same order
    rows = await pool.fetch(
        _SAVE,
        project_id,
        [k[0] for k in keys],
        [k[1] for k in keys],
        [_encode(docs[k]).decode() for k in keys],
    )
    return _rows(rows)
