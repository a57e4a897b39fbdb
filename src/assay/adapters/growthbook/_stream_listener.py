"""A lean HTTP/1.1 listener that serves only ``GET /sub/{clientKey}`` (GrowthBook SDKs
take it as their ``streamingHost``), in the server's process and Trio run.

Why a listener of its own: under hypercorn every open stream is an ASGI request with its
own tasks, protocol state machine and per-message dictionaries, and a change reaches each
subscriber through a task switch and several layers; measured on two loaded cores, 3,000
subscribers got a change at p99 in seconds. Here a stream is one small task waiting on its
socket, and a change is written by the hub straight to every socket (one ``send`` each,
the same bytes), so ten thousand subscribers get it in a fraction of a second.

Rules kept:

- The request head is parsed by h11 (no hand-written HTTP parsing), bounded to 8 KiB and
  ``REQUEST_SECONDS``; anything else than ``GET /sub/{key}`` gets a 4xx and the connection
  is closed. The response is HTTP/1.1 with the body delimited by the connection's close
  (``Connection: close``), so every subscriber gets byte-identical event bytes.
- Accepting never fails the listener: out of file descriptors, it pauses and retries.
- The streams end when the hub closes (the server stops); clients then reconnect.
"""

from __future__ import annotations

import errno
import logging
import socket
from urllib.parse import unquote

import h11
import trio

from assay.adapters.growthbook._streaming import (
    NOT_FOUND_BODY,
    NOT_FOUND_HEADERS,
    RETRY_MILLISECONDS,
    SSE_HEADERS,
    SocketSubscriber,
    StreamHub,
)

log = logging.getLogger("assay.growthbook.streaming")

REQUEST_SECONDS = 10.0
"""How long a client may take to send its request head."""
_MAX_HEAD = 8192
_ACCEPT_BATCH = 256
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def _head(status: str, headers: tuple[tuple[bytes, bytes], ...]) -> bytes:
    lines = [b"HTTP/1.1 " + status.encode()]
    lines += [name + b": " + value for name, value in headers]
    lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


_STREAM_HEAD = _head("200 OK", SSE_HEADERS) + b"retry: %d\n\n" % RETRY_MILLISECONDS
_NOT_FOUND = _head("404 Not Found", NOT_FOUND_HEADERS) + NOT_FOUND_BODY
_METHOD_NOT_ALLOWED = _head(
    "405 Method Not Allowed", ((b"allow", b"GET"), (b"content-length", b"0"))
)
_BAD_REQUEST = _head("400 Bad Request", ((b"content-length", b"0"),))
_PREFLIGHT = _head(
    "204 No Content",
    (
        (b"access-control-allow-origin", b"*"),
        (b"access-control-allow-methods", b"GET"),
        (b"access-control-allow-headers", b"*"),
        (b"access-control-max-age", b"86400"),
    ),
)


def raise_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit, where allowed:
    every open stream holds a socket, and the usual soft limit (1,024) is far below what
    one process can serve. Returns the soft limit in force."""
    try:
        import resource
    except ImportError:  # not a Unix
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            log.debug("could not raise the open-files limit from %d", soft)
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def bind_stream_socket(host: str, port: int, backlog: int = 4096) -> socket.socket:
    """A listening, non-blocking socket for ``serve_streams`` (port 0 picks one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve_streams(
    hub: StreamHub,
    listener: socket.socket,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept stream requests on ``listener`` until cancelled (reports the bound port)."""
    async with trio.open_nursery() as nursery:
        task_status.started(int(listener.getsockname()[1]))
        while True:
            await trio.lowlevel.wait_readable(listener)
            # Several per wake-up: reconnect storms arrive thousands at once.
            for _ in range(_ACCEPT_BATCH):
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in _OUT_OF_RESOURCES:
                        log.warning("cannot accept stream connections: %s; pausing", exc)
                        await trio.sleep(0.1)
                        break
                    continue  # e.g. ECONNABORTED: that client is gone
                sock.setblocking(False)
                nursery.start_soon(_connection, hub, sock)


async def _connection(hub: StreamHub, sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = await _read_request(sock)
        if request is None:
            return
        if not isinstance(request, h11.Request):
            await _send_all(sock, _BAD_REQUEST)
            return
        if request.method == b"OPTIONS":
            await _send_all(sock, _PREFLIGHT)
            return
        path = request.target.split(b"?", 1)[0].decode("ascii", "replace")
        if not path.startswith("/sub/"):
            await _send_all(sock, _NOT_FOUND)
            return
        if request.method != b"GET":
            await _send_all(sock, _METHOD_NOT_ALLOWED)
            return
        key = unquote(path[len("/sub/") :])
        last_event_id = None
        for name, value in request.headers:
            if name == b"last-event-id":
                last_event_id = value.decode("latin-1")
        subscriber = SocketSubscriber(sock, hub.stall_seconds)
        if not await hub.attach(key, subscriber, prelude=_STREAM_HEAD, last_event_id=last_event_id):
            await _send_all(sock, _NOT_FOUND)
            return
        try:
            await subscriber.run()
        finally:
            subscriber.close()
            hub.detach(key, subscriber)
    except OSError:
        pass  # the client went away
    finally:
        sock.close()


async def _read_request(sock: socket.socket) -> h11.Request | bool | None:
    """The request head; False when it is malformed, None when the client went away or
    took too long."""
    parser = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
    with trio.move_on_after(REQUEST_SECONDS):
        while True:
            try:
                event = parser.next_event()
            except h11.RemoteProtocolError:
                return False
            if isinstance(event, h11.Request):
                return event
            if event is not h11.NEED_DATA:
                return None
            await trio.lowlevel.wait_readable(sock)
            try:
                data = sock.recv(_MAX_HEAD)
            except BlockingIOError:
                continue
            parser.receive_data(data)
    return None


async def _send_all(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    with trio.move_on_after(REQUEST_SECONDS):
        while view:
            await trio.lowlevel.wait_writable(sock)
            try:
                view = view[sock.send(view) :]
            except BlockingIOError:
                continue
