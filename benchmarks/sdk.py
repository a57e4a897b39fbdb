"""SDK protocol benchmark: GrowthBook's SDK routes on hypercorn's trio worker, against
baselines measured in the same run.

    python benchmarks/sdk.py [--quick] [--json PATH]

One project of 20 flags (force, rollout and experiment rules, a running experiment on every
fourth flag) and one SDK connection, served by ``assay`` (memory store, decision cache off,
so every evaluation is a real one; default ``async`` decision records) in a subprocess,
driven by the lean keep-alive client the decide benchmark uses too (``_load.py``), in this
process:

1. ``GET /api/features/{clientKey}`` requests/s against a **raw ASGI app serving the same
   bytes** (the payload assay serves, with the same headers) on the same hypercorn
   configuration. Target: at least 90%.
2. ``GET /api/features/{clientKey}`` with ``If-None-Match``: 304 answers/s (against the raw
   app's 200s of the payload, for scale).
3. ``POST /api/eval/{clientKey}``: remote evaluations/s of the 20-flag payload, each
   request another subject, against ``POST /api/v1/decide`` (one flag) requests/s for the
   same subjects. Target: at least 80%.
4. Server-sent events (``GET /sub/{clientKey}``, ``_sdk_streaming.run_streaming``): N
   concurrent subscribers (10,000; ``--quick`` 1,000; ``--subscribers``), one flag changed,
   the time until each has the new payload and the server's memory per subscriber, on the
   lean stream port and through hypercorn's main port. Target: 99% within 1 s.

On a shared machine requests/s swing with what else runs; the server's CPU time per
request is reported beside them, and an in-process part times the handlers alone (no
server, no sockets): the SDK front answering ``/api/features`` against the raw ASGI app
answering the same bytes, and a remote evaluation of 20 flags against one durable
``adecide_many`` of one flag (what ``/decide`` does), in CPU microseconds per request.

Rounds interleave the scenarios; medians are reported. Before timing, the answers are
checked: the raw app's body is assay's, a 304 comes with the ETag, every remote evaluation
equals ``/decide`` for the flag both answer. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from _load import Connection, LoadResult, run_load
from _machine import machine_info  # benchmarks/ is this script's directory
from _sdk_streaming import _table as streaming_table
from _sdk_streaming import run_streaming
from _server import ServerProcess, fixed_answer_app, serve_child, serve_raw

PROJECT = "shop"
FLAGS = 20
DECIDE_FLAG = "f00"


def definitions() -> dict[str, Any]:
    """20 flags: every fourth runs an experiment, the others force or roll out values."""
    experiments = []
    flags: list[dict[str, Any]] = []
    for i in range(FLAGS):
        key = f"f{i:02d}"
        if i % 4 == 0:
            experiments.append(
                {
                    "key": f"e{i:02d}",
                    "status": "RUNNING",
                    "variants": [
                        {"key": "control", "value": "a"},
                        {"key": "treatment", "value": "b"},
                    ],
                    "coverage": 0.9,
                    "condition": {"country": {"$in": ["DE", "FR", "US"]}},
                }
            )
            rules: list[dict[str, Any]] = [{"type": "experiment", "experiment": f"e{i:02d}"}]
            flags.append({"key": key, "type": "string", "default_value": "a", "rules": rules})
        elif i % 4 == 1:
            rules = [{"type": "rollout", "coverage": 0.5, "value": True}]
            flags.append({"key": key, "default_value": False, "rules": rules})
        elif i % 4 == 2:
            rules = [{"type": "force", "condition": {"age": {"$gte": 30}}, "value": 2}]
            flags.append({"key": key, "type": "number", "default_value": 1, "rules": rules})
        else:
            rules = [{"type": "force", "condition": {"country": "DE"}, "value": {"v": 1}}]
            flags.append({"key": key, "type": "json", "default_value": {"v": 0}, "rules": rules})
    return {"experiments": experiments, "flags": flags}


def make_users(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "id": f"user-{i}",
            "country": rng.choice(["DE", "FR", "US", "JP"]),
            "age": rng.randint(18, 80),
        }
        for i in range(count)
    ]


# --- servers (subprocesses: ``--serve KIND``) ---------------------------------------------


async def serve_main(kind: str, payload_file: str | None) -> None:
    """A server subprocess (``_server.serve_child``): assay, or the raw app serving the
    payload saved in ``payload_file``."""
    if kind == "raw":
        assert payload_file is not None
        await serve_child(functools.partial(serve_saved_payload, payload_file))
    else:
        await serve_child(serve_assay)


async def serve_saved_payload(payload_file: str, stop: trio.Event, announce: Any) -> None:
    """The baseline: the bytes assay serves for the payload (body and headers, saved by
    the parent), answered to every request by a raw ASGI app."""
    saved = json.loads(await trio.Path(payload_file).read_text())
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in saved["headers"]]
    await serve_raw(fixed_answer_app(saved["body"].encode(), headers), stop, announce)


async def populate(engine: Any) -> Any:
    """The project (``definitions()``) and its SDK connection, which is returned."""
    import msgspec

    from assay.engine import SYSTEM_KEY, ProjectSpec, SdkConnectionSpec, load_definitions
    from assay.engine._definitions import Definitions

    service = engine.service
    await service.create_project(SYSTEM_KEY, ProjectSpec(key=PROJECT))
    defs = msgspec.convert(definitions(), Definitions)
    await load_definitions(service, SYSTEM_KEY, PROJECT, defs)
    return await service.create_connection(SYSTEM_KEY, PROJECT, SdkConnectionSpec())


async def serve_assay(stop: trio.Event, announce: Any) -> None:
    import assay
    from assay.adapters.http import serve
    from assay.engine import SYSTEM_KEY, Role

    config = assay.EngineConfig(store="memory", decision_cache_size=0)
    async with assay.open_engine(config, load_entry_points=False) as engine:
        connection = await populate(engine)
        _, secret = await engine.service.create_key(SYSTEM_KEY, role=Role.SDK, project=PROJECT)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                lambda task_status: serve(engine, host="127.0.0.1", port=0, task_status=task_status)
            )
            announce(port=port, secret=secret, client_key=connection.client_key, pid=os.getpid())
            await stop.wait()
            nursery.cancel_scope.cancel()
        announce(**engine.decision_stats)


async def start_server(kind: str, payload_file: str | None = None) -> ServerProcess:
    """This script's ``--serve KIND`` subprocess (the raw one serves ``payload_file``)."""
    extra = ["--payload-file", payload_file] if payload_file else []
    return await ServerProcess.start(__file__, kind, *extra)


# --- requests ----------------------------------------------------------------------------


def get(path: str, port: int, etag: str | None = None) -> bytes:
    extra = f"If-None-Match: {etag}\r\n" if etag else ""
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode()


def post(path: str, port: int, body: bytes, secret: str | None = None) -> bytes:
    auth = f"Authorization: Bearer {secret}\r\n" if secret else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def fetch(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection, with the response's headers (for checks)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(raw)
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            rest += await stream.receive_some(65536)
        return int(lines[0][9:12]), headers, rest[:length]


async def verify(assay_server: ServerProcess, users: list[dict[str, Any]]) -> None:
    """Remote evaluation equals /decide for the flag both answer, for a sample of users."""
    conn = Connection(assay_server.port)
    try:
        for user in users[:200]:
            path = f"/api/eval/{assay_server.client_key}"
            body = json.dumps({"attributes": user}).encode()
            status, evaluated = await conn.request(post(path, assay_server.port, body))
            if status != 200:
                raise SystemExit(f"/api/eval answered {status}: {evaluated[:300]!r}")
            features = json.loads(evaluated)["features"]
            if len(features) != FLAGS:
                raise SystemExit(f"/api/eval answered {len(features)} flags, not {FLAGS}")
            decide_body = json.dumps(
                {"flag": DECIDE_FLAG, "subject": user["id"], "attributes": user}
            ).encode()
            status, decided = await conn.request(
                post(
                    f"/api/v1/decide?project={PROJECT}",
                    assay_server.port,
                    decide_body,
                    assay_server.secret,
                )
            )
            if (
                status != 200
                or json.loads(decided)["value"] != (features[DECIDE_FLAG]["defaultValue"])
            ):
                raise SystemExit(f"/api/eval and /decide disagree for {user}")
    finally:
        await conn.aclose()


async def run(params: dict[str, Any]) -> dict[str, Any]:
    users = make_users(params["users"], params["seed"])
    servers: dict[str, ServerProcess] = {}
    results: dict[str, list[LoadResult]] = {}
    tmp = tempfile.TemporaryDirectory(prefix="assay-bench-sdk-")
    try:
        servers["assay"] = assay_server = await start_server("assay")
        features_path = f"/api/features/{assay_server.client_key}"
        status, headers, document = await fetch(
            assay_server.port, get(features_path, assay_server.port)
        )
        if status != 200:
            raise SystemExit(f"/api/features answered {status}")
        payload_file = Path(tmp.name) / "payload.json"
        kept = [(k, v) for k, v in headers.items() if k not in ("date", "server")]
        payload_file.write_text(json.dumps({"body": document.decode(), "headers": kept}))
        servers["raw"] = raw = await start_server("raw", str(payload_file))
        status, _, raw_document = await fetch(raw.port, get(features_path, raw.port))
        if raw_document != document:
            raise SystemExit("the raw app does not serve assay's bytes")
        etag = headers["etag"]
        status, again, body = await fetch(
            assay_server.port, get(features_path, assay_server.port, etag)
        )
        if status != 304 or body or again.get("etag") != etag:
            raise SystemExit(f"If-None-Match answered {status}, not 304")
        await verify(assay_server, users)

        a, r = assay_server.port, raw.port
        evals = [
            post(f"/api/eval/{assay_server.client_key}", a, json.dumps({"attributes": u}).encode())
            for u in users
        ]
        decides = [
            post(
                f"/api/v1/decide?project={PROJECT}",
                a,
                json.dumps({"flag": DECIDE_FLAG, "subject": u["id"], "attributes": u}).encode(),
                assay_server.secret,
            )
            for u in users
        ]
        tests: list[tuple[str, ServerProcess, list[bytes], int]] = [
            ("raw/features", raw, [get(features_path, r)], 200),
            ("assay/features", assay_server, [get(features_path, a)], 200),
            ("assay/features_304", assay_server, [get(features_path, a, etag)], 304),
            ("assay/eval", assay_server, evals, 200),
            ("assay/decide", assay_server, decides, 200),
        ]
        for _ in range(params["rounds"]):
            for name, server, requests, expect in tests:
                result = await load(server, requests, expect, params)
                results.setdefault(name, []).append(result)
    finally:
        with trio.CancelScope(shield=True):
            for server in servers.values():
                await server.stop()
        tmp.cleanup()

    def median(name: str) -> dict[str, Any]:
        runs = sorted(results[name], key=lambda x: x.rps)
        described: dict[str, Any] = runs[len(runs) // 2].describe()
        described["rounds_per_s"] = [x.rps for x in results[name]]
        return described

    details = {name: median(name) for name in results}
    rps = {name: d["requests_per_s"] for name, d in details.items()}
    out: dict[str, Any] = {
        "payload_bytes": len(document),
        "raw_features_rps": rps["raw/features"],
        "features_rps": rps["assay/features"],
        "not_modified_rps": rps["assay/features_304"],
        "eval_rps": rps["assay/eval"],
        "decide_rps": rps["assay/decide"],
        "features_over_raw": rps["assay/features"] / rps["raw/features"],
        "not_modified_over_raw": rps["assay/features_304"] / rps["raw/features"],
        "eval_over_decide": rps["assay/eval"] / rps["assay/decide"],
        "paired": {
            "features_over_raw_per_round": [
                x.rps / y.rps
                for x, y in zip(results["assay/features"], results["raw/features"], strict=True)
            ],
            "eval_over_decide_per_round": [
                x.rps / y.rps
                for x, y in zip(results["assay/eval"], results["assay/decide"], strict=True)
            ],
        },
        "details": details,
        # Server-sent events: filled in by main() (run_streaming, its own servers).
        "sse": None,
    }

    def by_cpu(name: str, baseline: str) -> float | None:
        # The same ratio judged by the server's CPU time per request, which a busy shared
        # machine distorts far less than requests/s.
        ours = details[name]["server_cpu_us_per_request"]
        theirs = details[baseline]["server_cpu_us_per_request"]
        return theirs / ours if ours and theirs else None

    out["features_over_raw_by_cpu"] = by_cpu("assay/features", "raw/features")
    out["not_modified_over_raw_by_cpu"] = by_cpu("assay/features_304", "raw/features")
    out["eval_over_decide_by_cpu"] = by_cpu("assay/eval", "assay/decide")
    out["features_over_raw_median_of_rounds"] = statistics.median(
        out["paired"]["features_over_raw_per_round"]
    )
    out["eval_over_decide_median_of_rounds"] = statistics.median(
        out["paired"]["eval_over_decide_per_round"]
    )
    return out


async def load(
    server: ServerProcess, requests: list[bytes], expect: int, params: dict[str, Any]
) -> LoadResult:
    if expect == 304:
        return await run_load_304(server, requests, params)
    return await run_load(
        server,
        requests,
        connections=params["connections"],
        warmup=params["warmup_s"],
        duration=params["duration_s"],
    )


async def run_load_304(
    server: ServerProcess, requests: list[bytes], params: dict[str, Any]
) -> LoadResult:
    """``run_load`` for 304 answers, which carry no body and no Content-Length."""
    return await run_load(
        server,
        requests,
        connections=params["connections"],
        warmup=params["warmup_s"],
        duration=params["duration_s"],
        connection=NotModifiedConnection,
    )


class NotModifiedConnection(Connection):
    """The keep-alive client for answers that must be 304 (reported as 200 to run_load)."""

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.stream is None:
            self.stream = await trio.open_tcp_stream("127.0.0.1", self.port)
            self.buffer.clear()
        await self.stream.send_all(raw)
        buffer = self.buffer
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise ConnectionError("server closed the connection mid-response")
            buffer += chunk
        head = bytes(buffer[:end]).lower()
        del buffer[: end + 4]
        if head[9:12] != b"304":
            raise RuntimeError(f"expected 304: {head[:200]!r}")
        if b"connection: close" in head:
            await self.stream.aclose()
            self.stream = None
            self.reconnects += 1
        return 200, b""


async def in_process(params: dict[str, Any]) -> dict[str, Any]:
    """The handlers alone, in CPU microseconds per request (median of rounds)."""
    import msgspec

    import assay
    from assay.adapters.growthbook.protocol import EvalRequest, SdkProtocol
    from assay.adapters.growthbook.routes import SdkFrontend

    config = assay.EngineConfig(store="memory", decision_cache_size=0)
    users = make_users(2_000, params["seed"])
    samples: dict[str, list[float]] = {}
    async with assay.open_engine(config, load_entry_points=False) as engine:
        connection = await populate(engine)
        front = SdkFrontend(engine, None)
        protocol = SdkProtocol(engine)
        project_id = engine.snapshot.project_ids[PROJECT]
        scope = {
            "type": "http",
            "method": "GET",
            "path": f"/api/features/{connection.client_key}",
            "headers": [(b"host", b"127.0.0.1"), (b"accept", b"*/*")],
        }
        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        await front(scope, receive, send)
        raw = fixed_answer_app(sent[1]["body"], sent[0]["headers"])
        encode = msgspec.json.Encoder().encode

        async def features(app: Any) -> None:
            for _ in range(2_000):
                await app(scope, receive, send)
                sent.clear()

        async def evaluations() -> None:
            for user in users:
                encode(await protocol.evaluate(connection, EvalRequest(attributes=user)))

        async def decides() -> None:
            for user in users:
                decided = await engine.adecide_many(
                    [(DECIDE_FLAG, user["id"], user)], project_id=project_id
                )
                encode(decided[0])

        for _ in range(params["rounds"] * 2 + 1):
            for name, run_once in (
                ("raw_app_features", lambda: features(raw)),
                ("front_features", lambda: features(front)),
                ("eval_20_flags", evaluations),
                ("decide_1_flag", decides),
            ):
                started = time.process_time()
                await run_once()
                per = 2_000
                samples.setdefault(name, []).append((time.process_time() - started) / per * 1e6)
    med = {name: statistics.median(values) for name, values in samples.items()}
    return {
        "cpu_us_per_request": med,
        "front_features_over_raw_app": med["raw_app_features"] / med["front_features"],
        # What the front adds to a request, to set beside the server's whole CPU time per
        # request (hypercorn's parsing and sending dominate it).
        "front_extra_us": med["front_features"] - med["raw_app_features"],
        "eval_over_decide": med["decide_1_flag"] / med["eval_20_flags"],
        "samples": samples,
    }


def targets(http: dict[str, Any]) -> dict[str, bool]:
    met = {
        "features_90pct_of_raw": http["features_over_raw"] >= 0.9,
        "eval_20_flags_80pct_of_decide": http["eval_over_decide"] >= 0.8,
    }
    if http["features_over_raw_by_cpu"] is not None:
        met["features_90pct_of_raw_by_cpu"] = http["features_over_raw_by_cpu"] >= 0.9
    if http["eval_over_decide_by_cpu"] is not None:
        met["eval_20_flags_80pct_of_decide_by_cpu"] = http["eval_over_decide_by_cpu"] >= 0.8
    sse = http.get("sse")
    if sse is not None:
        for path, r in sse["paths"].items():
            p99 = r["p99_seconds"]
            met[f"sse_{sse['subscribers']}_p99_within_1s_{path}"] = p99 is not None and p99 <= 1
    return met


def print_table(result: dict[str, Any]) -> None:
    http = result["http"]
    d = http["details"]
    print(
        f"\nGrowthBook SDK protocol on hypercorn's trio worker "
        f"({result['parameters']['connections']} connections, "
        f"{result['parameters']['rounds']} interleaved rounds, medians)"
    )
    print(
        f"{'scenario':<44} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'srv cores':>9} "
        f"{'srv us/req':>10}"
    )
    labels = {
        "raw/features": "raw ASGI app, same bytes (baseline)",
        "assay/features": "GET /api/features/{clientKey}",
        "assay/features_304": "GET /api/features + If-None-Match (304)",
        "assay/decide": "POST /api/v1/decide, 1 flag (baseline)",
        "assay/eval": f"POST /api/eval/{{clientKey}}, {FLAGS} flags",
    }
    for name, label in labels.items():
        x = d[name]
        cores = x["server_cpu_cores"]
        print(
            f"{label:<44} {x['requests_per_s']:>10,.0f} {x['latency_ms_p50']:>8.2f} "
            f"{x['latency_ms_p99']:>8.2f} {cores if cores is not None else float('nan'):>9.2f} "
            f"{x['server_cpu_us_per_request'] or float('nan'):>10.0f}"
        )
    print(
        f"\n/api/features over raw: {http['features_over_raw']:.2f} (target >= 0.90); "
        f"304s over raw 200s: {http['not_modified_over_raw']:.2f}; "
        f"/api/eval ({FLAGS} flags) over /decide: {http['eval_over_decide']:.2f} "
        f"(target >= 0.80)"
    )

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    print(
        "By server CPU per request: /api/features over raw "
        f"{fmt(http['features_over_raw_by_cpu'])}, "
        f"304 over raw {fmt(http['not_modified_over_raw_by_cpu'])}, "
        f"/api/eval over /decide {fmt(http['eval_over_decide_by_cpu'])}"
    )
    if http.get("sse") is not None:
        print("\nSSE (GET /sub/{clientKey}): time until each subscriber has a change")
        print(streaming_table(http["sse"]))
    alone = result["in_process"]
    us = alone["cpu_us_per_request"]
    print(
        "\nHandlers alone, in process (CPU us per request, medians): raw ASGI app "
        f"{us['raw_app_features']:.1f}, SDK front /api/features {us['front_features']:.1f} "
        f"(+{alone['front_extra_us']:.1f} us a request); "
        f"/decide's adecide_many (1 flag) {us['decide_1_flag']:.0f}, "
        f"remote evaluation ({FLAGS} flags) {us['eval_20_flags']:.0f} "
        f"(ratio {alone['eval_over_decide']:.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    parser.add_argument(
        "--json",
        type=Path,
        default=Path(__file__).parent / "results" / "sdk.json",
        help="where to write the results (default: benchmarks/results/sdk.json)",
    )
    parser.add_argument("--users", type=int, default=5_000, help="pre-generated subjects")
    parser.add_argument("--seed", type=int, default=20261205)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5, quick 2)")
    parser.add_argument(
        "--subscribers", type=int, help="SSE subscribers (default 10,000; quick 1,000; 0: skip)"
    )
    parser.add_argument("--serve", choices=["raw", "assay"], help=argparse.SUPPRESS)
    parser.add_argument("--payload-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        trio.run(serve_main, args.serve, args.payload_file)
        return
    params = {
        "quick": args.quick,
        "users": args.users,
        "seed": args.seed,
        "connections": args.connections,
        "rounds": args.rounds or (2 if args.quick else 5),
        "warmup_s": 0.5 if args.quick else 2.0,
        "duration_s": 1.0 if args.quick else 5.0,
    }
    started = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "sdk",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "parameters": params,
    }
    result["http"] = trio.run(run, params)
    subscribers = (
        args.subscribers if args.subscribers is not None else (1_000 if args.quick else 10_000)
    )
    if subscribers:
        result["http"]["sse"] = run_streaming(subscribers, args.quick)
    result["in_process"] = trio.run(in_process, params)
    result["targets"] = targets(result["http"])
    result["elapsed_s"] = time.perf_counter() - started
    print_table(result)
    print(f"\nTargets: {json.dumps(result['targets'])}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"Wrote {args.json} ({result['elapsed_s']:.1f} s)")


if __name__ == "__main__":
    main()
