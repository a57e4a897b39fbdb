"""Sticky-bucket documents for the engine: where ``decide`` gets them without I/O, and
where the assignments it makes go.

The documents live in the store (one per project, hash attribute and value). The engine
keeps a bounded LRU of them in process, which is all the synchronous ``decide`` reads:

- ``adecide`` (and the HTTP decide routes, which use it) reads the subject's documents
  from the store in one batch before deciding (cache misses only), and stores a new
  assignment durably before answering. The store keeps the first assignment of a key, so
  when another process assigned the subject meanwhile, the stored variant wins and the
  decision is made again from it.
- ``decide`` is synchronous: it reads the cache, or documents the caller passes (e.g.
  loaded once per request with ``load``). A new assignment goes into the cache at once
  (later decisions in this process see it) and is written behind, in batches, by ``run``.
  A subject whose documents are neither cached nor passed is decided as one with none.

See docs/design.md ("Sticky bucketing") for why, and what it costs.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import trio

from assay.engine._core import StickyAssignment
from assay.engine._ports import Store

__all__ = ["StickyBuckets"]

log = logging.getLogger("assay.engine.sticky")

_Key = tuple[str, str, str]
"""(project id, attribute, value)."""

MAX_PENDING = 100_000
"""Assignments waiting to be written behind at most; beyond, they are dropped and counted
(the hot path never waits on the database)."""


class StickyBuckets:
    """The cache, the durable path and the write-behind queue; see the module docstring."""

    def __init__(self, store: Store, max_entries: int) -> None:
        self._store = store
        self._max = max_entries
        # Per project, a plain dict: what ``decide`` reads (the compiled path looks a dict
        # up without calling a Python method). The LRU order of all projects' documents is
        # kept beside it, for eviction.
        self.by_project: dict[str, dict[tuple[str, str], dict[str, str]]] = {}
        """Read only: each project's documents, as ``view`` gives them."""
        self._order: OrderedDict[_Key, None] = OrderedDict()
        self._pending: list[tuple[str, StickyAssignment]] = []
        self._ready = trio.Event()
        self._closed = False
        self.written = 0
        self.dropped = 0
        self.loads = 0

    def view(self, project_id: str) -> Mapping[tuple[str, str], Mapping[str, str]]:
        """One project's cached documents, as ``decide`` reads them (kept up to date)."""
        docs = self.by_project.get(project_id)
        if docs is None:
            docs = self.by_project[project_id] = {}
        return docs

    def _remember(self, project_id: str, key: tuple[str, str], doc: dict[str, str]) -> None:
        if self._max == 0:
            return
        full = (project_id, key[0], key[1])
        docs = self.by_project.get(project_id)
        if docs is None:
            docs = self.by_project[project_id] = {}
        docs[key] = doc
        self._order[full] = None
        self._order.move_to_end(full)
        while len(self._order) > self._max:
            old_project, attribute, value = self._order.popitem(last=False)[0]
            del self.by_project[old_project][(attribute, value)]

    async def load(self, project_id: str, keys: Sequence[tuple[str, str]]) -> None:
        """Read the documents of ``keys`` not cached yet, in one batch, into the cache
        (a key with no document is cached as empty, so it is not read again)."""
        cached = self.by_project.get(project_id, {})
        missing = [k for k in dict.fromkeys(keys) if (k[0], k[1]) not in cached]
        if not missing:
            return
        self.loads += 1
        found = await self._store.load_sticky_buckets(project_id, missing)
        for key in missing:
            self._remember(project_id, key, dict(found.get(key, {})))

    def note(self, project_id: str, assignment: StickyAssignment) -> None:
        """A new assignment from the synchronous path: cached now, written behind."""
        key = (assignment.attribute, assignment.value)
        doc = dict(self.by_project.get(project_id, {}).get(key, {}))
        doc.setdefault(assignment.key, assignment.variant)
        self._remember(project_id, key, doc)
        if len(self._pending) >= MAX_PENDING:
            self.dropped += 1
            return
        self._pending.append((project_id, assignment))
        self._ready.set()

    async def persist(
        self, project_id: str, assignments: Sequence[StickyAssignment]
    ) -> dict[tuple[str, str], dict[str, str]]:
        """Store ``assignments`` durably; the stored documents (the first assignment of a
        key wins) are cached and returned."""
        stored = await self._store.save_sticky_buckets(project_id, assignments)
        for key, doc in stored.items():
            self._remember(project_id, key, dict(doc))
        self.written += len(assignments)
        return stored

    async def run(self) -> None:
        """Write assignments behind, batch by batch, until ``close`` and the queue is empty.
        A failed write is logged and its batch given up (its subjects are assigned again,
        the same way unless the experiment changed meanwhile)."""
        while True:
            if not self._pending:
                if self._closed:
                    return
                await self._ready.wait()
                self._ready = trio.Event()
                continue
            batch, self._pending = self._pending, []
            by_project: dict[str, list[StickyAssignment]] = {}
            for project_id, assignment in batch:
                by_project.setdefault(project_id, []).append(assignment)
            for project_id, assignments in by_project.items():
                try:
                    await self.persist(project_id, assignments)
                except Exception:
                    self.dropped += len(assignments)
                    log.exception("writing %d sticky assignments failed", len(assignments))

    def close(self) -> None:
        """Let ``run`` finish once the queue is written."""
        self._closed = True
        self._ready.set()
