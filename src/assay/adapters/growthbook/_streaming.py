"""GrowthBook's streaming protocol: ``GET /sub/{clientKey}`` as server-sent events.

An SDK with streaming on keeps this request open and expects an ``event: features``
message whose ``data`` is the payload ``GET /api/features/{clientKey}`` returns, each time
that payload changes. The pieces:

- ``PayloadSource``: where payloads come from. It resolves a client key to the current
  payload (None: unknown, revoked or malformed key) and waits for the next change of the
  configuration, on this node or any other (``SnapshotSource`` follows an engine's
  snapshots, which other nodes' changes reach through the store's change feed).
- ``StreamHub``: one channel per client key with at least one subscriber. On every change
  it asks the source for each channel's payload once, and only when the payload differs
  from the last one sent (by its tag) encodes the event once and offers the same bytes to
  every subscriber of the channel. It also offers a heartbeat (an SSE comment) to every
  subscriber on an interval, and disconnects the subscribers of a key that stops resolving.
- Subscribers: ``SocketSubscriber`` (the lean listener of ``_stream_listener``) writes
  straight to its non-blocking socket from the fan-out loop, so a change costs one
  ``send`` per subscriber and no task switch; ``QueueSubscriber`` (the route on the main
  port, under hypercorn) hands the bytes to its request's task.

Rules kept:

- Bounded memory per subscriber, whatever the reader does: at most the unsent rest of the
  event being written plus the newest event after it (latest wins: events in between are
  dropped, since each carries the whole payload); heartbeats are dropped while anything is
  pending. Event bytes are shared between subscribers, never copied per subscriber. A
  subscriber whose pending write makes no progress for ``stall_seconds`` is disconnected.
- A subscriber never misses the newest payload: it is registered and given the channel's
  current event in one step without a checkpoint between, and the channel's event and the
  fan-out change in one step too.
- Reconnects: every event carries ``id:`` the payload's tag (stable across nodes for the
  same content), so a client reconnecting with ``Last-Event-ID`` equal to the current tag
  is not sent the payload again; any other reconnect gets the current payload at once.
- Unknown, revoked and malformed client keys all get the same 404 (``NOT_FOUND_BODY``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import trio

from assay.adapters.growthbook.protocol import SdkProtocol

if TYPE_CHECKING:
    from assay.engine import Engine

log = logging.getLogger("assay.growthbook.streaming")

HEARTBEAT_SECONDS = 20.0
"""Between heartbeats: under the idle timeouts of common proxies and load balancers
(often 30 to 60 s), so an idle stream is not cut, and often enough that a dead peer is
noticed (its socket buffer fills) within a few minutes."""
STALL_SECONDS = 30.0
"""A subscriber whose pending write makes no progress for this long is disconnected."""
RETRY_MILLISECONDS = 1000
"""The reconnection delay sent to clients (SSE ``retry:``)."""
_YIELD_EVERY = 512
"""Subscribers written to between checkpoints in a fan-out, so one change to ten thousand
subscribers does not hold the event loop for its whole duration."""

_CLIENT_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,256}")
NOT_FOUND_BODY = (
    msgspec.json.encode(
        {
            "error": {
                "code": "client_key_not_found",
                "message": "no active SDK connection has this client key",
            }
        }
    )
    + b"\n"
)
"""The answer to an unknown, revoked or malformed client key: the same bytes for all three,
so it says nothing about whether the key ever existed; the same as ``GET
/api/features/{clientKey}`` answers."""
NOT_FOUND_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-type", b"application/json"),
    (b"content-length", b"%d" % len(NOT_FOUND_BODY)),
    (b"access-control-allow-origin", b"*"),
    (b"access-control-expose-headers", b"ETag"),
)
HEARTBEAT = b": ping\n\n"
SSE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
    (b"access-control-allow-origin", b"*"),
)
"""The stream's response headers (the body is never cached or buffered by proxies, and any
origin may read it: the client key is public by design)."""


def valid_client_key(key: str) -> bool:
    """Whether ``key`` could be a client key at all; anything else is answered 404 without
    a lookup."""
    return _CLIENT_KEY.fullmatch(key) is not None


class Payload(msgspec.Struct, frozen=True, kw_only=True):
    """One client key's payload: the JSON document and a tag of its content."""

    tag: str
    """Identifies the content (the SSE event id): equal documents have equal tags on every
    node."""
    document: bytes

    @classmethod
    def of(cls, document: bytes) -> Payload:
        return cls(tag=hashlib.blake2b(document, digest_size=12).hexdigest(), document=document)


class PayloadSource(Protocol):
    """Where the streamed payloads come from."""

    async def payload(self, client_key: str) -> Payload | None:
        """The current payload of ``client_key``; None when the key is unknown, revoked or
        malformed (all three alike)."""
        ...

    async def changed(self, after: int) -> int:
        """Wait until the configuration may have changed since marker ``after`` (0 at
        first) and return the new marker. A change need not alter any payload."""
        ...


Render = Callable[[str], Awaitable[bytes | Payload | None]]
"""Renders a client key's payload document from the snapshot in force (None: no such key);
bytes are tagged by their content, a ``Payload`` keeps the tag it carries."""


class SnapshotSource:
    """``PayloadSource`` over an engine: a change is a newly published snapshot (after a
    change here, or on another node through the store's change feed); ``render`` makes a
    key's document from the snapshot in force. Rendered documents are kept per snapshot
    version, so many subscribers connecting at once render each key once."""

    def __init__(self, engine: Engine, render: Render) -> None:
        self._engine = engine
        self._render = render
        self._cache: dict[str, Payload | None] = {}
        self._cache_version = -1

    async def payload(self, client_key: str) -> Payload | None:
        version = self._engine.snapshot.version
        if version != self._cache_version:
            self._cache, self._cache_version = {}, version
        try:
            return self._cache[client_key]
        except KeyError:
            pass
        document = await self._render(client_key)
        payload = Payload.of(document) if isinstance(document, bytes) else document
        if self._cache_version == version and len(self._cache) < 10_000:
            self._cache[client_key] = payload
        return payload

    async def changed(self, after: int) -> int:
        return (await self._engine.next_snapshot(after)).version


def encode_event(payload: Payload) -> bytes:
    """The ``features`` event for ``payload``: one ``data:`` line per line of the
    document (a compact JSON document has one)."""
    data = b"".join(b"data: " + line + b"\n" for line in payload.document.splitlines())
    return b"event: features\nid: " + payload.tag.encode() + b"\n" + data + b"\n"


class Subscriber(Protocol):
    """One open stream, as the hub sees it. ``offer`` and ``close`` never block and never
    remove the subscriber from its channel (its own task does, when it ends)."""

    def offer(self, data: bytes, *, heartbeat: bool = False) -> None: ...

    def close(self) -> None: ...


class _Channel:
    __slots__ = ("event", "subscribers", "tag")

    def __init__(self, payload: Payload) -> None:
        self.tag = payload.tag
        self.event = encode_event(payload)
        self.subscribers: set[Subscriber] = set()


class StreamHub:
    """The channels of the subscribed client keys, following ``source``. Run ``run`` in a
    nursery for as long as streams are served."""

    def __init__(
        self,
        source: PayloadSource,
        *,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        stall_seconds: float = STALL_SECONDS,
    ) -> None:
        self.source = source
        self.heartbeat_seconds = heartbeat_seconds
        self.stall_seconds = stall_seconds
        self._channels: dict[str, _Channel] = {}
        self._generation = 0
        """Bumped whenever a change is noticed: a payload fetched across one may be stale."""
        self._closed = False
        self._nursery: trio.Nursery | None = None
        self.events_sent = 0
        """Events offered to subscribers (one per subscriber per change)."""

    @property
    def subscribers(self) -> int:
        return sum(len(c.subscribers) for c in self._channels.values())

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the source's changes and send heartbeats until cancelled; then close
        every stream."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._follow)
                nursery.start_soon(self._heartbeats)
                task_status.started()
        finally:
            self._nursery = None
            self.close()

    def start_soon(self, task: Callable[[], Awaitable[None]]) -> None:
        """Run ``task`` for as long as the hub runs (a stream's writer that must outlive
        its request)."""
        if self._nursery is None:
            raise RuntimeError("the hub is not running")
        self._nursery.start_soon(task)

    def close(self) -> None:
        """End every stream (e.g. when the server stops); later subscribers are refused."""
        self._closed = True
        self.disconnect_all()

    def disconnect_all(self) -> None:
        """End every open stream (clients reconnect, and are sent the current payload)."""
        for channel in self._channels.values():
            for subscriber in channel.subscribers:
                subscriber.close()

    async def attach(
        self, client_key: str, subscriber: Subscriber, *, prelude: bytes, last_event_id: str | None
    ) -> bool:
        """Register ``subscriber`` on ``client_key``'s channel and offer it ``prelude``
        followed by the current payload (unless ``last_event_id`` says it has it). False,
        with nothing offered, when the key does not resolve."""
        if self._closed or not valid_client_key(client_key):
            return False
        channel = self._channels.get(client_key)
        while channel is None:
            seen = self._generation
            payload = await self.source.payload(client_key)
            if payload is None or self._closed:
                return False
            channel = self._channels.get(client_key)
            if channel is None and seen == self._generation:
                channel = self._channels[client_key] = _Channel(payload)
        # From here to the end, no checkpoint: the subscriber gets the current event and
        # every later one.
        first = prelude if last_event_id == channel.tag else prelude + channel.event
        subscriber.offer(first)
        channel.subscribers.add(subscriber)
        return True

    def detach(self, client_key: str, subscriber: Subscriber) -> None:
        channel = self._channels.get(client_key)
        if channel is None:
            return
        channel.subscribers.discard(subscriber)
        if not channel.subscribers:
            del self._channels[client_key]

    async def _follow(self) -> None:
        marker = 0
        while True:
            marker = await self.source.changed(marker)
            self._generation += 1
            for key in list(self._channels):
                try:
                    payload = await self.source.payload(key)
                except Exception:
                    log.exception("rendering the payload of a client key failed")
                    continue
                channel = self._channels.get(key)
                if channel is None:
                    continue
                if payload is None:
                    # Revoked (or its project gone): its streams end, and reconnecting
                    # gets the 404.
                    for subscriber in channel.subscribers:
                        subscriber.close()
                    continue
                if payload.tag == channel.tag:
                    continue
                channel.tag, channel.event = payload.tag, encode_event(payload)
                await self._fan_out(channel, channel.event, heartbeat=False)

    async def _heartbeats(self) -> None:
        while True:
            await trio.sleep(self.heartbeat_seconds)
            for channel in list(self._channels.values()):
                await self._fan_out(channel, HEARTBEAT, heartbeat=True)

    async def _fan_out(self, channel: _Channel, data: bytes, *, heartbeat: bool) -> None:
        # A copy: the channel may gain or lose subscribers at the checkpoints.
        subscribers = tuple(channel.subscribers)
        for number, subscriber in enumerate(subscribers, 1):
            subscriber.offer(data, heartbeat=heartbeat)
            if number % _YIELD_EVERY == 0:
                await trio.lowlevel.checkpoint()
        if not heartbeat:
            self.events_sent += len(subscribers)


class SocketSubscriber:
    """A stream on a non-blocking socket of the lean listener. ``offer`` writes at once
    when nothing is pending; what the socket does not take is kept (a view of the shared
    bytes) and written by ``run`` as the socket drains."""

    __slots__ = ("_next", "_pending", "_stall", "_wake", "closed", "sock")

    def __init__(self, sock: socket.socket, stall_seconds: float) -> None:
        self.sock = sock
        self.closed = False
        self._pending: memoryview | None = None
        self._next: bytes | None = None
        self._stall = stall_seconds
        self._wake: trio.CancelScope | None = None

    def offer(self, data: bytes, *, heartbeat: bool = False) -> None:
        if self.closed:
            return
        if self._pending is not None:
            if not heartbeat:
                self._next = data  # latest wins
            return
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close()
            return
        if sent < len(data):
            self._pending = memoryview(data)[sent:]
            self._interrupt()

    def close(self) -> None:
        self.closed = True
        self._interrupt()

    def _interrupt(self) -> None:
        if self._wake is not None:
            self._wake.cancel()

    async def run(self) -> None:
        """Until the peer goes, the subscriber is closed, or a write stalls: flush what
        is pending, else wait for the peer to close (anything it sends is discarded)."""
        sock = self.sock
        while not self.closed:
            pending = self._pending
            if pending is not None:
                with trio.move_on_after(self._stall) as stalled:
                    while True:
                        await trio.lowlevel.wait_writable(sock)
                        try:
                            sent = sock.send(pending)
                        except BlockingIOError:
                            continue
                        except OSError:
                            return
                        if sent == len(pending):
                            break
                        # Progress: the stall clock restarts.
                        pending = pending[sent:]
                        stalled.deadline = trio.current_time() + self._stall
                if stalled.cancelled_caught:
                    log.info("disconnecting a stream subscriber that stopped reading")
                    return
                self._pending = None
                following, self._next = self._next, None
                if following is not None:
                    self.offer(following)
                continue
            with trio.CancelScope() as self._wake:
                await trio.lowlevel.wait_readable(sock)
            self._wake = None
            if self._pending is not None or self.closed:
                continue
            try:
                if not sock.recv(4096):
                    return  # the peer closed
            except BlockingIOError:
                continue
            except OSError:
                return


class QueueSubscriber:
    """A stream answered through ASGI (the main port): the hub's offers are handed to the
    request's task, which sends them. Holds at most one unsent offer: a newer event
    replaces it (latest wins), a heartbeat is dropped when anything waits."""

    __slots__ = ("_queued", "_ready", "closed")

    def __init__(self) -> None:
        self.closed = False
        self._queued: bytes | None = None
        self._ready = trio.Event()

    def offer(self, data: bytes, *, heartbeat: bool = False) -> None:
        if self.closed or (heartbeat and self._queued is not None):
            return
        self._queued = data
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def next(self) -> bytes | None:
        """What to send next; None once closed."""
        while self._queued is None:
            if self.closed:
                return None
            await self._ready.wait()
            self._ready = trio.Event()
        data, self._queued = self._queued, None
        return data


async def serve_asgi_stream(
    hub: StreamHub, client_key: str, scope: Any, receive: Any, send: Any
) -> None:
    """Answer ``GET /sub/{clientKey}`` through ASGI: the 404, or the stream until the
    client goes, the subscriber is closed or a send stalls."""
    last_event_id = None
    for name, value in scope.get("headers", ()):
        if name == b"last-event-id":
            last_event_id = value.decode("latin-1")
    subscriber = QueueSubscriber()
    if not await hub.attach(client_key, subscriber, prelude=_retry(), last_event_id=last_event_id):
        await send(
            {"type": "http.response.start", "status": 404, "headers": list(NOT_FOUND_HEADERS)}
        )
        await send({"type": "http.response.body", "body": NOT_FOUND_BODY})
        return
    # The sends run in a task of the hub's, not of this request: hypercorn shields its
    # socket writes from cancellation, so a send to a client that stopped reading cannot
    # be interrupted. Instead this request returns with its response unfinished, which
    # makes hypercorn close the connection, and closing it ends the blocked send. The
    # watchdog's deadline is armed only while a send is in progress: an idle stream
    # costs no timer wake-ups.
    watchdog = trio.CancelScope()
    finished = trio.Event()

    async def sender() -> None:
        try:
            while (data := await subscriber.next()) is not None:
                watchdog.deadline = trio.current_time() + hub.stall_seconds
                await send({"type": "http.response.body", "body": data, "more_body": True})
                watchdog.deadline = math.inf
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except Exception:
            # The connection is being torn down under the write (hypercorn closing it
            # races with this task's send): the stream is over either way, and the hub,
            # whose task this is, must not fail with it.
            log.debug("a stream's write ended with its connection", exc_info=True)
        finally:
            finished.set()

    try:
        await send({"type": "http.response.start", "status": 200, "headers": list(SSE_HEADERS)})
        async with trio.open_nursery() as nursery:

            async def until_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                subscriber.close()

            nursery.start_soon(until_disconnect)
            hub.start_soon(sender)
            with watchdog:
                await finished.wait()
            if watchdog.cancelled_caught:
                log.info("disconnecting a stream subscriber that stopped reading")
            nursery.cancel_scope.cancel()
    finally:
        subscriber.close()
        hub.detach(client_key, subscriber)


def _retry() -> bytes:
    return b"retry: %d\n\n" % RETRY_MILLISECONDS


def stream_hub(engine: Engine, source: PayloadSource | None = None) -> StreamHub:
    """A hub with the engine's stream settings, following ``source``: by default the
    engine's snapshots, each client key's payload being what ``GET /api/features/{key}``
    answers (an unknown or revoked key, or a failure there, has none: 404)."""
    if source is None:
        source = SnapshotSource(engine, features_render(SdkProtocol(engine)))
    return StreamHub(
        source,
        heartbeat_seconds=engine.config.stream_heartbeat_seconds,
        stall_seconds=engine.config.stream_stall_seconds,
    )


def features_render(protocol: SdkProtocol) -> Render:
    """``Render`` from the features route's own answer. Tagged with its ``ETag``, which
    names the plain content: an encrypted payload's bytes change with every encoding (a
    new IV), and an event with nothing new in it must not go out."""

    async def render(client_key: str) -> Payload | None:
        status, headers, body = protocol.features(client_key, None)
        if status != 200:
            return None
        etag = dict(headers)[b"etag"].strip(b'"').decode()
        return Payload(tag=etag, document=body.rstrip(b"\n"))

    return render


class StreamRoute:
    """ASGI middleware: ``GET /sub/{clientKey}`` answered from ``hub``, everything else by
    ``app``. How the main port serves streams."""

    def __init__(self, hub: StreamHub, app: Any) -> None:
        self._hub = hub
        self._app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and scope["path"].startswith("/sub/")
        ):
            key = scope["path"][len("/sub/") :]
            await serve_asgi_stream(self._hub, key, scope, receive, send)
            return
        await self._app(scope, receive, send)
