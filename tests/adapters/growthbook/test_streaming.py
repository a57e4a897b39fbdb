"""GrowthBook's streaming endpoint, ``GET /sub/{clientKey}``: the hub's fan-out on the lean
listener and on the main port (hypercorn), against a fake payload source and against real
engines (a change here, and a change on another node of the same PostgreSQL), with the
bad cases: unknown and malformed keys, slow readers, revocation, reconnects.

Clients here are raw sockets: the bytes on the wire are what is checked."""

from __future__ import annotations

import json
import queue
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import msgspec
import pytest
import trio

import assay
from assay.adapters.growthbook import (
    Payload,
    SnapshotSource,
    StreamHub,
    bind_stream_socket,
    serve_streams,
    stream_hub,
)
from assay.adapters.growthbook._streaming import NOT_FOUND_BODY, SocketSubscriber
from assay.adapters.http import serve
from assay.engine import SYSTEM_KEY, Engine, EngineConfig, FlagSpec, ProjectSpec, ValidationFailed


class FakeSource:
    """Payloads set by the test; ``publish`` is a configuration change."""

    def __init__(self, payloads: dict[str, bytes]) -> None:
        self.documents = dict(payloads)
        self.marker = 0
        self._changed = trio.Event()

    def publish(self, key: str, document: bytes | None) -> None:
        if document is None:
            self.documents.pop(key, None)
        else:
            self.documents[key] = document
        self.marker += 1
        self._changed.set()
        self._changed = trio.Event()

    async def payload(self, client_key: str) -> Payload | None:
        document = self.documents.get(client_key)
        return None if document is None else Payload.of(document)

    async def changed(self, after: int) -> int:
        while self.marker <= after:
            await self._changed.wait()
        return self.marker


_OPEN: list[trio.SocketStream] = []


async def close_clients() -> None:
    """Close every client a test opened (the servers' contexts call it as they end)."""
    while _OPEN:
        stream = _OPEN.pop()
        with trio.CancelScope(shield=True):
            await stream.aclose()


async def connect(port: int) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    _OPEN.append(stream)
    return stream


class Client:
    """A raw-socket SSE client: sends the request, reads the head and the events."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.raw = b""
        self.head = b""
        self.chunked = False

    @classmethod
    async def open(
        cls, port: int, key: str, *, last_event_id: str | None = None, method: str = "GET"
    ) -> Client:
        stream = await connect(port)
        extra = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id else ""
        await stream.send_all(
            f"{method} /sub/{key} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
            f"{extra}\r\n".encode()
        )
        client = cls(stream)
        while b"\r\n\r\n" not in client.buffer:
            data = await stream.receive_some(65536)
            assert data, client.buffer
            client.buffer += data
        client.head, client.raw = client.buffer.split(b"\r\n\r\n", 1)
        client.chunked = client.header(b"transfer-encoding") == b"chunked"
        client.buffer = b""
        client._decode()
        return client

    def _decode(self) -> None:
        if not self.chunked:
            self.buffer, self.raw = self.buffer + self.raw, b""
            return
        while b"\r\n" in self.raw:
            size_line, rest = self.raw.split(b"\r\n", 1)
            size = int(size_line, 16)
            if len(rest) < size + 2:
                return
            self.buffer += rest[:size]
            self.raw = rest[size + 2 :]

    @property
    def status(self) -> int:
        return int(self.head.split(b" ", 2)[1])

    def header(self, name: bytes) -> bytes | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name:
                return value.strip()
        return None

    async def block(self) -> bytes:
        """The next SSE block (event or comment), without its blank line."""
        while b"\n\n" not in self.buffer:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError(self.buffer)
            self.raw += data
            self._decode()
        block, self.buffer = self.buffer.split(b"\n\n", 1)
        return block

    async def event(self) -> tuple[str, bytes]:
        """The next ``features`` event: (id, data), skipping comments and ``retry:``."""
        while True:
            fields = _fields(await self.block())
            if fields.get(b"event") == b"features":
                return fields[b"id"].decode(), fields[b"data"]

    async def rest(self) -> bytes:
        """Everything until the server closes."""
        while data := await self.stream.receive_some(65536):
            self.raw += data
            self._decode()
        return self.buffer


def _fields(block: bytes) -> dict[bytes, bytes]:
    fields: dict[bytes, bytes] = {}
    for line in block.split(b"\n"):
        name, _, value = line.partition(b": ")
        fields[name] = fields[name] + b"\n" + value if name in fields else value
    return fields


@asynccontextmanager
async def lean(hub: StreamHub) -> AsyncIterator[int]:
    """The hub served on a lean listener; yields its port."""
    listener = bind_stream_socket("127.0.0.1", 0)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run)
            port = await nursery.start(serve_streams, hub, listener)
            yield port
            nursery.cancel_scope.cancel()
    finally:
        await close_clients()
        listener.close()


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition``: the hub's bookkeeping has no event to wait on."""
    with trio.fail_after(10):
        while not condition():  # noqa: ASYNC110
            await trio.sleep(0.01)


async def test_every_subscriber_gets_each_change_once_as_the_same_bytes() -> None:
    source = FakeSource({"sdk-a": b'{"features":{"f":{"defaultValue":1}}}', "sdk-b": b"{}"})
    hub = StreamHub(source)
    async with lean(hub) as port:
        clients = [await Client.open(port, "sdk-a") for _ in range(30)]
        other = await Client.open(port, "sdk-b")
        assert {c.status for c in clients} == {200}
        assert clients[0].header(b"content-type") == b"text/event-stream"
        assert clients[0].header(b"access-control-allow-origin") == b"*"
        first = {await c.event() for c in clients}
        assert first == {(Payload.of(source.documents["sdk-a"]).tag, source.documents["sdk-a"])}
        await other.event()

        source.publish("sdk-a", b'{"features":{"f":{"defaultValue":2}}}')
        second = {await c.event() for c in clients}
        assert second == {(Payload.of(source.documents["sdk-a"]).tag, source.documents["sdk-a"])}
        # A change that leaves a key's payload as it was sends nothing to its subscribers.
        source.publish("sdk-b", b"{}")
        source.publish("sdk-a", b'{"features":{"f":{"defaultValue":3}}}')
        assert (await clients[0].event())[1] == b'{"features":{"f":{"defaultValue":3}}}'
        with trio.move_on_after(0.2):
            await other.event()
            pytest.fail("sdk-b's payload did not change, yet an event was sent")
        for c in [*clients, other]:
            await c.stream.aclose()
        await wait_for(lambda: hub.subscribers == 0, "subscribers detached")


async def test_unknown_malformed_and_revoked_keys_get_the_same_404() -> None:
    source = FakeSource({"sdk-a": b"{}"})
    hub = StreamHub(source)
    async with lean(hub) as port:
        answers = []
        for key in ("sdk-nope", "bad%20key%0A", "x" * 300, "sdk-a/../sdk-a"):
            client = await Client.open(port, key)
            answers.append((client.status, await client.rest()))
        assert answers == [(404, NOT_FOUND_BODY)] * 4
        assert hub.subscribers == 0

        subscribed = await Client.open(port, "sdk-a")
        await subscribed.event()
        source.publish("sdk-a", None)  # revoked: its streams end
        with trio.fail_after(5):
            await subscribed.rest()
        again = await Client.open(port, "sdk-a")
        assert (again.status, await again.rest()) == (404, NOT_FOUND_BODY)


async def test_bad_requests_get_a_4xx_and_a_closed_connection() -> None:
    hub = StreamHub(FakeSource({"sdk-a": b"{}"}))
    async with lean(hub) as port:
        post = await Client.open(port, "sdk-a", method="POST")
        assert post.status == 405
        elsewhere = await connect(port)
        await elsewhere.send_all(b"GET /api/features/sdk-a HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await _read_all(elsewhere)).startswith(b"HTTP/1.1 404")
        garbage = await connect(port)
        await garbage.send_all(b"\x00\x01 not http\r\n\r\n")
        assert (await _read_all(garbage)).startswith(b"HTTP/1.1 400")
        huge = await connect(port)
        await huge.send_all(b"GET /sub/sdk-a HTTP/1.1\r\nX: " + b"a" * 20_000)
        answer = await _read_all(huge)
        assert answer.startswith(b"HTTP/1.1 400") or answer == b""
        assert hub.subscribers == 0


async def _read_all(stream: trio.SocketStream) -> bytes:
    data = b""
    with trio.fail_after(5):
        try:
            while chunk := await stream.receive_some(65536):
                data += chunk
        except trio.BrokenResourceError:
            pass
    return data


async def test_heartbeats_reach_idle_subscribers() -> None:
    hub = StreamHub(FakeSource({"sdk-a": b"{}"}), heartbeat_seconds=0.05)
    async with lean(hub) as port:
        client = await Client.open(port, "sdk-a")
        await client.event()
        with trio.fail_after(5):
            assert await client.block() == b": ping"
            assert await client.block() == b": ping"


async def test_reconnecting_with_the_current_event_id_is_not_sent_the_payload_again() -> None:
    source = FakeSource({"sdk-a": b'{"v":1}'})
    hub = StreamHub(source)
    async with lean(hub) as port:
        client = await Client.open(port, "sdk-a")
        tag, _ = await client.event()
        await client.stream.aclose()
        await wait_for(lambda: hub.subscribers == 0, "the first stream detached")

        resumed = await Client.open(port, "sdk-a", last_event_id=tag)
        with trio.move_on_after(0.2):
            await resumed.event()
            pytest.fail("the payload the client has was sent again")
        # Missed a change while away: a reconnect with an old id gets the current payload.
        source.publish("sdk-a", b'{"v":2}')
        assert (await resumed.event())[1] == b'{"v":2}'
        late = await Client.open(port, "sdk-a", last_event_id=tag)
        assert (await late.event())[1] == b'{"v":2}'


async def test_a_reader_that_stops_reading_holds_bounded_memory_then_is_disconnected() -> None:
    source = FakeSource({"sdk-a": b"{}"})
    hub = StreamHub(source, stall_seconds=1.0)
    async with lean(hub) as port:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /sub/sdk-a HTTP/1.1\r\nHost: x\r\n\r\n")
        healthy = await Client.open(port, "sdk-a")
        await healthy.event()
        await wait_for(lambda: hub.subscribers == 2, "both subscribed")
        (slow,) = [
            s
            for c in hub._channels.values()
            for s in c.subscribers
            if isinstance(s, SocketSubscriber) and s.sock.getpeername() == sock.getsockname()
        ]
        events = []
        for i in range(20):
            document = b'{"v":%d,"pad":"%s"}' % (i, b"x" * 200_000)
            events.append(document)
            source.publish("sdk-a", document)
            assert (await healthy.event())[1] == document  # others are not held up
        # What the slow reader holds: the rest of one event and the newest one, no more.
        assert slow._pending is not None
        assert len(slow._pending) <= 200_100
        assert slow._next is not None
        assert events[-1] in slow._next
        await wait_for(lambda: slow.closed, "the slow reader was disconnected")
        await wait_for(lambda: hub.subscribers == 1, "the slow reader was dropped")
        sock.close()


async def test_streams_follow_an_engine_and_another_node_on_the_same_postgres(
    pg_dsn: str,
) -> None:
    config = EngineConfig(database_url=pg_dsn, pool_size=2)
    async with (
        assay.open_engine(config, load_entry_points=False) as here,
        assay.open_engine(config, load_entry_points=False) as there,
    ):
        await here.service.create_project(SYSTEM_KEY, ProjectSpec(key="shop"))
        await here.service.create_object(
            SYSTEM_KEY,
            assay.Flag,
            "shop",
            FlagSpec(key="color", type=assay.FlagType.STRING, default_value="blue"),
        )
        hub = StreamHub(SnapshotSource(here, flag_defaults(here)))
        async with lean(hub) as port:
            clients = [await Client.open(port, "sdk-shop") for _ in range(5)]
            assert {(await c.event())[1] for c in clients} == {b'{"features":{"color":"blue"}}'}

            # A change made through this engine's service.
            await here.service.update_object(
                SYSTEM_KEY, assay.Flag, "shop", "color", {"default_value": "green"}
            )
            assert {(await c.event())[1] for c in clients} == {b'{"features":{"color":"green"}}'}

            # A change made on another node reaches them through LISTEN/NOTIFY.
            await there.service.update_object(
                SYSTEM_KEY, assay.Flag, "shop", "color", {"default_value": "red"}
            )
            with trio.fail_after(10):
                got = {(await c.event())[1] for c in clients}
            assert got == {b'{"features":{"color":"red"}}'}

            # A configuration change elsewhere (another project) sends nothing.
            await there.service.create_project(SYSTEM_KEY, ProjectSpec(key="other"))
            with trio.move_on_after(0.3):
                await clients[0].event()
                pytest.fail("a change that left the payload as it was was streamed")

            unknown = await Client.open(port, "sdk-nowhere")
            assert unknown.status == 404


def flag_defaults(engine: Engine):  # type: ignore[no-untyped-def]
    """A stand-in renderer: ``sdk-{project}`` -> the project's flags' default values."""

    async def render(client_key: str) -> bytes | None:
        snapshot = engine.snapshot
        project_id = snapshot.project_ids.get(client_key.removeprefix("sdk-"))
        if not client_key.startswith("sdk-") or project_id is None:
            return None
        flags = snapshot.project_flags.get(project_id, {})
        return msgspec.json.encode(
            {"features": {k: f.default_value for k, f in sorted(flags.items())}}
        )

    return render


class Served(msgspec.Struct, kw_only=True):
    """What ``served`` started: the engine, its stream hub and ports, and the nursery that
    runs them (cancel it to stop the server)."""

    engine: Engine
    hub: StreamHub
    main_port: int
    stream_port: int | None
    nursery: trio.Nursery


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def served(
    source: FakeSource,
    *,
    stream_port: bool = False,
    hub: Callable[[Engine], StreamHub] | None = None,
    **settings: object,
) -> AsyncIterator[Served]:
    """An in-memory engine served over HTTP (and on a stream port of its own when
    ``stream_port``), its streams from ``source`` (through ``stream_hub`` unless ``hub``
    makes the hub)."""
    port = _free_port() if stream_port else None
    config = EngineConfig(store="memory", stream_port=port, **settings)  # type: ignore[arg-type]
    async with (
        assay.open_engine(config, load_entry_points=False) as engine,
        trio.open_nursery() as nursery,
    ):
        streams = stream_hub(engine, source) if hub is None else hub(engine)
        main_port = await nursery.start(
            lambda task_status: serve(
                engine, host="127.0.0.1", port=0, streams=streams, task_status=task_status
            )
        )
        yield Served(
            engine=engine, hub=streams, main_port=main_port, stream_port=port, nursery=nursery
        )


async def test_the_main_port_serves_the_same_streams_through_hypercorn() -> None:
    source = FakeSource({"sdk-a": b'{"v":1}'})
    async with served(source, stream_heartbeat_seconds=0.1) as server:
        port, nursery = server.main_port, server.nursery
        client = await Client.open(port, "sdk-a")
        assert client.status == 200
        assert client.header(b"content-type") == b"text/event-stream"
        assert await client.event() == (Payload.of(b'{"v":1}').tag, b'{"v":1}')
        source.publish("sdk-a", b'{"v":2}')
        assert (await client.event())[1] == b'{"v":2}'
        with trio.fail_after(5):
            while await client.block() != b": ping":
                pass
        missing = await Client.open(port, "sdk-missing")
        assert missing.status == 404
        with trio.fail_after(5):
            while len(missing.buffer) < len(NOT_FOUND_BODY):
                missing.raw += await missing.stream.receive_some(65536)
                missing._decode()
        assert missing.buffer == NOT_FOUND_BODY
        # Stopping the server ends the open stream promptly (no grace period spent on it).
        nursery.cancel_scope.cancel()
    await close_clients()


async def test_the_stream_port_serves_beside_the_main_port() -> None:
    source = FakeSource({"sdk-a": b'{"v":1}'})
    async with served(source, stream_port=True) as server:
        assert server.stream_port is not None
        client = await Client.open(server.stream_port, "sdk-a")
        assert (await client.event())[1] == b'{"v":1}'
        source.publish("sdk-a", b'{"v":2}')
        assert (await client.event())[1] == b'{"v":2}'
        server.nursery.cancel_scope.cancel()
    await close_clients()


async def test_growthbooks_python_sdk_streams_from_both_ports_and_reconnects() -> None:
    """GrowthBook's own SSE client (the Python SDK's) is the reference for the protocol:
    it gets the payload as a ``features`` event, every change, and after the server ends
    its stream (as a restarting node does) it reconnects and keeps getting changes."""
    from growthbook.growthbook import SSEClient

    source = FakeSource({"sdk-a": b'{"features":{"f":{"defaultValue":1}}}'})
    async with served(source, stream_port=True) as server:
        hub, main_port, stream_port = server.hub, server.main_port, server.stream_port
        received: list[queue.SimpleQueue[dict[str, str]]] = []
        sdks = []
        for port in (stream_port, main_port):
            events: queue.SimpleQueue[dict[str, str]] = queue.SimpleQueue()
            sdk = SSEClient(f"http://127.0.0.1:{port}", "sdk-a", events.put, reconnect_delay=0)
            sdk.connect()
            received.append(events)
            sdks.append(sdk)
        try:

            async def next_payloads() -> list[object]:
                got = []
                for events in received:
                    event = await trio.to_thread.run_sync(lambda q=events: q.get(timeout=10))
                    assert event["type"] == "features"
                    got.append(json.loads(event["data"]))
                return got

            assert await next_payloads() == [{"features": {"f": {"defaultValue": 1}}}] * 2
            source.publish("sdk-a", b'{"features":{"f":{"defaultValue":2}}}')
            assert await next_payloads() == [{"features": {"f": {"defaultValue": 2}}}] * 2

            # The server ends every stream; the SDK reconnects and is sent the payload.
            hub.disconnect_all()
            assert await next_payloads() == [{"features": {"f": {"defaultValue": 2}}}] * 2
            source.publish("sdk-a", b'{"features":{"f":{"defaultValue":3}}}')
            assert await next_payloads() == [{"features": {"f": {"defaultValue": 3}}}] * 2
        finally:
            # Stopped the way that leaves the SDK's thread clean: told to stop, then its
            # stream ended by the server (its disconnect() cancels its asyncio tasks from
            # another thread, and the CancelledError escapes that thread).
            for sdk in sdks:
                sdk.is_running = False
            hub.disconnect_all()
            for sdk in sdks:
                thread = sdk._sse_thread
                assert thread is not None
                await trio.to_thread.run_sync(thread.join, 10)
            server.nursery.cancel_scope.cancel()


async def test_a_slow_reader_on_the_main_port_is_disconnected_without_holding_others_up() -> None:
    source = FakeSource({"sdk-a": b"{}"})
    async with served(source, hub=lambda _: StreamHub(source, stall_seconds=1.0)) as server:
        hub, port, nursery = server.hub, server.main_port, server.nursery
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", port))
        slow.sendall(b"GET /sub/sdk-a HTTP/1.1\r\nHost: x\r\n\r\n")
        healthy = await Client.open(port, "sdk-a")
        await healthy.event()
        await wait_for(lambda: hub.subscribers == 2, "both subscribed")
        for i in range(20):
            document = b'{"v":%d,"pad":"%s"}' % (i, b"x" * 200_000)
            source.publish("sdk-a", document)
            assert (await healthy.event())[1] == document
        await wait_for(lambda: hub.subscribers == 1, "the slow reader was dropped")
        slow.close()
        nursery.cancel_scope.cancel()
    await close_clients()


async def test_the_stream_port_refuses_to_serve_plain_http_beside_tls() -> None:
    config = EngineConfig(store="memory", stream_port=0, certfile="c.pem", keyfile="k.pem")
    async with assay.open_engine(config, load_entry_points=False) as engine:
        with pytest.raises(ValidationFailed) as raised:
            await serve(engine, host="127.0.0.1", port=0)
        assert raised.value.code == "invalid_config"


async def test_the_streamed_payload_is_the_sdk_payload_and_the_sdk_decides_as_the_engine() -> None:
    """With the real payload (``sdk_payload``): a flag change reaches the subscriber as the
    new document, and GrowthBook's SDK evaluating it answers what ``engine.decide`` does."""
    from growthbook import GrowthBook

    from assay.adapters.growthbook import payload_document, sdk_payload

    config = EngineConfig(store="memory")
    async with assay.open_engine(config, load_entry_points=False) as engine:
        await engine.service.create_project(SYSTEM_KEY, ProjectSpec(key="shop"))
        await engine.service.create_object(
            SYSTEM_KEY,
            assay.Flag,
            "shop",
            FlagSpec(key="color", type=assay.FlagType.STRING, default_value="blue"),
        )

        async def render(client_key: str) -> bytes | None:
            if client_key != "sdk-shop":
                return None
            return msgspec.json.encode(payload_document(sdk_payload(engine, "shop")))

        hub = StreamHub(SnapshotSource(engine, render))
        async with lean(hub) as port:
            client = await Client.open(port, "sdk-shop")
            first = json.loads((await client.event())[1])
            assert first == payload_document(sdk_payload(engine, "shop"))
            await engine.service.update_object(
                SYSTEM_KEY, assay.Flag, "shop", "color", {"default_value": "green"}
            )
            second = json.loads((await client.event())[1])
            assert second == payload_document(sdk_payload(engine, "shop"))
            assert second["dateUpdated"] != first["dateUpdated"]
            sdk = GrowthBook(features=second["features"], attributes={"id": "u-1"})
            assert sdk.get_feature_value("color", None) == "green"
            assert engine.decide("color", "u-1", project="shop").value == "green"
