"""Serving the app with hypercorn's trio worker: in this process (``serve``), or in N
worker processes sharing one listening socket (``run_workers``).

With several workers, the parent binds the socket once and hands it to each spawned
process; every worker runs its own engine (actors, snapshot, connection pool) on the same
PostgreSQL, which is how DESIGN's Scale section runs several nodes. Configuration changes
reach every worker through the store's LISTEN/NOTIFY.
"""

from __future__ import annotations

import errno
import logging
import multiprocessing
import signal
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from functools import partial
from typing import TYPE_CHECKING, Any

import msgspec
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.logging import Logger as HypercornLogger

from assay.adapters.http._proxy import TrustedProxies, parse_networks
from assay.engine import ValidationFailed

if TYPE_CHECKING:
    from multiprocessing.context import SpawnProcess
    from multiprocessing.synchronize import Event as ProcessEvent

    from assay.adapters.growthbook import StreamHub
    from assay.engine import Engine, EngineConfig

log = logging.getLogger("assay.http")

GRACEFUL_SECONDS = 5.0
"""How long requests in flight may take to finish once shutdown begins."""
# After the grace period hypercorn cancels what is left; this bounds its own cleanup.
_CLEANUP_SECONDS = 2.0
_POLL_SECONDS = 0.2
_RESTART_BACKOFF_SECONDS = 1.0

Prepare = Callable[["EngineConfig", int], Awaitable[None]]


def hypercorn_config(
    host: str, port: int, *, certfile: str | None = None, keyfile: str | None = None
) -> HypercornConfig:
    config = HypercornConfig()
    if (certfile is None) != (keyfile is None):
        raise ValidationFailed("TLS needs both certfile and keyfile", code="invalid_config")
    # hypercorn's own TLS: with both set, every bound socket speaks HTTPS.
    config.certfile, config.keyfile = certfile, keyfile
    # IPv6 literals need brackets in a bind address.
    address = f"[{host}]" if ":" in host and not host.startswith("[") else host
    config.bind = [f"{address}:{port}"]
    config.graceful_timeout = GRACEFUL_SECONDS
    # Log through the standard logging tree, so the CLI's level and handlers apply. The
    # access log is attached only when someone will read it: hypercorn builds each entry
    # before the logger's level is consulted, a few percent of a request's CPU.
    access = logging.getLogger("assay.http.access")
    config.accesslog = access if access.isEnabledFor(logging.INFO) else None
    config.errorlog = logging.getLogger("assay.http.server")
    config.logger_class = _Log
    return config


_RESPONDED = "assay.responded"
"""Scope key: the app has begun its response (hypercorn logs it, status and all, once the
app has sent the rest, even to a client that has gone)."""
_LOGGED = "assay.logged"
"""Scope key: this request's access-log line is written."""


class _Log(HypercornLogger):
    """hypercorn's logger, with one access-log line per request.

    hypercorn writes a line without a status (``- -``) when the connection closes before
    it has marked the response finished. It marks it only after sending the response's
    end (Quart sends that as an empty last part, after the body), so a client that closes
    as soon as it has read the body (curl does) often wins that race, and the request got
    that line as well as its own (about one in four under curl). Here the line without a
    status is kept only for a request the app had not begun to answer, and a request
    never gets a second line. Also: hypercorn's "Running on" goes to DEBUG, the
    CLI says where it serves."""

    async def access(self, request: Any, response: Any, request_time: float) -> None:
        if request.get(_LOGGED) or (response is None and request.get(_RESPONDED)):
            return
        request[_LOGGED] = True
        await super().access(request, response, request_time)

    async def info(self, message: str, *args: Any, **kwargs: Any) -> None:
        await super().debug(message, *args, **kwargs)


class _MarkResponded:
    """ASGI middleware: marks the scope when the app begins its response."""

    def __init__(self, app: Any) -> None:
        self._app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def marking_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                scope[_RESPONDED] = True
            await send(message)

        await self._app(scope, receive, marking_send)


def bind_sockets(
    host: str, port: int, *, certfile: str | None = None, keyfile: str | None = None
) -> Sockets:
    """Bind and listen now (port 0 picks a free port); pass the result to ``serve``. A port
    already taken raises ValidationFailed ``invalid_config`` naming it."""
    config = hypercorn_config(host, port, certfile=certfile, keyfile=keyfile)
    try:
        sockets = config.create_sockets()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ValidationFailed(
                f"port {port} on {host} is already in use; choose another with --port",
                code="invalid_config",
            ) from exc
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EACCES):
            raise ValidationFailed(
                f"cannot listen on {host} port {port}: {exc.strerror}", code="invalid_config"
            ) from exc
        raise
    for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
        sock.listen(config.backlog)
    return sockets


def bound_port(sockets: Sockets) -> int:
    name = (*sockets.secure_sockets, *sockets.insecure_sockets)[0].getsockname()
    return int(name[1]) if isinstance(name, tuple) else 0


async def serve(
    engine: Engine,
    *,
    host: str,
    port: int,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    sockets: Sockets | None = None,
    streams: StreamHub | None = None,
) -> None:
    """Serve ``engine``'s HTTP API until cancelled, then shut down gracefully: stop
    accepting, let requests in flight finish (up to ``GRACEFUL_SECONDS``), and return.

    Reports the bound port through ``task_status`` (useful with ``port=0``). With
    ``sockets`` (already bound, e.g. inherited from a parent process) ``host`` and
    ``port`` only label the configuration. GrowthBook's SDK streams (``GET /sub/{key}``)
    are served from ``streams`` (default: ``stream_hub(engine)``) on this port, and on
    ``config.stream_port`` too when set.
    """
    # Imported here so a parent process that only supervises workers stays free of Quart.
    from hypercorn.trio.run import worker_serve
    from hypercorn.utils import wrap_app

    from assay.adapters.growthbook import (
        StreamRoute,
        bind_stream_socket,
        raise_file_limit,
        serve_streams,
        stream_hub,
    )
    from assay.adapters.http._app import create_asgi

    tls = {"certfile": engine.config.certfile, "keyfile": engine.config.keyfile}
    config = hypercorn_config(host, port, **tls)
    proxies = parse_networks(engine.config.trusted_proxies)
    async with AsyncExitStack() as owned:
        if sockets is None:
            sockets = bind_sockets(host, port, **tls)
            for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
                owned.callback(sock.close)
        hub = streams if streams is not None else stream_hub(engine)
        # Every open SDK stream holds a socket.
        log.debug("open-files limit: %d", raise_file_limit())
        stream_socket = None
        if engine.config.stream_port is not None:
            if engine.config.certfile is not None:
                # The lean listener speaks plain HTTP only: refuse rather than serve the
                # streams unencrypted beside an HTTPS main port.
                raise ValidationFailed(
                    "stream_port does not speak TLS; serve SDK streams on the HTTPS main "
                    "port (GET /sub/{clientKey}) or terminate TLS in front of the stream port",
                    code="invalid_config",
                )
            stream_socket = bind_stream_socket(host, engine.config.stream_port)
            owned.callback(stream_socket.close)
        asgi: Any = StreamRoute(hub, create_asgi(engine))
        if config.accesslog is not None:
            asgi = _MarkResponded(asgi)
        if proxies:
            asgi = TrustedProxies(asgi, proxies)
        app = wrap_app(asgi, config.wsgi_max_body_size, "asgi")
        stop = trio.Event()
        listening = _Started()
        # Shielded: our caller's cancellation must not tear requests down mid-flight; it
        # sets ``stop`` instead, which is hypercorn's graceful shutdown trigger. The
        # deadline set then bounds the whole shutdown. Started with start_soon and our own
        # started-event, not nursery.start: a shielded task started while its caller is
        # being cancelled would never be handed over, and start() would wait forever.
        server_scope = trio.CancelScope(shield=True)

        async def run_server() -> None:
            with server_scope:
                # hypercorn.trio.serve without its socket binding: the same trio worker.
                await worker_serve(
                    app,
                    config,
                    sockets=sockets,
                    shutdown_trigger=stop.wait,
                    task_status=listening,
                )

        async with trio.open_nursery() as nursery:
            streaming = trio.CancelScope()

            async def run_streams(task_status: trio.TaskStatus[None]) -> None:
                with streaming:
                    async with trio.open_nursery() as inner:
                        await inner.start(hub.run)
                        if stream_socket is not None:
                            stream_port = await inner.start(serve_streams, hub, stream_socket)
                            log.debug("SDK streams listening on port %d", stream_port)
                        task_status.started()

            await nursery.start(run_streams)
            nursery.start_soon(run_server)
            try:
                await listening.event.wait()
                log.debug("HTTP API listening on port %d", bound_port(sockets))
                task_status.started(bound_port(sockets))
                await trio.sleep_forever()
            finally:
                # Streams never finish by themselves: end them first, so the graceful
                # shutdown does not wait its whole grace period for them.
                hub.close()
                streaming.cancel()
                stop.set()
                server_scope.deadline = trio.current_time() + GRACEFUL_SECONDS + _CLEANUP_SECONDS


class _Started:
    """A task status for hypercorn's worker: records that it is accepting connections."""

    def __init__(self) -> None:
        self.event = trio.Event()

    def started(self, value: object = None) -> None:
        self.event.set()


# --- several worker processes --------------------------------------------------------


def run_workers(config: EngineConfig, workers: int, *, prepare: Prepare | None = None) -> None:
    """Serve with ``workers`` processes until SIGINT or SIGTERM, then stop them gracefully.

    The parent resolves the database once (starting the embedded PostgreSQL if no URL is
    configured, so the workers share it rather than each attaching), binds the listening
    socket, awaits ``prepare(config, port)`` (e.g. create and print the first admin key),
    then spawns the workers. A worker that dies is replaced. Blocks; call outside Trio.
    """
    if workers < 1:
        raise ValidationFailed("workers must be at least 1", code="invalid_config")
    if config.stream_port is not None and workers > 1:
        raise ValidationFailed(
            "stream_port needs a single worker; with several, serve SDK streams on the main "
            "port (GET /sub/{clientKey})",
            code="invalid_config",
        )
    if config.store == "memory" and workers > 1:
        raise ValidationFailed(
            "the memory store cannot be shared between worker processes; use PostgreSQL",
            code="invalid_config",
        )
    trio.run(_supervise_workers, config, workers, prepare)


async def _supervise_workers(config: EngineConfig, workers: int, prepare: Prepare | None) -> None:
    async with AsyncExitStack() as stack:
        # Bound first: a taken port is said before the database starts.
        parse_networks(config.trusted_proxies)  # a bad entry fails here, not in each worker
        sockets = bind_sockets(
            config.host, config.port, certfile=config.certfile, keyfile=config.keyfile
        )
        for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
            stack.callback(sock.close)
        port = bound_port(sockets)
        if config.store == "postgres":
            from assay._bootstrap import open_database

            dsn = await stack.enter_async_context(open_database(config))
            config = msgspec.structs.replace(config, database_url=dsn)
        if prepare is not None:
            await prepare(config, port)
        context = multiprocessing.get_context("spawn")
        stop = context.Event()

        def spawn(number: int) -> SpawnProcess:
            process = context.Process(
                target=worker_main,
                args=(config, sockets, stop),
                name=f"assay-worker-{number}",
                daemon=False,
            )
            process.start()
            return process

        processes = [spawn(n) for n in range(workers)]
        log.debug("serving on port %d with %d worker processes", port, workers)
        try:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_cancel_on_signal, signals, nursery.cancel_scope)
                    await _replace_dead_workers(processes, spawn)
        finally:
            stop.set()
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_join_or_kill, processes)


async def _cancel_on_signal(signals: Any, scope: trio.CancelScope) -> None:
    async for signum in signals:
        log.info("received %s: stopping the workers", signal.Signals(signum).name)
        scope.cancel()
        return


async def _replace_dead_workers(
    processes: list[SpawnProcess], spawn: Callable[[int], SpawnProcess]
) -> None:
    """Replace each worker that crashes. One that exits cleanly was told to stop (SIGTERM
    sent to it directly, e.g. to the whole process group) and is not replaced; when every
    worker has stopped so, the parent stops too."""
    while any(p.is_alive() or p.exitcode != 0 for p in processes):
        await trio.sleep(_POLL_SECONDS)
        for number, process in enumerate(processes):
            if not process.is_alive() and process.exitcode != 0:
                log.error(
                    "worker %s exited with code %s; starting a new one",
                    process.name,
                    process.exitcode,
                )
                await trio.sleep(_RESTART_BACKOFF_SECONDS)
                processes[number] = spawn(number)
    log.info("every worker has stopped")


def _join_or_kill(processes: list[SpawnProcess]) -> None:
    for process in processes:
        process.join(GRACEFUL_SECONDS + _CLEANUP_SECONDS + 5.0)
    for process in processes:
        if process.is_alive():
            log.warning("worker %s did not stop in time; terminating it", process.name)
            process.kill()
            process.join()


def worker_main(config: EngineConfig, sockets: Sockets, stop: ProcessEvent) -> None:
    """A worker process: its own engine, serving on the inherited sockets until the
    parent sets ``stop`` or the process gets SIGTERM. Top-level, so spawn can import it."""
    # Ctrl-C reaches the whole process group; the parent turns it into ``stop``, so the
    # workers shut down in order instead of each raising KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=config.log_level or "INFO")
    trio.run(_worker, config, sockets, stop)


async def _worker(config: EngineConfig, sockets: Sockets, stop: ProcessEvent) -> None:
    import assay

    async with assay.open_engine(config) as engine, trio.open_nursery() as nursery:
        nursery.start_soon(_stop_when_told, stop, nursery.cancel_scope)
        await nursery.start(
            partial(serve, engine, host=config.host, port=config.port, sockets=sockets)
        )


async def _stop_when_told(stop: ProcessEvent, scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(on_signal)
            # A multiprocessing Event cannot be awaited; poll it.
            while not stop.is_set():  # noqa: ASYNC110
                await trio.sleep(_POLL_SECONDS)
            nursery.cancel_scope.cancel()
    scope.cancel()
