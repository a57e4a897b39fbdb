"""The API through a real hypercorn server on a free port, and several worker processes."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from assay.adapters.http import serve
from assay.engine import SYSTEM_KEY, Role

LIMIT = 4096  # the engines in these tests refuse bodies over 4 KiB (see conftest)


@pytest.fixture
async def base_url(engine, nursery) -> str:
    port = await nursery.start(partial(serve, engine, host="127.0.0.1", port=0))
    return f"http://127.0.0.1:{port}"


async def test_health_and_ready(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        health = await client.get("/health")
        ready = await client.get("/ready")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert ready.status_code == 200


async def test_a_round_trip(base_url: str, world) -> None:
    _, secret = await world.key(Role.ADMIN)
    project = world.unique("prj")
    headers = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers) as client:
        assert (await client.post("/api/v1/projects", json={"key": project})).status_code == 201
        created = await client.post(f"/api/v1/flags?project={project}", json={"key": "f"})
        assert created.status_code == 201
        fetched = await client.get(f"/api/v1/flags/f?project={project}")
        assert fetched.json() == created.json()
        assert fetched.headers["content-type"] == "application/json"
        missing = await client.get(f"/api/v1/flags/nope?project={project}")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"
        decided = await client.post(
            f"/api/v1/decide?project={project}", json={"flag": "f", "subject": "u"}
        )
        assert decided.status_code == 200
        refused = await client.post("/api/v1/decide", content=b"{")
        # Every JSON answer ends with a newline (curl output does not run together), from
        # Quart and from the decide fast path, answers and errors alike.
        for answer in (created, fetched, missing, decided, refused):
            assert answer.content.endswith(b"}\n"), answer.content


async def test_an_oversize_body_is_413(base_url: str, world) -> None:
    _, secret = await world.key(Role.ADMIN)
    project = world.unique("prj")
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    body = b'{"key": "%s"}' % project.encode() + b" " * (2 * LIMIT)

    async def chunks():
        for start in range(0, len(body), 1024):
            yield body[start : start + 1024]

    async with httpx.AsyncClient(base_url=base_url, headers=headers) as client:
        with_length = await client.post("/api/v1/projects", content=body)
        assert with_length.status_code == 413
        assert with_length.json()["error"]["code"] == "body_too_large"
        assert with_length.json()["error"]["details"] == {"max_bytes": LIMIT}
        chunked = await client.post("/api/v1/projects", content=chunks())
        assert chunked.status_code == 413
        assert chunked.json()["error"]["code"] == "body_too_large"
        listed = await client.get("/api/v1/projects?limit=500")
    assert project not in [p["key"] for p in listed.json()["items"]]


async def _get_and_hang_up(port: int, request: bytes) -> bytes:
    """One request on its own connection, closed as soon as the response is read (as curl
    does): the client that used to get a second access-log line."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        data = b""
        while True:
            head, _, body = data.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: (\d+)", head)
            if length and len(body) >= int(length.group(1)):
                return data
            chunk = await stream.receive_some()
            if not chunk:
                return data
            data += chunk


async def test_one_access_log_line_per_request(engine, nursery, caplog) -> None:
    caplog.set_level(logging.INFO, logger="assay.http.access")
    port = await nursery.start(partial(serve, engine, host="127.0.0.1", port=0))
    requests = {
        "GET /health": b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /api/v1/decide": b"POST /api/v1/decide HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 2\r\n\r\n{}",
    }
    sent = 0
    for _ in range(40):
        for raw in requests.values():
            assert (await _get_and_hang_up(port, raw)).startswith(b"HTTP/1.1 ")
            sent += 1
    # Let hypercorn finish with the last connections (a second line would come by now).
    await trio.sleep(0.5)
    lines = [r.getMessage() for r in caplog.records if r.name == "assay.http.access"]
    assert len(lines) == sent, "\n".join(lines)
    assert not [line for line in lines if '" - - ' in line], "\n".join(lines)
    for name in requests:
        assert sum(f'"{name} 1.1"' in line for line in lines) == sent // 2


async def test_a_request_the_client_left_before_its_answer_logs_once(caplog) -> None:
    from assay.adapters.http._server import hypercorn_config

    caplog.set_level(logging.INFO, logger="assay.http.access")
    log = hypercorn_config("127.0.0.1", 0).log
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/x",
        "query_string": b"",
        "headers": [],
        "http_version": "1.1",
        "client": ("127.0.0.1", 1),
        "scheme": "http",
    }
    await log.access(scope, None, 0.1)  # the client went away, nothing was answered
    await log.access(scope, {"status": 200, "headers": []}, 0.2)  # the app answers later
    # One line, without a status: what hypercorn knew when the client left.
    assert ['"GET /x 1.1" - -' in r.getMessage() for r in caplog.records] == [True]


async def test_cancelling_serve_stops_listening(engine) -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve, engine, host="127.0.0.1", port=0))
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200
        nursery.cancel_scope.cancel()
    with pytest.raises(OSError, match="connect"):
        await trio.open_tcp_stream("127.0.0.1", port)


@pytest.mark.parametrize("checkpoints", [0, 1, 5, 50])
async def test_serve_stops_when_cancelled_while_starting(engine, checkpoints: int) -> None:
    # A regression guard: cancellation that arrives before the server is up must not leave
    # the (shielded) server running with nobody to stop it. fail_after only bounds a hang.
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(serve, engine, host="127.0.0.1", port=0))
            for _ in range(checkpoints):
                await trio.lowlevel.checkpoint()
            nursery.cancel_scope.cancel()


# --- several worker processes ----------------------------------------------------------

WORKERS_SCRIPT = """
import sys

from assay.adapters.http import run_workers
from assay.engine import EngineConfig


async def announce(config, port):
    print(f"PORT {port}", flush=True)


if __name__ == "__main__":
    config = EngineConfig(database_url=sys.argv[1], host="127.0.0.1", port=0)
    run_workers(config, 2, prepare=announce)
"""


def _worker_pids(parent: int) -> list[int]:
    """The parent's children that are spawned workers (not multiprocessing's helpers)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [
        int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
async def test_worker_processes_serve_restart_and_stop(pg_dsn, open_test_engine, tmp_path):
    async with open_test_engine(pg_dsn) as engine:
        _, secret = await engine.service.create_key(SYSTEM_KEY, role=Role.ADMIN, project=None)
    script = tmp_path / "workers.py"
    script.write_text(WORKERS_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = await trio.lowlevel.open_process(
        [sys.executable, str(script), pg_dsn], stdout=subprocess.PIPE, env=env
    )
    try:
        with trio.fail_after(60):
            port = await _read_port(process)
            base_url = f"http://127.0.0.1:{port}"
            headers = {"Authorization": f"Bearer {secret}"}
            async with httpx.AsyncClient(base_url=base_url, headers=headers) as client:
                await _until_healthy(client)
                assert len(_worker_pids(process.pid)) == 2
                # Writes through one worker are read through any other: one database.
                for n in range(6):
                    created = await client.post("/api/v1/projects", json={"key": f"w{n}"})
                    assert created.status_code == 201
                listed = await client.get("/api/v1/projects")
                assert [p["key"] for p in listed.json()["items"]] == [f"w{n}" for n in range(6)]

                # A worker that dies is replaced.
                victim = _worker_pids(process.pid)[0]
                os.kill(victim, signal.SIGKILL)
                await _until_replaced(process.pid, victim)
                await _until_healthy(client)

            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _read_port(process: trio.Process) -> int:
    assert process.stdout is not None
    output = b""
    while b"\n" not in output:
        chunk = await process.stdout.receive_some()
        assert chunk, f"the workers' parent exited early: {output!r}"
        output += chunk
    line = output.split(b"\n")[0].decode()
    assert line.startswith("PORT "), line
    return int(line.split()[1])


async def _until_replaced(parent: int, victim: int) -> None:
    while True:
        workers = _worker_pids(parent)
        if len(workers) == 2 and victim not in workers:
            return
        await trio.sleep(0.1)


async def _until_healthy(client: httpx.AsyncClient) -> None:
    while True:
        try:
            if (await client.get("/ready")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await trio.sleep(0.1)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/no-such-route", b"404"),
        ("POST", "/health", b"405"),
        ("POST", "/api/v1/projects", b"401"),
        ("POST", "/api/v1/decide", b"401"),
        ("GET", "/health", b"200"),
    ],
)
async def test_an_answer_before_the_body_never_wedges_the_connection(
    base_url: str, method: str, path: str, status: bytes
) -> None:
    """The server answers from the headers alone; the body comes in a later packet, then
    a second request on the same connection. That request is answered or the connection
    closed; before, it got nothing and the connection stayed open."""
    port = int(base_url.rsplit(":", 1)[1])
    body = b'{"key": "x"}'
    head = f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(head.encode() + b"Content-Length: %d\r\n\r\n" % len(body))
        received = b""
        with trio.fail_after(10):
            while b"\r\n\r\n" not in received:
                received += await stream.receive_some(65536)
        assert received.startswith(b"HTTP/1.1 " + status), received
        await trio.sleep(0.2)  # a later packet
        try:
            await stream.send_all(body + b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        except trio.BrokenResourceError:
            return  # closed: a client reconnects
        with trio.fail_after(10):
            while True:
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return  # reset after the close
                if not chunk:
                    return  # closed
                received += chunk
                if received.count(b"HTTP/1.1 ") >= 2 and received.endswith(b"}"):
                    assert b"HTTP/1.1 200" in received.split(b"\r\n\r\n", 1)[1]
                    return
