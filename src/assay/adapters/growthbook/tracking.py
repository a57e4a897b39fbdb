"""Exposures from GrowthBook's Python SDK to assay: a tracking callback that batches.

``ExposureTracker`` is the callable GrowthBook's SDK calls when a subject is assigned to a
variation (``GrowthBook(on_experiment_viewed=tracker)``, or the deprecated
``trackingCallback=``). It sends each exposure to assay as an ``exposure`` event: to
``POST /api/events/{clientKey}`` with an SDK connection's client key, or to
``POST /api/v1/events?project=P`` with an API key for a server-side service. See
docs/sdk-tracking.md.

The rules it keeps:

- The callback never blocks and never raises in the caller's thread: it puts the event on a
  bounded queue (``max_queue``) and returns; a full queue drops the event and counts it in
  ``stats.dropped``. GrowthBook's Python SDK is synchronous, so one background thread sends.
- Batches hold up to ``batch_size`` events and leave at least every ``flush_interval``
  seconds, at once when ``flush()`` asks.
- A batch that fails for a reason that may pass (a network error, 408, 429, a 5xx) is sent
  again with exponential back-off and jitter, ``Retry-After`` honoured, up to
  ``max_attempts`` in all; any other answer is final (sending again would fail again) and
  the batch is counted in ``stats.failed``.
- Every exposure carries ``exposure_event_id(experiment, variant, subject)``, the same in
  every process and in the JavaScript callback (``js/assay-tracking.mjs``): a retried
  batch, a view repeated after a restart or reported by both a server and a browser is
  stored once. The tracker also remembers the last ``remember`` ids it queued and does not
  queue them again, so repeated views cost no traffic.
- The subject is the ``id`` attribute (what assay's ``decide`` calls the subject), else the
  value the SDK hashed (``result.hashValue``); ``subject=`` chooses otherwise.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import random
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final
from urllib.parse import quote

import httpx

__all__ = ["ExposureTracker", "TrackerStats", "exposure_event_id"]

logger = logging.getLogger("assay.growthbook.tracking")

_RETRIED_STATUSES: Final = frozenset({408, 429})
_MAX_SUBJECT_LENGTH: Final = 512  # the events API's limit: longer is never sent

SubjectOf = Callable[[Any, Any, Any], "str | None"]
"""``(experiment, result, user_context) -> subject``; None skips the exposure."""


def exposure_event_id(experiment: str, variant: str, subject: str) -> str:
    """The event id of a subject's exposure to a variant: ``gb-`` and 32 hex digits of
    SHA-256 over the three, NUL-separated (keys hold no NUL, so the split is unambiguous).
    The JavaScript callback computes the same id."""
    digest = hashlib.sha256(f"{experiment}\0{variant}\0{subject}".encode()).hexdigest()
    return f"gb-{digest[:32]}"


def default_subject(experiment: Any, result: Any, user_context: Any) -> str | None:
    """The ``id`` attribute if the SDK passed the user's attributes, else the hash value."""
    attributes = getattr(user_context, "attributes", None)
    if isinstance(attributes, dict):
        value = attributes.get("id")
        if value is not None and value != "":
            return value if isinstance(value, str) else _as_text(value)
    hashed = getattr(result, "hashValue", None)
    if hashed is None or hashed == "":
        return None
    return str(hashed)


def _as_text(value: Any) -> str:
    # As JavaScript writes a number, so a numeric id is the same subject everywhere.
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class TrackerStats:
    """What became of the exposures handed to a tracker, since it was created."""

    queued: int = 0
    """Accepted by the callback and put on the queue."""
    repeated: int = 0
    """Not queued: an exposure this tracker had already queued (same event id)."""
    dropped: int = 0
    """Not queued: the queue was full, the tracker closed, or no subject."""
    batches: int = 0
    """Batches assay answered with 2xx."""
    recorded: int = 0
    deduplicated: int = 0
    """Counted by assay as seen before (a retry that had in fact arrived, another process)."""
    rejected: int = 0
    """Refused one by one by assay (an unknown experiment or variant, ...); logged."""
    failed: int = 0
    """Events of batches given up: a final error, or attempts exhausted."""
    retries: int = 0
    """Batches sent again after a failure that may pass."""


class ExposureTracker:
    """GrowthBook's ``on_experiment_viewed`` callback, sending exposures to assay.

    Give ``client_key`` (an SDK connection's public key) or ``api_key`` and ``project``.
    Call ``close()`` at shutdown (or use it as a context manager): it sends what is queued.
    A process that exits without it closes the tracker at exit, waiting at most 5 s.
    """

    def __init__(
        self,
        api_host: str,
        *,
        client_key: str | None = None,
        api_key: str | None = None,
        project: str | None = None,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_queue: int = 10_000,
        max_attempts: int = 6,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 10.0,
        remember: int = 100_000,
        subject: SubjectOf | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if (client_key is None) == (api_key is None):
            raise ValueError("give either client_key or api_key (with project)")
        if api_key is not None and not project:
            raise ValueError("an api_key needs the project the experiments belong to")
        if batch_size < 1 or max_queue < 1 or max_attempts < 1:
            raise ValueError("batch_size, max_queue and max_attempts must be at least 1")
        host = api_host.rstrip("/")
        params: dict[str, str] = {}
        headers: dict[str, str] = {}
        if client_key is not None:
            self.url = f"{host}/api/events/{quote(client_key, safe='')}"
        else:
            self.url = f"{host}/api/v1/events"
            params["project"] = project or ""
            headers["Authorization"] = f"Bearer {api_key}"
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.remember = remember
        self._subject_of: SubjectOf = subject or default_subject
        self._http = httpx.Client(
            headers=headers, params=params, timeout=timeout, transport=transport
        )
        self._lock = threading.Condition()
        self._queue: deque[dict[str, Any]] = deque()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._unsent = 0  # queued or in flight
        self._flushes = 0  # flush() calls waiting: send without waiting for the interval
        self._closed = False
        self._abandon = threading.Event()  # close() ran out of time: stop retrying
        self._counts: dict[str, int] = dict.fromkeys(TrackerStats.__dataclass_fields__, 0)
        self._thread = threading.Thread(
            target=self._run, name="assay-exposure-tracker", daemon=True
        )
        self._thread.start()
        # A process that exits without close() still sends what is queued (briefly).
        atexit.register(_close_at_exit, weakref.ref(self))

    # --- the callback, in the caller's thread -------------------------------------------

    def __call__(self, experiment: Any, result: Any, user_context: Any = None) -> None:
        """GrowthBook's SDK calls this with ``experiment=``, ``result=`` and
        ``user_context=``; it only queues, whatever happens."""
        try:
            self._queue_exposure(experiment, result, user_context)
        except Exception:  # a callback must never break the application's request
            logger.exception("assay tracking callback failed")

    def _queue_exposure(self, experiment: Any, result: Any, user_context: Any) -> None:
        subject = self._subject_of(experiment, result, user_context)
        key = getattr(experiment, "key", None)
        variant = getattr(result, "key", None)
        if not subject or len(subject) > _MAX_SUBJECT_LENGTH or not key or variant is None:
            self._count("dropped")
            return
        event_id = exposure_event_id(key, str(variant), subject)
        event = {
            "type": "exposure",
            "experiment": key,
            "subject": subject,
            "variant": str(variant),
            "event_id": event_id,
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        with self._lock:
            if event_id in self._seen:
                self._counts["repeated"] += 1
                return
            if self._closed or len(self._queue) >= self.max_queue:
                self._counts["dropped"] += 1
                return
            self._seen[event_id] = None
            if len(self._seen) > self.remember:
                self._seen.popitem(last=False)
            self._queue.append(event)
            self._unsent += 1
            self._counts["queued"] += 1
            if len(self._queue) >= self.batch_size:
                self._lock.notify_all()

    # --- control -----------------------------------------------------------------------

    @property
    def stats(self) -> TrackerStats:
        with self._lock:
            return TrackerStats(**self._counts)

    def flush(self, timeout: float | None = None) -> bool:
        """Sends what is queued now and waits until every queued event is answered or
        given up. True when nothing is left unsent, False when ``timeout`` ran out."""
        with self._lock:
            self._flushes += 1
            self._lock.notify_all()
            try:
                return self._lock.wait_for(lambda: self._unsent == 0, timeout)
            finally:
                self._flushes -= 1

    def close(self, timeout: float = 30.0) -> bool:
        """Stops taking exposures, sends what is queued (retrying within ``timeout``) and
        stops the thread. True when everything queued was answered."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        done = self.flush(timeout)
        if not done:
            self._abandon.set()
        self._thread.join(timeout if done else 5.0)
        self._http.close()
        return done

    def __enter__(self) -> ExposureTracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- the sending thread ------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _next_batch(self) -> list[dict[str, Any]] | None:
        """Waits for a batch worth sending; None once closed with nothing left."""
        with self._lock:
            deadline: float | None = None
            while True:
                if self._queue:
                    if (
                        len(self._queue) >= self.batch_size
                        or self._flushes
                        or self._closed
                        or self._abandon.is_set()
                    ):
                        break
                    if deadline is None:
                        deadline = time.monotonic() + self.flush_interval
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._lock.wait(left)
                elif self._closed:
                    return None
                else:
                    deadline = None
                    self._lock.wait()
            n = min(self.batch_size, len(self._queue))
            return [self._queue.popleft() for _ in range(n)]

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._deliver(batch)
            except Exception:
                logger.exception("assay tracking: a batch of %d exposures was lost", len(batch))
                self._count("failed", len(batch))
            finally:
                with self._lock:
                    self._unsent -= len(batch)
                    self._lock.notify_all()

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        attempt = 0
        while True:
            attempt += 1
            wait: float | None = None
            try:
                response = self._http.post(self.url, json={"events": batch})
            except httpx.HTTPError as error:
                retry, why = True, f"{type(error).__name__}: {error}"
            else:
                if response.is_success:
                    self._answered(response.json())
                    return
                status = response.status_code
                retry = status in _RETRIED_STATUSES or status >= 500
                why = f"HTTP {status}: {response.text[:200]}"
                wait = _retry_after(response)
            if not retry or attempt >= self.max_attempts or self._abandon.is_set():
                logger.warning(
                    "assay tracking: %d exposures not sent after %d attempt(s): %s",
                    len(batch),
                    attempt,
                    why,
                )
                self._count("failed", len(batch))
                return
            if wait is None:
                wait = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                wait *= random.uniform(0.5, 1.0)  # jitter: clients that failed together
            self._count("retries")
            if self._abandon.wait(min(wait, self.max_backoff)):
                self._count("failed", len(batch))
                return

    def _answered(self, body: Any) -> None:
        if not isinstance(body, dict):
            body = {}
        rejected = body.get("rejected") or []
        for rejection in rejected[:5]:
            logger.warning("assay tracking: exposure rejected: %s", rejection)
        with self._lock:
            self._counts["batches"] += 1
            self._counts["recorded"] += int(body.get("recorded", 0))
            self._counts["deduplicated"] += int(body.get("deduplicated", 0))
            self._counts["rejected"] += len(rejected)


def _close_at_exit(ref: weakref.ref[ExposureTracker]) -> None:
    tracker = ref()
    if tracker is not None and not tracker._closed:
        tracker.close(timeout=5.0)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
