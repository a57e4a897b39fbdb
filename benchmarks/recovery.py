"""Recovery benchmark: two ``assay serve`` nodes on one embedded PostgreSQL, which stops
for a while and starts again.

    python benchmarks/recovery.py [--quick] [--json PATH] [--rounds N] [--outage S]

Everything runs on loopback, with a PostgreSQL of its own in a temporary data directory
and the servers' default configuration (the soak benchmark's project: a plain flag, a
flag whose running experiment assigns everyone, so every such decision is a durable
record, and a metric). Each round:

1. **Convergence, PostgreSQL up** (the baseline): ``changes`` times, a flag is created
   through one node (alternating) and the other node is polled every 5 ms with
   ``/decide`` until it stops answering ``flag_not_found``; the time counts from the
   creating node's 201.
2. **Outage:** steady light traffic to both nodes (per node, three loops each sending one
   request every 20 ms: decide on the plain flag, decide on the experiment's flag, an
   event batch of one subject's exposure and conversion) while PostgreSQL is stopped
   (``pg_ctl stop -m fast``) for ``outage`` seconds and started again. Every answer is
   counted per node, kind and phase (before, outage, after).
3. **Recovery,** counted from the moment ``pg_ctl start`` returns (PostgreSQL accepts
   connections): per node, the first 200 for decide on the experiment's flag and for an
   event batch, and the moment a flag created through the *other* node (its creation
   retried every 20 ms until it answers 201) is decided on.

Targets (issue 11): the plain flag's decide answers 200 throughout the outage; after the
restart every node serves decide, events and configuration changes within 2 s; with
PostgreSQL up, configuration converges across nodes within 1 s (taken on the max).
Bounded: a recovery not seen within ``RECOVERY_LIMIT`` seconds is reported as missed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import trio
from soak import populate, start_server  # benchmarks/ is this script's directory

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.faults
from assay.adapters.embedded import start_embedded_postgres
from tests.faults.support import FaultyPostgres

RECOVERY_LIMIT = 30.0
"""Seconds after the restart past which a node that has not recovered counts as missed."""
PERIOD = 0.02
"""Seconds between two requests of one traffic loop."""
KINDS = ("decide plain", "decide assigned", "events")
RECOVERY_TARGET_S = 2.0
CONVERGENCE_TARGET_S = 1.0


def request_for(kind: str, node: int, n: int) -> tuple[str, Any]:
    if kind == "decide plain":
        return "/api/v1/decide", {"flag": "plain", "subject": f"n{node}p{n}"}
    if kind == "decide assigned":
        return "/api/v1/decide", {"flag": "assigned", "subject": f"n{node}a{n}"}
    subject = f"n{node}e{n}"
    return "/api/v1/events", {
        "events": [
            {"type": "exposure", "experiment": "exp", "subject": subject, "variant": "a",
             "event_id": f"x{subject}"},
            {"type": "conversion", "experiment": "exp", "subject": subject, "metric": "buy",
             "event_id": f"c{subject}"},
        ]
    }  # fmt: skip


@dataclass
class Answer:
    sent: float
    done: float
    status: int | None  # None: no answer (transport error or timeout)
    code: str | None


@dataclass
class Log:
    """Every answer of one node's traffic, by kind."""

    answers: dict[str, list[Answer]] = field(default_factory=lambda: {k: [] for k in KINDS})


async def traffic(
    client: httpx.AsyncClient, node: int, kind: str, log: Log, stop: trio.Event
) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        path, body = request_for(kind, node, n)
        sent = trio.current_time()
        status: int | None = None
        code: str | None = None
        try:
            answer = await client.post(path, json=body)
            status = answer.status_code
            if status != 200:
                code = answer.json().get("error", {}).get("code")
        except (httpx.HTTPError, ValueError):
            pass
        log.answers[kind].append(Answer(sent, trio.current_time(), status, code))
        await trio.sleep(PERIOD)


async def seen_on(client: httpx.AsyncClient, flag: str, limit: float) -> float | None:
    """When ``client``'s node first decides on ``flag`` (trio time), polling every 5 ms."""
    with trio.move_on_after(limit):
        while True:
            try:
                answer = await client.post("/api/v1/decide", json={"flag": flag, "subject": "c"})
                if answer.status_code == 200 and answer.json()["reason"] != "flag_not_found":
                    return trio.current_time()
            except httpx.HTTPError:
                pass
            await trio.sleep(0.005)
    return None


async def create_flag(client: httpx.AsyncClient, key: str, limit: float) -> float | None:
    """Create ``key`` through ``client``'s node, retrying every 20 ms; when it got its 201."""
    with trio.move_on_after(limit):
        while True:
            try:
                answer = await client.post("/api/v1/flags", json={"key": key})
                if answer.status_code == 201:
                    return trio.current_time()
            except httpx.HTTPError:
                pass
            await trio.sleep(PERIOD)
    return None


async def convergence(clients: list[httpx.AsyncClient], changes: int, tag: str) -> list[float]:
    """Seconds from one node's 201 until the other decides on the new flag."""
    times: list[float] = []
    for i in range(changes):
        maker, watcher = clients[i % 2], clients[1 - i % 2]
        key = f"conv-{tag}-{i}"
        made = await create_flag(maker, key, 10)
        assert made is not None, "a flag could not be created with PostgreSQL up"
        seen = await seen_on(watcher, key, 10)
        times.append(float("inf") if seen is None else seen - made)
        await trio.sleep(0.05)
    return times


def first_ok_after(answers: list[Answer], since: float) -> float | None:
    done = [a.done for a in answers if a.status == 200 and a.done >= since]
    return min(done) - since if done else None


def tally(answers: list[Answer], start: float, end: float) -> dict[str, int]:
    """Answers sent in [start, end) by status (``none``: no answer; 503 with its code)."""
    counts: dict[str, int] = {}
    for a in answers:
        if start <= a.sent < end:
            label = "none" if a.status is None else str(a.status)
            if a.code:
                label += f" {a.code}"
            counts[label] = counts.get(label, 0) + 1
    return counts


async def one_round(
    pg: FaultyPostgres, clients: list[httpx.AsyncClient], number: int, outage: float, changes: int
) -> dict[str, Any]:
    converge = await convergence(clients, changes, f"r{number}")
    logs = [Log(), Log()]
    stop = trio.Event()
    result: dict[str, Any] = {"convergence_s": converge, "nodes": []}
    async with trio.open_nursery() as nursery:
        for node, client in enumerate(clients):
            for kind in KINDS:
                nursery.start_soon(traffic, client, node, kind, logs[node], stop)
        await trio.sleep(2.0)
        down_at = trio.current_time()
        await trio.to_thread.run_sync(pg.stop)
        stopped_at = trio.current_time()
        await trio.sleep(outage)
        await trio.to_thread.run_sync(pg.start)
        up_at = trio.current_time()
        seen: list[float | None] = [None, None]

        async def config_back(node: int) -> None:
            maker, watcher = clients[1 - node], clients[node]
            key = f"back-r{number}-n{node}"
            made = await create_flag(maker, key, RECOVERY_LIMIT)
            if made is not None:
                at = await seen_on(watcher, key, RECOVERY_LIMIT - (made - up_at))
                seen[node] = None if at is None else at - up_at

        async with trio.open_nursery() as probes:
            for node in range(2):
                probes.start_soon(config_back, node)
        # Traffic until every node has answered 200 to each kind, or the limit.
        with trio.move_on_after(RECOVERY_LIMIT):
            while not all(  # noqa: ASYNC110 - polls the traffic loops' answers
                first_ok_after(log.answers[k], up_at) is not None
                for log in logs
                for k in ("decide assigned", "events")
            ):
                await trio.sleep(0.1)
        await trio.sleep(1.0)
        stop.set()
    for node, log in enumerate(logs):
        result["nodes"].append(
            {
                "before": {k: tally(log.answers[k], float("-inf"), down_at) for k in KINDS},
                # Sent while PostgreSQL was stopped (from pg_ctl's return to the restart).
                "outage": {k: tally(log.answers[k], stopped_at, up_at) for k in KINDS},
                "after": {k: tally(log.answers[k], up_at, float("inf")) for k in KINDS},
                "outage_latency_ms": {
                    k: latency_ms(log.answers[k], stopped_at, up_at) for k in KINDS
                },
                "plain_p50_ms_before": p50_ms(log.answers["decide plain"], float("-inf"), down_at),
                "plain_p50_ms_outage": p50_ms(log.answers["decide plain"], stopped_at, up_at),
                "recovery_s": {
                    "decide assigned": first_ok_after(log.answers["decide assigned"], up_at),
                    "events": first_ok_after(log.answers["events"], up_at),
                    "config from other node": seen[node],
                },
            }
        )
    result["pg_stop_s"] = stopped_at - down_at
    return result


def latency_ms(answers: list[Answer], start: float, end: float) -> dict[str, float] | None:
    """Median and max latency of every answer (any status) sent in [start, end)."""
    took = [a.done - a.sent for a in answers if start <= a.sent < end]
    if not took:
        return None
    return {"p50": statistics.median(took) * 1e3, "max": max(took) * 1e3}


def p50_ms(answers: list[Answer], start: float, end: float) -> float | None:
    took = [a.done - a.sent for a in answers if start <= a.sent < end and a.status == 200]
    return statistics.median(took) * 1e3 if took else None


async def recovery(rounds: int, outage: float, changes: int) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="assay-recovery-"))
    embedded = await trio.to_thread.run_sync(start_embedded_postgres, data_dir)
    pg = FaultyPostgres(embedded)
    processes: list[trio.Process] = []
    try:
        secret = await populate(embedded.dsn)
        ports = []
        for _ in range(2):
            process, port = await start_server(embedded.dsn)
            processes.append(process)
            ports.append(port)
        headers = {"Authorization": f"Bearer {secret}"}
        clients = [
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{p}", headers=headers, timeout=10)
            for p in ports
        ]
        try:
            results = []
            for number in range(rounds):
                results.append(await one_round(pg, clients, number, outage, changes))
                await trio.sleep(1.0)
        finally:
            for client in clients:
                await client.aclose()
    finally:
        for process in processes:
            process.terminate()
            with trio.move_on_after(15):
                await process.wait()
            process.kill()
            await process.wait()
        # pgserver stops only the postmaster it started; one restarted here is ours.
        with contextlib.suppress(Exception):
            await trio.to_thread.run_sync(pg.stop)
        with contextlib.suppress(Exception):
            await trio.to_thread.run_sync(embedded.stop)
        shutil.rmtree(data_dir, ignore_errors=True)
    return summarize(results, rounds, outage, changes)


def median_or_none(values: list[float | None]) -> float | None:
    return (
        statistics.median([v if v is not None else float("inf") for v in values])
        if values
        else None
    )


def summarize(
    results: list[dict[str, Any]], rounds: int, outage: float, changes: int
) -> dict[str, Any]:
    converge = [t for r in results for t in r["convergence_s"]]
    recovery_medians: dict[str, dict[str, float | None]] = {}
    worst_recovery = 0.0
    plain_outage_all_200 = True
    plain_outage_count = 0
    for node in range(2):
        per_kind: dict[str, float | None] = {}
        for kind in ("decide assigned", "events", "config from other node"):
            values = [r["nodes"][node]["recovery_s"][kind] for r in results]
            per_kind[kind] = median_or_none(values)
            worst_recovery = max(
                worst_recovery, max(v if v is not None else float("inf") for v in values)
            )
        recovery_medians[f"node {node}"] = per_kind
        for r in results:
            plain = r["nodes"][node]["outage"]["decide plain"]
            plain_outage_count += sum(plain.values())
            if set(plain) - {"200"}:
                plain_outage_all_200 = False
    return {
        "rounds": rounds,
        "outage_seconds": outage,
        "changes_per_round": changes,
        "convergence_up": {
            "changes": len(converge),
            "median_ms": statistics.median(converge) * 1e3,
            "max_ms": max(converge) * 1e3,
        },
        "recovery_median_s": recovery_medians,
        "recovery_worst_s": worst_recovery,
        "targets": {
            "plain_decide_200_during_outage": plain_outage_all_200 and plain_outage_count > 0,
            "recovery_within_2s": worst_recovery <= RECOVERY_TARGET_S,
            "convergence_within_1s": max(converge) <= CONVERGENCE_TARGET_S,
        },
        "rounds_detail": results,
        "machine": {"python": platform.python_version(), "cpus": psutil.cpu_count()},
    }


def fmt_s(value: float | None) -> str:
    return "missed" if value is None or value == float("inf") else f"{value:.2f}"


def print_table(result: dict[str, Any]) -> None:
    print(f"\nrecovery: {result['rounds']} round(s), PostgreSQL stopped "
          f"{result['outage_seconds']:.0f} s each, 2 nodes\n")  # fmt: skip
    conv = result["convergence_up"]
    print(f"configuration convergence, PostgreSQL up ({conv['changes']} changes): "
          f"median {conv['median_ms']:.0f} ms, max {conv['max_ms']:.0f} ms")  # fmt: skip
    print(f"\n{'after restart (median s)':28} {'node 0':>9} {'node 1':>9}")
    for kind in ("decide assigned", "events", "config from other node"):
        row = [fmt_s(result["recovery_median_s"][f"node {n}"][kind]) for n in range(2)]
        print(f"{kind:28} {row[0]:>9} {row[1]:>9}")
    print(f"worst over rounds and nodes: {fmt_s(result['recovery_worst_s'])} s")
    print("\nanswers sent during the outage, by node and kind (all rounds):")
    for node in range(2):
        for kind in KINDS:
            counts: dict[str, int] = {}
            for r in result["rounds_detail"]:
                for label, n in r["nodes"][node]["outage"][kind].items():
                    counts[label] = counts.get(label, 0) + n
            spans = [r["nodes"][node]["outage_latency_ms"][kind] for r in result["rounds_detail"]]
            worst = max((s["max"] for s in spans if s), default=0.0)
            print(f"  node {node} {kind:16} {counts} (slowest answer {worst:.0f} ms)")
    for r_index, r in enumerate(result["rounds_detail"]):
        for node in range(2):
            n = r["nodes"][node]
            before, during = n["plain_p50_ms_before"], n["plain_p50_ms_outage"]
            print(f"  round {r_index} node {node}: plain decide p50 {before or 0:.1f} ms before,"
                  f" {during or 0:.1f} ms during the outage")  # fmt: skip
    print(
        "\ntargets:",
        ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in result["targets"].items()),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, 3 s outage")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--rounds", type=int, help="rounds (default 3; quick 1)")
    parser.add_argument("--outage", type=float, help="seconds PostgreSQL is down (10; quick 3)")
    parser.add_argument("--changes", type=int, help="convergence changes per round (20; quick 10)")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    outage = args.outage or (3.0 if args.quick else 10.0)
    changes = args.changes or (10 if args.quick else 20)
    result = trio.run(recovery, rounds, outage, changes)
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
