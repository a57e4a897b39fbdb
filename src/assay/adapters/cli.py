"""The ``assay`` command line: serve, migrate and manage API keys.

Every command reads the same configuration (``--config FILE``, ``ASSAY_*`` variables, then
flags) and so works against the same database as a running server, embedded or external.

What a person sees is kept short: a command prints its answer on stdout and, at the default
log level, nothing on stderr (``assay serve`` logs at INFO); an expected failure (a bad
setting, a taken port, an unreachable database) is one line on stderr and exit status 1,
with the traceback only at ``--log-level DEBUG``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import trio

from assay._version import __version__
from assay.engine import SYSTEM_KEY, AssayError, ConfigService, EngineConfig, Role

if TYPE_CHECKING:
    from assay.engine import Engine

T = TypeVar("T")

log = logging.getLogger("assay.cli")

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("configuration")
    group.add_argument("--config", metavar="FILE", help="TOML configuration file")
    group.add_argument(
        "--database-url",
        metavar="URL",
        help="external PostgreSQL (default: $ASSAY_DATABASE_URL, else the embedded server)",
    )
    group.add_argument(
        "--data-dir",
        metavar="DIR",
        help="embedded PostgreSQL data directory (default: the user data directory)",
    )
    group.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        help="what reaches the console (default: INFO for serve, WARNING otherwise; DEBUG "
        "adds the embedded PostgreSQL's output and tracebacks)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="assay",
        description="assay: feature flags, A/B experiments, events, statistics and guardrails.",
    )
    parser.add_argument("--version", action="version", version=f"assay {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the HTTP API (embedded PostgreSQL unless a database URL is given)",
        description="Run the engine and its HTTP API. On an empty database the first run "
        "creates an admin API key and prints it once.",
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.add_argument(
        "--stream-port",
        type=int,
        help="also serve SDK streams (GET /sub/{clientKey}) on this port from a lean listener",
    )
    serve.add_argument("--certfile", metavar="PEM", help="TLS certificate: serve HTTPS")
    serve.add_argument("--keyfile", metavar="PEM", help="TLS private key for --certfile")
    serve.add_argument(
        "--trusted-proxies",
        metavar="LIST",
        help="comma-separated proxy addresses/networks whose X-Forwarded-For/-Proto count",
    )
    _add_config_args(serve)
    serve.set_defaults(handler=_serve)

    migrate = commands.add_parser(
        "migrate",
        help="apply database migrations (idempotent)",
        description="Apply every pending numbered migration; running it again does nothing.",
    )
    _add_config_args(migrate)
    migrate.set_defaults(handler=_migrate)

    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    key_commands = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    create = key_commands.add_parser(
        "create",
        help="create an API key and print its secret once",
        description="Create an API key. The secret is printed once and never stored.",
    )
    create.add_argument(
        "--role",
        required=True,
        type=str.upper,
        choices=[r.value for r in Role],
        help="ADMIN, DEVELOPER, ANALYST, VIEWER or SDK",
    )
    create.add_argument("--project", metavar="KEY", help="scope the key to this project")
    create.add_argument("--name", default="", help="a label for people")
    create.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_config_args(create)
    create.set_defaults(handler=_keys_create)

    list_ = key_commands.add_parser("list", help="list API keys (never their secrets)")
    list_.add_argument("--project", metavar="KEY", help="only keys of this project")
    list_.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_config_args(list_)
    list_.set_defaults(handler=_keys_list)

    revoke = key_commands.add_parser("revoke", help="revoke an API key by id")
    revoke.add_argument("key_id", metavar="ID")
    _add_config_args(revoke)
    revoke.set_defaults(handler=_keys_revoke)

    guardrails = commands.add_parser("guardrails", help="check experiments' guardrails")
    guardrail_commands = guardrails.add_subparsers(
        dest="guardrails_command", metavar="ACTION", required=True
    )
    check = guardrail_commands.add_parser(
        "check",
        help="check a running experiment's guardrails now and act on breaches",
        description="Judge every guardrail and health check of a running experiment now, "
        "record and act on breaches exactly as the guardrail actor would (notifications are "
        "delivered by the leading server), and print what each check found.",
    )
    check.add_argument("experiment", metavar="EXPERIMENT", help="the experiment's key")
    check.add_argument("--project", metavar="KEY", required=True, help="the project's key")
    check.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_config_args(check)
    check.set_defaults(handler=_guardrails_check)

    from assay.adapters._cli_definitions import add_definition_commands

    add_definition_commands(commands, _add_config_args)  # definitions load, import growthbook

    from assay.adapters._cli_plan import add_plan_command
    from assay.adapters._cli_report import add_report_command

    add_report_command(commands, _add_config_args)

    from assay.adapters._cli_db import add_db_commands

    add_db_commands(commands, _add_config_args, load_config)  # db stats, db expire
    add_plan_command(commands, _add_config_args)

    from assay.adapters._cli_sdk import add_sdk_commands

    add_sdk_commands(commands, _add_config_args, load_config)  # sdk-connections
    return parser


def load_config(args: argparse.Namespace, **extra: Any) -> EngineConfig:
    """The command's configuration; also sets the console's log level from it."""
    overrides = {
        "database_url": getattr(args, "database_url", None),
        "data_dir": getattr(args, "data_dir", None),
        "log_level": getattr(args, "log_level", None),
        **extra,
    }
    config = EngineConfig.load(getattr(args, "config", None), overrides=overrides)
    logging.getLogger().setLevel(config.log_level or _default_log_level(args))
    return config


def run_on_engine(config: EngineConfig, call: Callable[[Engine], Awaitable[T]]) -> T:
    """``call(engine)`` on an engine opened with ``config``, in a Trio run of its own. An
    AssayError it raises is raised as it is: it is returned out of the engine's nursery,
    where it would come wrapped in an exception group, and ``main`` reports plain
    AssayErrors."""

    async def run() -> T | AssayError:
        import assay

        async with assay.open_engine(config) as engine:
            try:
                return await call(engine)
            except AssayError as exc:
                return exc

    result = trio.run(run)
    if isinstance(result, AssayError):
        raise result
    return result


def _default_log_level(args: argparse.Namespace) -> str:
    # A server's log is its record of what it did; a one-shot command's answer is its output.
    return "INFO" if getattr(args, "command", None) == "serve" else "WARNING"


def _serve(args: argparse.Namespace) -> int:
    config = load_config(
        args,
        host=args.host,
        port=args.port,
        workers=args.workers,
        stream_port=args.stream_port,
        certfile=args.certfile,
        keyfile=args.keyfile,
        trusted_proxies=args.trusted_proxies,
    )
    if config.workers > 1:
        from assay.adapters.http import run_workers

        run_workers(config, config.workers, prepare=_prepare_workers)
    else:
        trio.run(serve_forever, config)
    return EXIT_OK


async def _prepare_workers(config: EngineConfig, port: int) -> None:
    """Once, in the parent, before the workers start: the first admin key."""
    from assay._bootstrap import store_factory

    async with store_factory(config) as store:
        created = await ConfigService(store).ensure_bootstrap_key()
    print(
        f"assay {__version__} serving on {'https' if config.certfile else 'http'}://"
        f"{config.host}:{port} with {config.workers} workers",
        flush=True,
    )
    if created is not None:
        _print_bootstrap_key(*created)


async def serve_forever(
    config: EngineConfig, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Open the engine, create the first admin key on an empty database, and serve HTTP
    until cancelled, Ctrl-C or SIGTERM. Reports the bound port through ``task_status``."""
    import assay
    from assay.adapters.http import bind_sockets, serve

    # Bound first: a taken port is said before anything starts (and in one line).
    sockets = bind_sockets(
        config.host, config.port, certfile=config.certfile, keyfile=config.keyfile
    )
    async with AsyncExitStack() as stack:
        for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
            stack.callback(sock.close)
        engine = await stack.enter_async_context(assay.open_engine(config))
        nursery = await stack.enter_async_context(trio.open_nursery())
        created = await engine.service.ensure_bootstrap_key()
        port = await nursery.start(
            partial(serve, engine, host=config.host, port=config.port, sockets=sockets)
        )
        scheme = "https" if config.certfile else "http"
        print(f"assay {__version__} serving on {scheme}://{config.host}:{port}", flush=True)
        if created is not None:
            # Last, once the server is up: nothing printed at startup may push it away.
            _print_bootstrap_key(*created)
        task_status.started(port)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def _print_bootstrap_key(key: Any, secret: str) -> None:
    bar = "=" * 72
    print(
        f"{bar}\nCreated the first admin API key ({key.id}). It is shown only this once:\n\n"
        f"    {secret}\n\nUse it as: Authorization: Bearer <key>\n"
        f"Lost it? Make another admin key: assay keys create --role ADMIN\n{bar}",
        flush=True,
    )


async def _with_service(config: EngineConfig, action: Callable[[ConfigService], Any]) -> Any:
    """Open the configured store (no actors, no HTTP) and run ``action`` on a service that
    validates exactly as a server would."""
    from assay._bootstrap import open_service

    async with open_service(config) as service:
        return await action(service)


def _migrate(args: argparse.Namespace) -> int:
    from assay._bootstrap import open_database
    from assay.adapters.postgres import migrate

    config = load_config(args)
    if config.store == "memory":
        print("the memory store has nothing to migrate", file=sys.stderr)
        return EXIT_USAGE

    async def run() -> list[str]:
        async with open_database(config) as dsn:
            return await migrate(dsn)

    applied = trio.run(run)
    if applied:
        for name in applied:
            print(f"applied {name}")
    else:
        print("database is up to date")
    return EXIT_OK


def _keys_create(args: argparse.Namespace) -> int:
    config = load_config(args)

    async def action(service: ConfigService) -> Any:
        return await service.create_key(
            SYSTEM_KEY, role=Role(args.role), project=args.project, name=args.name
        )

    key, secret = trio.run(_with_service, config, action)
    if args.json:
        out = {**_public(key), "secret": secret}
        print(msgspec.json.encode(out).decode())
    else:
        scope = args.project or "all projects"
        print(f"created {key.role.value} key {key.id} for {scope}")
        print(f"secret (shown once, store it now): {secret}")
    return EXIT_OK


def _keys_list(args: argparse.Namespace) -> int:
    config = load_config(args)

    async def action(service: ConfigService) -> tuple[list[Any], dict[str, str]]:
        keys: list[Any] = []
        cursor = None
        while True:
            page = await service.list_keys(SYSTEM_KEY, args.project, cursor=cursor, limit=500)
            keys.extend(page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        # People name projects by key; the table shows that, not the internal id.
        project_keys: dict[str, str] = {}
        cursor = None
        while True:
            projects = await service.list_projects(SYSTEM_KEY, cursor=cursor, limit=500)
            project_keys.update({p.id: p.key for p in projects.items})
            if projects.next_cursor is None:
                return keys, project_keys
            cursor = projects.next_cursor

    keys, project_keys = trio.run(_with_service, config, action)
    if args.json:
        print(msgspec.json.encode([_public(k) for k in keys]).decode())
        return EXIT_OK
    print(f"{'ID':<32} {'ROLE':<10} {'PROJECT':<24} {'PREFIX':<14} {'STATE':<8} NAME")
    for k in keys:
        state = "active" if k.active else "revoked"
        project = "*" if k.project_id is None else project_keys.get(k.project_id, k.project_id)
        print(f"{k.id:<32} {k.role.value:<10} {project:<24} {k.prefix:<14} {state:<8} {k.name}")
    return EXIT_OK


def _keys_revoke(args: argparse.Namespace) -> int:
    config = load_config(args)

    async def action(service: ConfigService) -> Any:
        return await service.revoke_key(SYSTEM_KEY, args.key_id)

    key = trio.run(_with_service, config, action)
    print(f"revoked key {key.id}")
    return EXIT_OK


def _guardrails_check(args: argparse.Namespace) -> int:
    config = load_config(args)
    result = run_on_engine(
        config, lambda engine: engine.check_guardrails(args.project, args.experiment)
    )
    if args.json:
        print(msgspec.json.encode(result).decode())
        return EXIT_OK
    print(f"experiment {result.experiment}: {result.status}")
    for outcome in result.outcomes:
        noted = f" [trigger {outcome.trigger_id}]" if outcome.trigger_id else ""
        print(f"  {outcome.status.upper():<20} {outcome.check}: {outcome.message}{noted}")
    for trigger in result.triggers:
        print(
            f"  triggered {trigger.id}: action {trigger.action} {trigger.action_status}"
            + (f" ({trigger.action_result})" if trigger.action_result else "")
        )
    breached = sum(o.status == "breached" for o in result.outcomes)
    print(f"{len(result.outcomes)} checks, {breached} breached")
    return EXIT_OK


def _public(key: Any) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(key)
    data.pop("secret_hash", None)
    return data


def _expected_failure(exc: BaseException) -> AssayError | None:
    """The AssayError behind ``exc``, also from inside the exception groups Trio's nurseries
    raise, when it is the only thing that went wrong; else None (a bug: let it show)."""
    if isinstance(exc, AssayError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found = [_expected_failure(e) for e in exc.exceptions]
        if found and all(f is not None for f in found):
            return found[0]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Until the configuration is read (which may fail), the flag or the variable decides.
    early = getattr(args, "log_level", None) or os.environ.get("ASSAY_LOG_LEVEL", "").upper()
    logging.basicConfig(
        level=early if early in LOG_LEVELS else _default_log_level(args), format=LOG_FORMAT
    )
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        return EXIT_OK
    except BaseException as exc:
        failure = _expected_failure(exc)
        if failure is None:
            raise
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            traceback.print_exception(exc)
        print(f"error ({failure.code}): {failure.message}", file=sys.stderr)
        return EXIT_ERROR
    return code


if __name__ == "__main__":
    sys.exit(main())
