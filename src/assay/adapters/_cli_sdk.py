"""``assay sdk-connections``: create, list, change and revoke the SDK connections through
which GrowthBook's SDKs read a project (docs/sdk.md).

Kept apart from ``cli.py`` so the shared command-line module only gains the lines that
register these commands. Every change goes through ``ConfigService`` as the local
administrator, validated and audited like an API call.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import msgspec
import trio

from assay.engine import SYSTEM_KEY, ConfigService, EngineConfig, SdkConnection, SdkConnectionSpec

EXIT_OK = 0


def add_sdk_commands(
    commands: Any,
    add_config_args: Callable[[argparse.ArgumentParser], None],
    load_config: Callable[[argparse.Namespace], EngineConfig],
) -> None:
    """Register ``sdk-connections`` on ``assay``'s sub-command set."""
    sdk = commands.add_parser(
        "sdk-connections",
        help="create, list, change and revoke SDK connections (GrowthBook SDKs)",
        description="SDK connections give GrowthBook's SDKs a public client key that reads "
        "one project's payload at /api/features/<clientKey> (docs/sdk.md).",
    )
    actions = sdk.add_subparsers(dest="sdk_command", metavar="ACTION", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--project", metavar="KEY", required=True, help="the project")
        parser.add_argument("--json", action="store_true", help="print the result as JSON")
        add_config_args(parser)

    create = actions.add_parser(
        "create",
        help="create a connection and print its client key",
        description="Create an SDK connection: a public client key (and, with --encrypt, "
        "the decryption key to give the SDK).",
    )
    create.add_argument("--name", default="default", help="unique among active connections")
    create.add_argument("--encrypt", action="store_true", help="encrypt the payload (AES)")
    create.add_argument(
        "--remote", action="store_true", help="remote evaluation: SDKs post to /api/eval"
    )
    create.add_argument(
        "--allow-exposures", action="store_true", help="accept exposures at /api/events"
    )
    common(create)
    create.set_defaults(handler=lambda a: _run(a, load_config, _create))

    list_ = actions.add_parser("list", help="list a project's connections")
    common(list_)
    list_.set_defaults(handler=lambda a: _run(a, load_config, _list))

    update = actions.add_parser(
        "update",
        help="change a connection",
        description="Change a connection's settings; the client key never changes.",
    )
    update.add_argument("connection_id", metavar="ID")
    update.add_argument("--name", help="a new name")
    for flag, field, on, off in (
        ("encrypt", "encrypt", "encrypt the payload", "stop encrypting"),
        ("remote", "evaluation", "remote evaluation", "local evaluation"),
        ("allow-exposures", "allow_exposures", "accept exposures", "refuse exposures"),
    ):
        group = update.add_mutually_exclusive_group()
        group.add_argument(f"--{flag}", dest=field, action="store_const", const=True, help=on)
        group.add_argument(f"--no-{flag}", dest=field, action="store_const", const=False, help=off)
    common(update)
    update.set_defaults(handler=lambda a: _run(a, load_config, _update))

    revoke = actions.add_parser("revoke", help="revoke a connection: its client key stops")
    revoke.add_argument("connection_id", metavar="ID")
    common(revoke)
    revoke.set_defaults(handler=lambda a: _run(a, load_config, _revoke))


Action = Callable[[ConfigService, argparse.Namespace], Any]


def _run(
    args: argparse.Namespace,
    load_config: Callable[[argparse.Namespace], EngineConfig],
    action: Action,
) -> int:
    from assay._bootstrap import open_service

    config = load_config(args)

    async def run() -> Any:
        async with open_service(config) as service:
            return await action(service, args)

    result = trio.run(run)
    if args.json:
        print(msgspec.json.encode(result).decode())
    elif isinstance(result, list):
        print(f"{'ID':<30} {'CLIENT KEY':<30} {'MODE':<7} {'ENC':<4} {'EXP':<4} {'STATE':<8} NAME")
        for c in result:
            print(_row(c))
    else:
        print(_row(result))
        if result.decryption_key is not None and result.active:
            print(f"decryption key: {result.decryption_key}")
    return EXIT_OK


def _row(c: SdkConnection) -> str:
    state = "active" if c.active else "revoked"
    return (
        f"{c.id:<30} {c.client_key:<30} {c.evaluation:<7} {'yes' if c.encrypt else 'no':<4} "
        f"{'yes' if c.allow_exposures else 'no':<4} {state:<8} {c.name}"
    )


async def _create(service: ConfigService, args: argparse.Namespace) -> SdkConnection:
    spec = SdkConnectionSpec(
        name=args.name,
        encrypt=args.encrypt,
        evaluation="remote" if args.remote else "local",
        allow_exposures=args.allow_exposures,
    )
    return await service.create_connection(SYSTEM_KEY, args.project, spec)


async def _list(service: ConfigService, args: argparse.Namespace) -> list[SdkConnection]:
    return await service.all_connections(SYSTEM_KEY, args.project)


async def _update(service: ConfigService, args: argparse.Namespace) -> SdkConnection:
    patch: dict[str, Any] = {}
    if args.name is not None:
        patch["name"] = args.name
    if args.encrypt is not None:
        patch["encrypt"] = args.encrypt
    if args.evaluation is not None:
        patch["evaluation"] = "remote" if args.evaluation else "local"
    if args.allow_exposures is not None:
        patch["allow_exposures"] = args.allow_exposures
    return await service.update_connection(SYSTEM_KEY, args.project, args.connection_id, patch)


async def _revoke(service: ConfigService, args: argparse.Namespace) -> SdkConnection:
    return await service.revoke_connection(SYSTEM_KEY, args.project, args.connection_id)
