"""Soak benchmark: mixed decide and event traffic at a fixed rate, for a fixed time,
against one ``assay serve`` process on loopback.

    python benchmarks/soak.py [--quick] [--json PATH] [--rate N] [--seconds S]

The server runs on an embedded PostgreSQL of its own (a temporary data directory), with
a project holding a plain flag, a flag whose running experiment assigns everyone (so
every such decision is durably recorded) and a metric. Requests are sent open-loop: each
is due at a fixed time (``rate`` per second) and its latency counts from then, so a
stall shows as latency, not as fewer requests. The mix: 40% decide on the plain flag,
40% decide on the experiment's flag (a durable record each), 20% an event batch of 5
subjects' exposures and conversions (with event ids).

Reported: p50/p99 latency per kind and overall, errors (any answer but 200, and requests
without an answer), and the server's resident memory after the warm-up and at the end
(growth in %). The baseline, from the same run and server: ``GET /health`` at the same
rate before the mix. Loopback only; stops by itself.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import trio

import assay
from assay.adapters.embedded import start_embedded_postgres
from assay.engine import (
    SYSTEM_KEY,
    EngineConfig,
    Experiment,
    ExperimentRule,
    ExperimentSpec,
    Flag,
    FlagSpec,
    Metric,
    MetricSpec,
    ProjectSpec,
    Role,
    Transition,
    Variant,
)

PROJECT = "soak"
_SERVING = re.compile(rb"serving on http://127\.0\.0\.1:(\d+)")


async def populate(dsn: str) -> str:
    """The soak project; an ADMIN key of it."""
    config = EngineConfig(database_url=dsn)
    async with assay.open_engine(config, load_entry_points=False) as engine:
        service = engine.service
        await service.create_project(SYSTEM_KEY, ProjectSpec(key=PROJECT))
        await service.create_object(SYSTEM_KEY, Metric, PROJECT, MetricSpec(key="buy"))
        spec = ExperimentSpec(
            key="exp", variants=[Variant(key="a", value=1), Variant(key="b", value=2)]
        )
        await service.create_object(SYSTEM_KEY, Experiment, PROJECT, spec)
        await service.transition_experiment(SYSTEM_KEY, PROJECT, "exp", Transition.START)
        await service.create_object(
            SYSTEM_KEY,
            Flag,
            PROJECT,
            FlagSpec(key="plain", type="boolean", default_value=True),  # type: ignore[arg-type]
        )
        await service.create_object(
            SYSTEM_KEY,
            Flag,
            PROJECT,
            FlagSpec(
                key="assigned",
                type="number",  # type: ignore[arg-type]
                default_value=0,
                rules=[ExperimentRule(id="x", experiment="exp")],
            ),
        )
        _, secret = await service.create_key(SYSTEM_KEY, role=Role.ADMIN, project=PROJECT)
    return secret


async def start_server(dsn: str) -> tuple[trio.Process, int]:
    command = [
        sys.executable, "-c", "from assay.adapters.cli import main; raise SystemExit(main())",
        "serve", "--database-url", dsn, "--host", "127.0.0.1", "--port", "0",
    ]  # fmt: skip
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert process.stdout is not None
    seen = b""
    with trio.fail_after(60):
        while (found := _SERVING.search(seen)) is None:
            chunk = await process.stdout.receive_some(4096)
            if not chunk:
                raise RuntimeError(f"the server exited: {seen!r}")
            seen += chunk
    return process, int(found.group(1))


def request_for(n: int) -> tuple[str, str, Any]:
    """(kind, path, body) of the n-th request of the mix."""
    slot = n % 10
    if slot < 4:
        return "decide plain", "/api/v1/decide", {"flag": "plain", "subject": f"u{n}"}
    if slot < 8:
        return "decide assigned", "/api/v1/decide", {"flag": "assigned", "subject": f"u{n}"}
    events: list[dict[str, Any]] = []
    for i in range(5):
        subject = f"e{n}-{i}"
        events.append({"type": "exposure", "experiment": "exp", "subject": subject,
                       "variant": "a", "event_id": f"x{subject}"})  # fmt: skip
        events.append({"type": "conversion", "experiment": "exp", "subject": subject,
                       "metric": "buy", "event_id": f"c{subject}"})  # fmt: skip
    return "events", "/api/v1/events", {"events": events}


class Results:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = {}
        self.errors: dict[str, int] = {}
        self.unanswered = 0

    def add(self, kind: str, seconds: float, status: int | None) -> None:
        self.latency.setdefault(kind, []).append(seconds)
        if status is None:
            self.unanswered += 1
        elif status != 200:
            key = f"{kind}: {status}"
            self.errors[key] = self.errors.get(key, 0) + 1


async def drive(
    client: httpx.AsyncClient,
    rate: float,
    seconds: float,
    results: Results | None,
    *,
    start_at: int = 0,
    only_health: bool = False,
) -> int:
    """Send ``rate`` requests a second for ``seconds``, open loop; how many were sent."""
    count = int(rate * seconds)
    started = trio.current_time()

    async def one(n: int, due: float) -> None:
        if only_health:
            kind, method, path, body = "health (baseline)", "GET", "/health", None
        else:
            kind, path, body = request_for(start_at + n)
            method = "POST"
        status: int | None = None
        try:
            answer = await client.request(method, path, json=body)
            status = answer.status_code
        except httpx.HTTPError:
            status = None
        if results is not None:
            results.add(kind, trio.current_time() - due, status)

    async with trio.open_nursery() as nursery:
        for n in range(count):
            due = started + n / rate
            now = trio.current_time()
            if due > now:
                await trio.sleep(due - now)
            nursery.start_soon(one, n, due)
    return count


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def soak(rate: float, seconds: float, warmup: float) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="assay-soak-"))
    server_pg = await trio.to_thread.run_sync(start_embedded_postgres, data_dir)
    process: trio.Process | None = None
    try:
        secret = await populate(server_pg.dsn)
        process, port = await start_server(server_pg.dsn)
        server = psutil.Process(process.pid)
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {secret}"},
            timeout=30,
            limits=limits,
        ) as client:
            baseline = Results()
            await drive(client, rate, min(10.0, seconds / 3), baseline, only_health=True)
            sent = await drive(client, rate, warmup, None)
            rss_before = server.memory_info().rss
            results = Results()
            wall = time.perf_counter()
            await drive(client, rate, seconds, results, start_at=sent)
            wall = time.perf_counter() - wall
            rss_after = server.memory_info().rss
    finally:
        if process is not None:
            process.terminate()
            with trio.move_on_after(15):
                await process.wait()
            process.kill()
            await process.wait()
        await trio.to_thread.run_sync(server_pg.stop)
        shutil.rmtree(data_dir, ignore_errors=True)

    def describe(samples: list[float]) -> dict[str, Any]:
        return {
            "requests": len(samples),
            "p50_ms": statistics.median(samples) * 1e3,
            "p99_ms": percentile(samples, 0.99) * 1e3,
        }

    everything = [s for samples in results.latency.values() for s in samples]
    return {
        "rate_per_s": rate,
        "seconds": seconds,
        "warmup_seconds": warmup,
        "achieved_per_s": len(everything) / wall,
        "baseline": describe(baseline.latency["health (baseline)"]),
        "kinds": {kind: describe(samples) for kind, samples in sorted(results.latency.items())},
        "all": describe(everything),
        "errors": results.errors,
        "unanswered": results.unanswered,
        "rss_before_mb": rss_before / 2**20,
        "rss_after_mb": rss_after / 2**20,
        "rss_growth_pct": (rss_after - rss_before) / rss_before * 100,
        "machine": {"python": platform.python_version(), "cpus": psutil.cpu_count()},
    }


def print_table(result: dict[str, Any]) -> None:
    print(f"\nsoak: {result['rate_per_s']:.0f} requests/s for {result['seconds']:.0f} s "
          f"(after {result['warmup_seconds']:.0f} s warm-up), achieved "
          f"{result['achieved_per_s']:.0f}/s\n")  # fmt: skip
    print(f"{'kind':22} {'requests':>9} {'p50 ms':>9} {'p99 ms':>9}")
    rows = [("health (baseline)", result["baseline"]), *result["kinds"].items()]
    rows.append(("all of the mix", result["all"]))
    for kind, row in rows:
        print(f"{kind:22} {row['requests']:>9} {row['p50_ms']:>9.2f} {row['p99_ms']:>9.2f}")
    errors = sum(result["errors"].values())
    print(f"\nerrors: {errors} {result['errors'] or ''}; unanswered: {result['unanswered']}")
    before, after = result["rss_before_mb"], result["rss_after_mb"]
    growth = result["rss_growth_pct"]
    print(f"server memory: {before:.1f} MB after warm-up, {after:.1f} MB at the end", end="")
    print(f" ({growth:+.1f}%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (under 60 s)")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--rate", type=float, help="requests per second (default 200; 50 quick)")
    parser.add_argument("--seconds", type=float, help="measured seconds (default 300)")
    args = parser.parse_args()
    rate = args.rate or (50.0 if args.quick else 200.0)
    seconds = args.seconds or (20.0 if args.quick else 300.0)
    warmup = 5.0 if args.quick else 30.0
    result = trio.run(soak, rate, seconds, warmup)
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
