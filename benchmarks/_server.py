"""The HTTP benchmarks' server subprocesses: both sides of a ``--serve KIND`` child.

A benchmark script runs each server it measures as a subprocess of itself (``script --serve
KIND ...``) so that the server has a process (and a core) of its own and its CPU time can be
read from /proc. The rules both sides keep:

- the child prints one JSON line when it is ready (at least ``port`` and ``pid``; an assay
  server adds ``secret`` and what else its benchmark needs), serves until its stdin closes,
  then prints one JSON line of statistics (empty for a raw app) and exits;
- the parent (``ServerProcess``) reads the first line, stops the child by closing its stdin
  and kills it only if it does not exit in time.

The raw baseline (``fixed_answer_app``) is served on assay's own hypercorn configuration,
so that the baseline and assay differ only in the app.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import trio

Announce = Callable[..., None]


# --- the child ----------------------------------------------------------------------------


def announce(**fields: Any) -> None:
    """One JSON line to the parent."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def serve_child(serve: Callable[[trio.Event, Announce], Awaitable[None]]) -> None:
    """A server subprocess: ``serve(stop, announce)`` announces the server, serves until
    ``stop`` is set (stdin closed), announces its statistics and returns."""
    stop = trio.Event()

    async def stop_on_eof() -> None:
        # Read stdin without a thread (a thread blocked on it can crash interpreter exit).
        async with trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())) as stdin:
            while await stdin.receive_some():
                pass
        stop.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_on_eof)
        await serve(stop, announce)
        nursery.cancel_scope.cancel()


def fixed_answer_app(body: bytes, headers: list[tuple[bytes, bytes]]) -> Any:
    """The baseline: an ASGI app that reads each request's body and answers every request
    with ``body`` and ``headers``, the least an app can do."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


async def serve_raw(app: Any, stop: trio.Event, announce: Announce) -> None:
    """Serve ``app`` on assay's hypercorn configuration (a ``serve`` for ``serve_child``)."""
    from hypercorn.trio import serve as hypercorn_serve

    from assay.adapters.http._server import hypercorn_config

    config = hypercorn_config("127.0.0.1", 0)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            lambda task_status: hypercorn_serve(
                app, config, shutdown_trigger=stop.wait, task_status=task_status
            )
        )
        announce(port=int(binds[0].rsplit(":", 1)[1]), pid=os.getpid())
        await stop.wait()
        announce()
        nursery.cancel_scope.cancel()


# --- the parent ---------------------------------------------------------------------------


class ServerProcess:
    """A ``--serve KIND`` subprocess and the line-oriented pipe to it."""

    def __init__(self, kind: str, process: trio.Process) -> None:
        self.kind = kind
        self.process = process
        self._buffer = b""
        self.port = 0
        self.secret = ""
        self.client_key = ""
        self.stats: dict[str, Any] = {}

    @classmethod
    async def start(
        cls, script: str, kind: str, *args: str, env: Mapping[str, str] | None = None
    ) -> ServerProcess:
        """Run ``script --serve KIND *args`` and wait (a minute at most) until it is ready."""
        process = await trio.lowlevel.open_process(
            [sys.executable, script, "--serve", kind, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        server = cls(kind, process)
        try:
            with trio.fail_after(60):
                ready = await server._line()
        except BaseException:
            process.kill()
            raise
        server.port, server.secret = ready["port"], ready.get("secret", "")
        server.client_key = ready.get("client_key", "")
        return server

    async def _line(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self.process.stdout.receive_some(4096)
            if not chunk:
                raise RuntimeError(f"the {self.kind} server exited before answering")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        decoded: dict[str, Any] = json.loads(line)
        return decoded

    async def stop(self) -> None:
        """Close its stdin (it shuts down gracefully), collect its statistics; kill it
        only if it does not exit in time."""
        assert self.process.stdin is not None
        await self.process.stdin.aclose()
        with trio.move_on_after(30):
            # A server that died has no statistics to give; its exit code tells the rest.
            with contextlib.suppress(RuntimeError, ValueError):
                self.stats = await self._line()
            await self.process.wait()
            return
        self.process.kill()
        await self.process.wait()

    def cpu_seconds(self) -> float | None:
        return process_cpu_seconds(self.process.pid)


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, from /proc (None where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # Fields 14 and 15 (utime, stime) counted from 1, after the ")" closing the name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
