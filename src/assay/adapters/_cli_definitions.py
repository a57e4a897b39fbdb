"""``assay definitions load`` and ``assay import growthbook``: configuration as code.

Kept apart from ``cli.py`` so the shared command-line module only gains the two lines that
register these commands.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import trio

from assay.adapters.growthbook._import import import_growthbook, parse_growthbook_payload
from assay.engine import SYSTEM_KEY, ConfigService, EngineConfig
from assay.engine._definitions import LoadReport, load_definitions, parse_definitions

EXIT_OK, EXIT_ERROR = 0, 1

_FORMATS = {".json": "json", ".toml": "toml"}


def add_definition_commands(
    commands: Any, add_config_args: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Register the commands on ``assay``'s sub-command set."""
    definitions = commands.add_parser(
        "definitions",
        help="load flags, experiments, layers, metrics and segments from a file",
        description="Configuration as code: a JSON or TOML file of layers, metrics, "
        "segments, experiments and flags.",
    )
    actions = definitions.add_subparsers(
        dest="definitions_command", metavar="ACTION", required=True
    )
    load = actions.add_parser(
        "load",
        help="create or update a project's objects to match a definitions file",
        description="Create or update every object in FILE (.json or .toml) so the project "
        "matches it; objects already matching are left alone (loading twice changes "
        "nothing), objects not in the file are never deleted. Experiments with a 'status' "
        "are moved there through their lifecycle (e.g. DRAFT -> RUNNING is a start).",
    )
    load.add_argument("file", metavar="FILE", help="definitions file (.json or .toml)")
    _add_common(load)
    add_config_args(load)
    load.set_defaults(handler=_definitions_load)

    import_ = commands.add_parser("import", help="import configuration from other tools")
    sources = import_.add_subparsers(dest="import_source", metavar="SOURCE", required=True)
    growthbook = sources.add_parser(
        "growthbook",
        help="import a GrowthBook SDK features payload",
        description="Import the features of a GrowthBook SDK payload (the JSON of "
        "/api/features/<clientKey>, or its 'features' object) as flags with force, rollout "
        "and experiment rules, so every subject keeps its value and variant. What cannot be "
        "imported is listed as warnings. Importing the same payload again changes nothing.",
    )
    growthbook.add_argument("file", metavar="FILE", help="payload file (JSON)")
    _add_common(growthbook)
    add_config_args(growthbook)
    growthbook.set_defaults(handler=_import_growthbook)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", metavar="KEY", required=True, help="the project to load into")
    parser.add_argument(
        "--dry-run", action="store_true", help="validate and show what would change; write nothing"
    )
    parser.add_argument(
        "--create-project", action="store_true", help="create the project if it does not exist"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


async def _with_service(config: EngineConfig, action: Callable[[ConfigService], Any]) -> Any:
    """Open the configured store and run ``action`` on a service that checks conditions
    with the same operators as the engine (built-ins and installed plugins), so a file
    loaded here is refused exactly where the HTTP API would refuse it."""
    from assay._bootstrap import open_service

    async with open_service(config) as service:
        return await action(service)


def _read(path: str) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        print(f"error: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return None


def _print(report: LoadReport, as_json: bool) -> None:
    if as_json:
        out = {**msgspec.to_builtins(report), "counts": report.counts()}
        print(msgspec.json.encode(out).decode())
    else:
        print(report.summary())


def _definitions_load(args: argparse.Namespace) -> int:
    fmt = _FORMATS.get(Path(args.file).suffix.lower())
    if fmt is None:
        print(
            f"error: cannot tell the format of {args.file}: name it .json or .toml",
            file=sys.stderr,
        )
        return EXIT_ERROR
    data = _read(args.file)
    if data is None:
        return EXIT_ERROR
    definitions = parse_definitions(data, "json" if fmt == "json" else "toml")
    return _load(args, load_definitions, definitions)


def _import_growthbook(args: argparse.Namespace) -> int:
    data = _read(args.file)
    if data is None:
        return EXIT_ERROR
    return _load(args, import_growthbook, parse_growthbook_payload(data))


def _load(
    args: argparse.Namespace,
    loader: Callable[..., Awaitable[LoadReport]],
    parsed: object,
) -> int:
    """Run ``loader`` (``load_definitions`` or ``import_growthbook``) on what was parsed
    from the file, into the project the arguments name, and print its report."""
    from assay.adapters.cli import load_config

    config = load_config(args)

    async def action(service: ConfigService) -> LoadReport:
        return await loader(
            service,
            SYSTEM_KEY,
            args.project,
            parsed,
            dry_run=args.dry_run,
            create_project=args.create_project,
        )

    report = trio.run(_with_service, config, action)
    _print(report, args.json)
    return EXIT_OK
