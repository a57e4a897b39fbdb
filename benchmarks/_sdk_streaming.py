"""GrowthBook SDK streaming (``GET /sub/{clientKey}``): N concurrent subscribers, one change,
how long until each has the new payload, and the server's memory per subscriber.

    python benchmarks/_sdk_streaming.py [--quick] [--subscribers N] [--json PATH]
        [--paths stream_port,main_port] [--clients K]

quick: 1,000 subscribers; full: 10,000. ``run_streaming(subscribers, quick)`` is what
``benchmarks/sdk.py`` calls. Figures per path: p50/p99/max seconds from the change to a
subscriber having it (over all subscribers: one that never got it counts as late), the
share within 1 s, server RSS per subscriber, server CPU per subscriber for the change.

Setup: the server is its own process (an engine on the memory store, one project of 20
flags streamed as GrowthBook's SDK payload, the streams served by
``assay.adapters.http.serve``): once with the lean listener on a stream port
(``stream_port``), once through hypercorn on the main port (``main_port``, the baseline,
same run). The subscribers are raw non-blocking sockets in
K separate client processes driven by epoll (no HTTP or SSE library: the client side
must cost as little as possible, since it shares the machine's CPUs with the server).
Once every subscriber holds the first payload, the controller notes the time and tells
the server to change a flag through ``engine.service`` (write, snapshot, render, fan-out
are all inside the measured time); each client notes when each socket's next ``features``
event arrives (``time.monotonic``, one clock for all processes on Linux). Memory: the
server's RSS with every subscriber connected, minus its RSS before the first, divided by
N. Heartbeats are off during the run so only the change is measured.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

KEY = "sdk-bench"
FLAGS = 20
CHANGE = "change\n"


# --- the server process ---------------------------------------------------------------


def _raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _render(engine: Any) -> Any:
    """The payload document of ``sdk-bench``: GrowthBook's SDK payload of the project
    (what ``GET /api/features`` serves), encoded once per snapshot by ``SnapshotSource``."""
    import msgspec

    from assay.adapters.growthbook import payload_document, sdk_payload

    async def render(client_key: str) -> bytes | None:
        if client_key != KEY:
            return None
        return msgspec.json.encode(payload_document(sdk_payload(engine, "bench")))

    return render


def serve_child(path: str) -> None:
    """The server: prints its ports, then changes a flag each time it reads a line."""
    import trio

    import assay
    from assay.adapters.growthbook import SnapshotSource, stream_hub
    from assay.adapters.http import serve
    from assay.engine import SYSTEM_KEY, EngineConfig, FlagSpec, ProjectSpec

    _raise_fd_limit()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        stream_port = probe.getsockname()[1]

    async def main() -> None:
        config = EngineConfig(
            store="memory",
            stream_port=stream_port if path == "stream_port" else None,
            stream_heartbeat_seconds=3600.0,
        )
        async with (
            assay.open_engine(config, load_entry_points=False) as engine,
            trio.open_nursery() as nursery,
        ):
            await engine.service.create_project(SYSTEM_KEY, ProjectSpec(key="bench"))
            for i in range(FLAGS):
                spec = FlagSpec(key=f"flag-{i:02d}", type=assay.FlagType.NUMBER, default_value=0)
                await engine.service.create_object(SYSTEM_KEY, assay.Flag, "bench", spec)
            hub = stream_hub(engine, SnapshotSource(engine, _render(engine)))
            port = await nursery.start(
                lambda task_status: serve(
                    engine, host="127.0.0.1", port=0, streams=hub, task_status=task_status
                )
            )
            print(stream_port if path == "stream_port" else port, flush=True)
            stdin = trio.lowlevel.FdStream(os.dup(0))
            changes = 0
            buffer = b""
            while True:
                data = await stdin.receive_some()
                if not data:
                    break
                buffer += data
                while b"\n" in buffer:
                    _, buffer = buffer.split(b"\n", 1)
                    changes += 1
                    await engine.service.update_object(
                        SYSTEM_KEY, assay.Flag, "bench", "flag-00", {"default_value": changes}
                    )
                    print("changed", flush=True)
            nursery.cancel_scope.cancel()

    trio.run(main)


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# --- the client processes -------------------------------------------------------------

_MARK = b"event: features"


def client_main(port: int, count: int, conn: Any) -> None:
    """``count`` subscribers; reports when all have the first payload, then the arrival
    time of each one's next ``features`` event."""
    _raise_fd_limit()
    request = f"GET /sub/{KEY} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n"
    poller = select.epoll()
    socks: dict[int, socket.socket] = {}
    seen: dict[int, int] = {}
    tails: dict[int, bytes] = {}
    arrived: dict[int, float] = {}
    failed = 0

    def read(fd: int) -> None:
        nonlocal failed
        sock = socks[fd]
        try:
            data = sock.recv(262144)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            poller.unregister(fd)
            del socks[fd]
            failed += 1
            return
        joined = tails[fd] + data
        seen[fd] += joined.count(_MARK)
        tails[fd] = joined[-(len(_MARK) - 1) :]
        if seen[fd] >= 2 and fd not in arrived:
            arrived[fd] = time.monotonic()

    def pump(timeout: float) -> None:
        for fd, _ in poller.poll(timeout):
            if fd in socks:
                read(fd)

    # Connect in batches, reading as we go, so the server's accept queue never overflows.
    for i in range(count):
        for attempt in range(50):
            sock = socket.socket()
            try:
                sock.settimeout(10)
                sock.connect(("127.0.0.1", port))
                sock.sendall(request.encode())
                break
            except OSError:
                sock.close()
                time.sleep(0.05 * (attempt + 1))
        else:
            failed += 1
            continue
        sock.setblocking(False)
        socks[sock.fileno()] = sock
        seen[sock.fileno()] = 0
        tails[sock.fileno()] = b""
        poller.register(sock.fileno(), select.EPOLLIN)
        if i % 100 == 99:
            pump(0)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(seen[fd] >= 1 for fd in socks):
        pump(0.1)
    ready = sum(1 for fd in socks if seen[fd] >= 1)
    conn.send(("ready", ready, failed))
    # Wait for the change.
    conn.recv()
    deadline = time.monotonic() + 60
    while len(arrived) < len(socks) and time.monotonic() < deadline:
        pump(0.05)
    conn.send(("arrived", list(arrived.values()), len(socks)))
    conn.recv()
    for sock in socks.values():
        sock.close()


# --- the controller --------------------------------------------------------------------


def measure(path: str, subscribers: int, clients: int) -> dict[str, Any]:
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve-child", path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None
    assert server.stdout is not None
    context = multiprocessing.get_context("spawn")
    processes = []
    try:
        port = int(server.stdout.readline())
        time.sleep(0.5)
        rss_before = _rss(server.pid)
        pipes = []
        started = time.monotonic()
        for n in range(clients):
            share = subscribers // clients + (1 if n < subscribers % clients else 0)
            parent, child = context.Pipe()
            process = context.Process(target=client_main, args=(port, share, child))
            process.start()
            processes.append(process)
            pipes.append(parent)
        ready = failed = 0
        for pipe in pipes:
            _, r, f = pipe.recv()
            ready, failed = ready + r, failed + f
        connect_seconds = time.monotonic() - started
        time.sleep(1.0)
        rss_after = _rss(server.pid)
        for pipe in pipes:
            pipe.send("go")
        cpu_before = _cpu_seconds(server.pid)
        t0 = time.monotonic()
        server.stdin.write(CHANGE)
        server.stdin.flush()
        assert server.stdout.readline().strip() == "changed"
        change_seconds = time.monotonic() - t0
        latencies: list[float] = []
        open_streams = 0
        for pipe in pipes:
            _, times, alive = pipe.recv()
            latencies += [t - t0 for t in times]
            open_streams += alive
        change_cpu = _cpu_seconds(server.pid) - cpu_before
        for pipe in pipes:
            pipe.send("done")
    finally:
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
        server.stdin.close()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    latencies.sort()
    got = len(latencies)

    def quantile(q: float) -> float | None:
        # Over all subscribers: one that never got the change counts as infinitely late.
        index = max(0, min(subscribers - 1, int(q * subscribers + 0.5) - 1))
        return round(latencies[index], 4) if index < got else None

    return {
        "path": path,
        "subscribers": subscribers,
        "connected": ready,
        "connect_failures": failed,
        "connect_seconds": round(connect_seconds, 1),
        "received": got,
        "p50_seconds": quantile(0.50),
        "p99_seconds": quantile(0.99),
        "max_seconds": round(latencies[-1], 4) if got == subscribers else None,
        "share_within_1s": round(sum(1 for t in latencies if t <= 1.0) / subscribers, 4),
        "streams_open_after": open_streams,
        "write_acknowledged_seconds": round(change_seconds, 4),
        "server_cpu_seconds_for_change": round(change_cpu, 3),
        "server_cpu_us_per_subscriber": round(change_cpu / max(got, 1) * 1e6, 1),
        "server_rss_before_mb": round(rss_before / 2**20, 1),
        "server_rss_after_mb": round(rss_after / 2**20, 1),
        "rss_per_subscriber_kb": round((rss_after - rss_before) / max(ready, 1) / 1024, 2),
    }


def run_streaming(
    subscribers: int, quick: bool, *, paths: tuple[str, ...] = ("stream_port", "main_port")
) -> dict[str, Any]:
    """Both paths at ``subscribers`` subscribers (``quick`` only picks fewer client
    processes' worth of patience); the figures per path."""
    clients = 2 if quick or subscribers <= 2000 else 4
    results = {path: measure(path, subscribers, clients) for path in paths}
    return {
        "subscribers": subscribers,
        "quick": quick,
        "clients": clients,
        # How busy the machine was (the run shares its cores with everything else).
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "paths": results,
    }


def _table(result: dict[str, Any]) -> str:
    rows = [
        f"{'path':<12} {'subs':>6} {'recv':>6} {'p50 s':>7} {'p99 s':>7} {'max s':>7} "
        f"{'<=1s':>6} {'KB/sub':>7} {'cpu us/sub':>10}"
    ]
    for r in result["paths"].values():

        def show(value: float | None) -> str:
            return "-" if value is None else f"{value:.3f}"

        rows.append(
            f"{r['path']:<12} {r['subscribers']:>6} {r['received']:>6} "
            f"{show(r['p50_seconds']):>7} {show(r['p99_seconds']):>7} "
            f"{show(r['max_seconds']):>7} {r['share_within_1s']:>6.1%} "
            f"{r['rss_per_subscriber_kb']:>7.1f} {r['server_cpu_us_per_subscriber']:>10.1f}"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 subscribers")
    parser.add_argument("--subscribers", type=int, help="default: 1,000 quick, 10,000 full")
    parser.add_argument("--paths", default="stream_port,main_port")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--serve-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_child:
        serve_child(args.serve_child)
        return
    subscribers = args.subscribers or (1000 if args.quick else 10_000)
    result = run_streaming(subscribers, args.quick, paths=tuple(args.paths.split(",")))
    print(_table(result))
    print(f"load average {result['load_average_1min']} on {result['cpus']} CPUs")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
