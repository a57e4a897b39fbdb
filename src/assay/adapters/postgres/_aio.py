"""The bridge from Trio to asyncio (for asyncpg), through trio-asyncio.

Three trio-asyncio behaviours shape it:

- Its current-loop context variable is set only in tasks started inside ``open_loop()``;
  a Trio task started elsewhere (an HTTP handler, an actor) would find no loop. So the loop
  object is captured once and every call names it: ``AioLoop.run``.
- Its default exception handler re-raises whatever asyncio reports into the loop, which
  tears the loop (and the store on it) down. asyncpg reports recoverable things that way,
  so the handler here logs them, as plain asyncio would.
- It runs the block inside its own nurseries, which would wrap any exception raised in the
  block in two ExceptionGroups. ``open_aio_loop`` re-raises it as it was.

Every asyncpg call goes through ``AioLoop.run``, so it is also where a database that cannot
be reached becomes the engine's ``StoreUnavailable`` (HTTP 503 ``store_unavailable``): a
refused or lost connection, a server shutting down or refusing connections, a read-only
server after a failover. Everything else (constraint violations, bad data) passes through
as asyncpg raised it, for the caller that knows what it means.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

import asyncpg
import trio_asyncio

from assay.engine import StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

log = logging.getLogger("assay.adapters.postgres")

_P = ParamSpec("_P")
_T = TypeVar("_T")


class AioLoop:
    """Runs asyncio-flavoured functions on one trio-asyncio loop, from any Trio task."""

    def __init__(self, loop: Any) -> None:
        self._loop = loop

    async def run(
        self, fn: Callable[_P, Awaitable[_T]], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """``await fn(*args, **kwargs)`` in an asyncio task on this loop. Cancelling the
        calling Trio task cancels the asyncio task."""
        try:
            return cast("_T", await self._loop.run_aio_coroutine(_call(fn, *args, **kwargs)))
        except StoreUnavailable:
            raise  # already says which database and why (``unreachable``)
        except Exception as exc:
            if unavailable(exc):
                raise StoreUnavailable("the database is unavailable; retry shortly") from exc
            raise


_UNAVAILABLE = (
    OSError,  # refused, reset, timed out (TimeoutError is an OSError)
    asyncpg.PostgresConnectionError,  # class 08, including a connection lost mid-query
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: too many connections
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a standby after a failover
)
# asyncpg's InterfaceError also reports misuse (a bug, which must stay a 500); only these
# mean the connection went away under us.
_GONE = ("connection is closed", "released back to the pool", "pool is closing")


def usable(conn: Any) -> bool:
    """Whether a pooled connection can still be used. The pool releases a connection the
    server closed on its own, and its proxy then refuses every call, ``is_closed`` too."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached right now."""
    if isinstance(exc, (StoreUnavailable, *_UNAVAILABLE)):
        return True
    return isinstance(exc, asyncpg.InterfaceError) and any(text in str(exc) for text in _GONE)


async def _call(fn: Callable[_P, Awaitable[_T]], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    # ``fn`` is called here, inside the asyncio task, not in the calling Trio task: some
    # asyncpg calls do work before they hand back their awaitable.
    return await fn(*args, **kwargs)


def _log_asyncio_error(loop: Any, context: dict[str, Any]) -> None:
    log.error(
        "asyncio: %s", context.get("message", "unhandled error"), exc_info=context.get("exception")
    )


@asynccontextmanager
async def open_aio_loop() -> AsyncIterator[AioLoop]:
    """Open a trio-asyncio loop for the duration of the block."""
    escaped: BaseException | None = None
    async with trio_asyncio.open_loop() as loop:
        loop.set_exception_handler(_log_asyncio_error)
        try:
            yield AioLoop(loop)
        except BaseException as exc:
            # Carried out of trio-asyncio's nurseries and re-raised below, unwrapped.
            # Cancelled too: it then reaches its cancel scope as it would have.
            escaped = exc
    if escaped is not None:
        raise escaped
