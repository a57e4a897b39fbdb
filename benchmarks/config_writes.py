"""Configuration writes: what a change through ``engine.service`` costs, read-your-writes
included, on PostgreSQL and on the memory store, in one run.

    python benchmarks/config_writes.py [--quick] [--json PATH] [--objects N]

It starts its own embedded PostgreSQL in a temporary directory. Each path gets its own
database (or memory store), filled with the same ``--objects`` flags first (default 200),
then times ``engine.service.create_object`` of one new flag at a time:

- ``memory``: an engine on the memory store (the reference);
- ``postgres``: an engine on PostgreSQL as it is: the write, then one load of the
  configuration (read-your-writes); the change feed's notification of the write comes back
  and is recognised as held;
- ``postgres_reload_twice``: the same engine with its loads stripped of their horizon
  (``ConfigState.horizon``), so it cannot tell what a load holds: every notification of
  its own writes sets off another load, as before migration 0026;
- ``postgres_write_only``: ``ConfigService`` on the same kind of store without an engine:
  the transaction alone, no load (the floor).

Between writes the engine's change feed is let settle (the write's notification arrived and
every announced change is held), so each write is timed alone, and the loads it set off are
counted (the snapshot's version). Rounds interleave the paths. Reported: median wall and
CPU (this process) milliseconds per write, loads per write, and each path's ratio to
``postgres``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import trio

PROJECT = "bench"
PATHS = ("memory", "postgres", "postgres_reload_twice", "postgres_write_only")


class _Path:
    """One path's way to write a flag and, when it has an engine, to let its feed settle."""

    def __init__(self, service: Any, engine: Any | None) -> None:
        self.service = service
        self.engine = engine
        self.wall_ms: list[float] = []
        self.cpu_ms: list[float] = []
        self.loads: list[int] = []

    async def write(self, key: str) -> None:
        from assay.engine import SYSTEM_KEY, Flag, FlagSpec

        await self.service.create_object(
            SYSTEM_KEY, Flag, PROJECT, FlagSpec(key=key, default_value=True)
        )

    async def settle(self, announced: int) -> None:
        """Wait until the engine's feed announced ``announced`` changes and holds them."""
        if self.engine is None:
            return
        actor = self.engine.decision.actor
        with trio.fail_after(10):
            while (  # noqa: ASYNC110
                actor.changes_announced < announced
                or actor.changes_settled < actor.changes_announced
            ):
                await trio.sleep(0.001)

    async def timed_write(self, key: str) -> None:
        engine = self.engine
        announced = engine.decision.actor.changes_announced if engine else 0
        version = engine.snapshot.version if engine else 0
        wall, cpu = time.perf_counter(), time.process_time()
        await self.write(key)
        self.wall_ms.append((time.perf_counter() - wall) * 1e3)
        self.cpu_ms.append((time.process_time() - cpu) * 1e3)
        if engine is not None:
            if engine.decide(key, "u", project=PROJECT).reason == "flag_not_found":
                raise SystemExit(f"{key} was not visible when its write returned")
            await self.settle(announced + 1)
            self.loads.append(engine.snapshot.version - version)


@asynccontextmanager
async def _open(path: str, dsn: str | None, objects: int) -> AsyncIterator[_Path]:
    import assay
    from assay.adapters.postgres import open_postgres_store
    from assay.engine import SYSTEM_KEY, ConfigService, ProjectSpec

    async with AsyncExitStack() as stack:
        if path == "postgres_write_only":
            assert dsn is not None
            store = await stack.enter_async_context(open_postgres_store(dsn))
            bench = _Path(ConfigService(store), None)
        else:
            config = (
                assay.EngineConfig(store="memory", log_level="WARNING")
                if dsn is None
                else assay.EngineConfig(database_url=dsn, log_level="WARNING")
            )
            engine = await stack.enter_async_context(
                assay.open_engine(config, load_entry_points=False)
            )
            if path == "postgres_reload_twice":
                _forget_horizons(engine.store)
            bench = _Path(engine.service, engine)
        await bench.service.create_project(SYSTEM_KEY, ProjectSpec(key=PROJECT))
        for i in range(objects):
            await bench.write(f"filler-{i:05d}")
        if bench.engine is not None:
            await bench.settle(0)
        yield bench


def _forget_horizons(store: Any) -> None:
    """Make every load say it cannot tell which changes it holds (the engine then loads
    again for each notification, as before the notifications named their change)."""
    load: Callable[[], Awaitable[Any]] = store.load_config

    async def blind() -> Any:
        return msgspec.structs.replace(await load(), horizon=None)

    store.load_config = blind


async def run(
    dsns: dict[str, str | None], objects: int, rounds: int, writes: int
) -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        benches = {p: await stack.enter_async_context(_open(p, dsns[p], objects)) for p in PATHS}
        for r in range(rounds):
            for p in PATHS:
                for i in range(writes):
                    await benches[p].timed_write(f"w-{r:03d}-{i:04d}")
            print(f"round {r + 1}/{rounds} done", flush=True)
    wall = {p: statistics.median(b.wall_ms) for p, b in benches.items()}
    cpu = {p: statistics.median(b.cpu_ms) for p, b in benches.items()}
    loads = {p: statistics.mean(b.loads) if b.loads else 0.0 for p, b in benches.items()}
    return {
        "median_wall_ms": wall,
        "median_cpu_ms": cpu,
        "loads_per_write": loads,
        "wall_ratio_to_postgres": {p: v / wall["postgres"] for p, v in wall.items()},
        "samples_wall_ms": {p: b.wall_ms for p, b in benches.items()},
        "samples_cpu_ms": {p: b.cpu_ms for p, b in benches.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run (under 40 s)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/config_writes.json"))
    parser.add_argument("--objects", type=int, default=200, help="flags written before timing")
    args = parser.parse_args()
    rounds, writes = (3, 10) if args.quick else (5, 40)

    from assay.adapters.embedded import start_embedded_postgres

    started = time.perf_counter()
    load_before = os.getloadavg()
    data_dir = Path(tempfile.mkdtemp(prefix="assay-bench-writes-"))
    server = start_embedded_postgres(data_dir)
    try:
        dsns: dict[str, str | None] = {"memory": None}
        for p in PATHS[1:]:
            server.create_database(p)
            dsns[p] = server.dsn_for(p)
        print(f"PostgreSQL in {data_dir}; {args.objects} flags, {rounds} x {writes} writes")
        result = trio.run(run, dsns, args.objects, rounds, writes)
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    load_after = os.getloadavg()

    print()
    print(f"{'path':<24}{'wall ms':>10}{'CPU ms':>10}{'loads/write':>13}{'x postgres':>12}")
    for p in PATHS:
        print(
            f"{p:<24}{result['median_wall_ms'][p]:>10.2f}{result['median_cpu_ms'][p]:>10.2f}"
            f"{result['loads_per_write'][p]:>13.2f}{result['wall_ratio_to_postgres'][p]:>12.2f}"
        )
    elapsed = time.perf_counter() - started
    print(
        f"\n{elapsed:.1f}s in all; load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after"
    )
    results = {
        "benchmark": "config_writes",
        "quick": args.quick,
        "objects": args.objects,
        "rounds": rounds,
        "writes_per_round": writes,
        **result,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_before": load_before,
            "load_average_after": load_after,
        },
        "seconds": elapsed,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(msgspec.json.format(msgspec.json.encode(results)).decode() + "\n")


if __name__ == "__main__":
    main()
