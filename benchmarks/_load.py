"""The HTTP benchmarks' client: a lean keep-alive HTTP/1.1 connection and the load loop
that drives a server subprocess (``_server.ServerProcess``) with it.

Rules it keeps: requests are pre-encoded bytes and responses are framed by
Content-Length, so one client process can saturate a server without being the bottleneck
itself; a request is never cancelled mid-flight (the server sees clean keep-alive traffic
only); only responses completed inside the measured window count, and the client's, the
server's and the whole machine's CPU are measured over that same window.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import trio
from _machine import machine_busy_seconds  # benchmarks/ is the scripts' directory
from _server import ServerProcess


class Connection:
    """A minimal HTTP/1.1 keep-alive client connection: sends pre-encoded requests and
    reads responses framed by Content-Length. Deliberately lean, so one client process
    can saturate a server without being the bottleneck itself."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stream: trio.SocketStream | None = None
        self.buffer = bytearray()
        self.reconnects = 0

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.stream is None:
            self.stream = await trio.open_tcp_stream("127.0.0.1", self.port)
            self.buffer.clear()
        stream = self.stream
        await stream.send_all(raw)
        buffer = self.buffer
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise ConnectionError("server closed the connection mid-response")
            buffer += chunk
        head = bytes(buffer[:end]).lower()
        status = int(head[9:12])
        start = head.find(b"content-length:")
        if start < 0:
            raise ConnectionError("response without Content-Length")
        stop = head.find(b"\r\n", start)
        length = int(head[start + 15 : stop if stop >= 0 else len(head)])
        total = end + 4 + length
        while len(buffer) < total:
            chunk = await stream.receive_some(max(65536, total - len(buffer)))
            if not chunk:
                raise ConnectionError("server closed the connection mid-body")
            buffer += chunk
        body = bytes(buffer[end + 4 : total])
        del buffer[:total]
        if b"connection: close" in head:
            # hypercorn closes a keep-alive connection after keep_alive_max_requests
            # (1,000 by default); open a new one for the next request.
            await stream.aclose()
            self.stream = None
            self.reconnects += 1
        return status, body

    async def aclose(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()
            self.stream = None


@dataclass
class LoadResult:
    requests: int
    seconds: float
    latencies_ms: list[float]
    client_cpu: float
    server_cpu: float | None
    machine_busy: float | None
    reconnects: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def describe(self, per_request: int = 1) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        return {
            "requests_per_s": self.rps,
            "decisions_per_s": self.rps * per_request,
            "requests": self.requests,
            "seconds": self.seconds,
            "latency_ms_p50": lat[len(lat) // 2] if lat else None,
            "latency_ms_p99": lat[int(len(lat) * 0.99)] if lat else None,
            # Fractions of one core over the measured window: a server near 1.0 is
            # CPU-bound (one process, one core); a client near 1.0 would be the bottleneck.
            "server_cpu_cores": self.server_cpu,
            # The server's CPU time per request: unlike requests/s, this barely moves when
            # other work on the machine steals the server's core.
            "server_cpu_us_per_request": (
                self.server_cpu / self.rps * 1e6 if self.server_cpu and self.rps else None
            ),
            # What one core given wholly to the server would sustain at that cost.
            "capacity_decisions_per_s": (
                self.rps / self.server_cpu * per_request if self.server_cpu else None
            ),
            "client_cpu_cores": self.client_cpu,
            "machine_busy_cores": self.machine_busy,
            "reconnects": self.reconnects,
        }


async def run_load(
    server: ServerProcess,
    requests: Sequence[bytes],
    *,
    connections: int,
    warmup: float,
    duration: float,
    connection: type[Connection] = Connection,
) -> LoadResult:
    """``connections`` keep-alive connections (of class ``connection``) each send requests
    back to back (cycling through ``requests`` from its own offset) for ``warmup`` +
    ``duration`` seconds; only responses completed inside the measured window count."""
    completed = 0
    measuring = False
    stopping = False
    latencies: list[float] = []
    conns = [connection(server.port) for _ in range(connections)]

    async def worker(index: int, conn: Connection) -> None:
        nonlocal completed
        i = index * len(requests) // connections
        clock = time.perf_counter
        # Requests are never cancelled mid-flight: at the end every connection finishes the
        # request it has sent, so the server sees clean keep-alive traffic only.
        while not stopping:
            started = clock()
            status, body = await conn.request(requests[i % len(requests)])
            if status != 200:
                raise RuntimeError(f"{server.kind}: HTTP {status}: {body[:300]!r}")
            if measuring:
                completed += 1
                latencies.append((clock() - started) * 1e3)
            i += 1

    with trio.fail_after(warmup + duration + 60):
        async with trio.open_nursery() as nursery:
            for index, conn in enumerate(conns):
                nursery.start_soon(worker, index, conn)
            await trio.sleep(warmup)
            measuring = True
            started = time.perf_counter()
            usage_before = resource.getrusage(resource.RUSAGE_SELF)
            server_before = server.cpu_seconds()
            machine_before = machine_busy_seconds()
            await trio.sleep(duration)
            done = completed
            elapsed = time.perf_counter() - started
            usage_after = resource.getrusage(resource.RUSAGE_SELF)
            server_after = server.cpu_seconds()
            machine_after = machine_busy_seconds()
            stopping = True
    for conn in conns:
        await conn.aclose()

    client_cpu = (
        usage_after.ru_utime + usage_after.ru_stime - usage_before.ru_utime - usage_before.ru_stime
    ) / elapsed
    server_cpu = (
        (server_after - server_before) / elapsed
        if server_after is not None and server_before is not None
        else None
    )
    machine = None
    if machine_before and machine_after:
        busy = machine_after[0] - machine_before[0]
        total = machine_after[1] - machine_before[1]
        machine = busy / total * (os.cpu_count() or 1) if total else None
    return LoadResult(
        requests=done,
        seconds=elapsed,
        latencies_ms=latencies[:done],
        client_cpu=client_cpu,
        server_cpu=server_cpu,
        machine_busy=machine,
        reconnects=sum(c.reconnects for c in conns),
    )
