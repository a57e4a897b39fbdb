"""The ``assay`` command: every command's --help, --version, keys and migrate against a real
database, and ``assay serve`` end to end as a user runs it (a subprocess on the embedded
PostgreSQL): the first admin key printed once, /health answering, and a flag surviving a
restart on the same data directory."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from assay import __version__
from assay.adapters.cli import build_parser, main

ASSAY = [sys.executable, "-m", "assay.adapters.cli"]  # as tests/conftest.py runs it


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["migrate"],
        ["keys"],
        ["keys", "create"],
        ["keys", "list"],
        ["keys", "revoke"],
        ["sdk-connections", "create"],
        ["sdk-connections", "list"],
        ["sdk-connections", "update"],
        ["sdk-connections", "revoke"],
    ],
)
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    assert "usage: assay" in capsys.readouterr().out


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_help_texts_print_percent_signs_as_written() -> None:
    parsers = list(_parsers(build_parser()))
    assert len(parsers) > 10
    texts = {p.prog: p.format_help() for p in parsers}
    # argparse formats help strings but not descriptions: "%%" in a description shows.
    assert not {prog for prog, text in texts.items() if "%%" in text}
    assert "always-valid 95% interval" in " ".join(texts["assay report"].split())


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"assay {__version__}"


def test_keys_create_list_revoke(pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    db = ["--database-url", pg_dsn]
    assert main(["keys", "create", "--role", "analyst", "--name", "ci", "--json", *db]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["role"] == "ANALYST"
    assert created["secret"].startswith("assay_")
    assert "secret_hash" not in created

    assert main(["keys", "list", "--json", *db]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [k["id"] for k in listed] == [created["id"]]
    assert all("secret" not in k and "secret_hash" not in k for k in listed)

    assert main(["keys", "revoke", created["id"], *db]) == 0
    assert created["id"] in capsys.readouterr().out
    assert main(["keys", "list", *db]) == 0
    assert "revoked" in capsys.readouterr().out


def test_sdk_connections_create_list_update_revoke(
    pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--database-url", pg_dsn]
    import trio

    from assay._bootstrap import open_service
    from assay.engine import SYSTEM_KEY, EngineConfig, ProjectSpec

    async def make_project() -> None:
        async with open_service(EngineConfig(database_url=pg_dsn)) as service:
            await service.create_project(SYSTEM_KEY, ProjectSpec(key="shop"))

    trio.run(make_project)
    create = ["sdk-connections", "create", "--project", "shop", "--name", "web"]
    assert main([*create, "--encrypt", "--allow-exposures", "--json", *db]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["client_key"].startswith("sdk-")
    assert created["decryption_key"]
    assert created["allow_exposures"] is True
    assert created["evaluation"] == "local"
    assert main(["sdk-connections", "create", "--project", "shop", "--remote", *db]) == 0
    assert "remote" in capsys.readouterr().out

    update = ["sdk-connections", "update", created["id"], "--project", "shop"]
    assert main([*update, "--no-encrypt", "--remote", "--json", *db]) == 0
    updated = json.loads(capsys.readouterr().out)
    assert updated["decryption_key"] is None
    assert updated["evaluation"] == "remote"
    assert updated["allow_exposures"] is True

    assert main(["sdk-connections", "revoke", created["id"], "--project", "shop", *db]) == 0
    capsys.readouterr()
    assert main(["sdk-connections", "list", "--project", "shop", *db]) == 0
    listed = capsys.readouterr().out
    assert created["client_key"] in listed
    assert "revoked" in listed
    assert main([*update, "--name", "again", *db]) == 1
    assert "connection_revoked" in capsys.readouterr().err


def test_errors_are_reported_with_their_code(
    pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--database-url", pg_dsn]
    assert main(["keys", "create", "--role", "VIEWER", "--project", "nope", *db]) == 1
    assert "project_not_found" in capsys.readouterr().err
    assert main(["keys", "revoke", "key_missing", *db]) == 1
    assert "not_found" in capsys.readouterr().err


def test_migrate_is_idempotent(pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    # The fixture's database is already migrated: nothing left to apply.
    assert main(["migrate", "--database-url", pg_dsn]) == 0
    assert "up to date" in capsys.readouterr().out


def test_serve_end_to_end_keeps_data_across_restarts(
    data_dir: Path, serve_process: Callable[..., Any]
) -> None:
    first = serve_process(data_dir)
    try:
        secret = first.admin_secret
        assert secret, "the first run prints the admin key:\n" + "".join(first.output)
        headers = {"Authorization": f"Bearer {secret}"}
        with httpx.Client(base_url=first.url, headers=headers, timeout=10) as http:
            assert http.get("/health").json() == {"status": "ok"}
            assert http.post("/api/v1/projects", json={"key": "shop"}).status_code == 201
            created = http.post(
                "/api/v1/flags?project=shop", json={"key": "checkout", "default_value": True}
            )
            assert created.status_code == 201, created.text
    finally:
        assert first.stop() == 0

    second = serve_process(data_dir)
    try:
        assert second.admin_secret is None, "the admin key is printed only once"
        with httpx.Client(base_url=second.url, headers=headers, timeout=10) as http:
            flag = http.get("/api/v1/flags/checkout?project=shop")
            assert flag.status_code == 200
            assert flag.json()["default_value"] is True
    finally:
        assert second.stop() == 0


def test_the_first_serve_is_short_and_ends_with_the_key(
    data_dir: Path, serve_process: Callable[..., Any]
) -> None:
    server = serve_process(data_dir)
    try:
        startup = "".join(server.startup)
        assert len(server.startup) <= 15, startup
        # The banner is the last thing printed before the server answers anything.
        assert server.startup[-1].startswith("=" * 72), startup
        banner = startup[startup.index("=" * 72) :]
        assert server.admin_secret
        assert server.admin_secret in banner
        assert "assay keys create --role ADMIN" in banner
        # The embedded PostgreSQL's own output went to its log file, not to the console.
        assert "initdb" not in startup, startup
        assert "pgserver" not in startup, startup
        assert "initdb" in (data_dir / "postgres.log").read_text()

        headers = {"Authorization": f"Bearer {server.admin_secret}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=10) as http:
            assert http.post("/api/v1/projects", json={"key": "shop"}).status_code == 201
            created = http.post("/api/v1/keys", json={"role": "ANALYST", "project": "shop"})
            assert created.status_code == 201, created.text

        # Another command on the same data directory: its table and nothing else.
        listed = subprocess.run(
            [*ASSAY, "keys", "list", "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("ASSAY_")},
            check=False,
        )
        assert listed.returncode == 0, listed.stderr
        assert listed.stderr == ""
        header, *rows = listed.stdout.splitlines()
        assert header.split() == ["ID", "ROLE", "PROJECT", "PREFIX", "STATE", "NAME"]
        assert sorted(row.split()[1:3] for row in rows) == [["ADMIN", "*"], ["ANALYST", "shop"]]
    finally:
        assert server.stop() == 0


def _assay(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ASSAY_")}
    return subprocess.run(
        [*ASSAY, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
        check=False,
    )


def _one_line_failure(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_taken_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        serve = ["serve", "--port", port, "--data-dir", str(tmp_path / "data")]
        line = _one_line_failure(_assay(*serve))
        assert f"port {port} " in line
        assert "--port" in line
        # Said before anything started: no database was made.
        assert not (tmp_path / "data").exists()
        # At DEBUG the traceback comes too.
        debug = _assay(*serve, "--log-level", "DEBUG")
        assert debug.returncode == 1
        assert "Traceback" in debug.stderr
        assert debug.stderr.rstrip().endswith(line)


@pytest.mark.parametrize(
    "case",
    ["data dir not writable", "database unreachable", "bad config file", "bad variable"],
)
def test_expected_startup_failures_are_one_line(case: str, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    config = tmp_path / "assay.toml"
    config.write_text('port = "eighty"\n')
    args, env, expected = {
        "data dir not writable": (
            ["--data-dir", str(tmp_path / "a-file" / "data")],
            {},
            f"the data directory {tmp_path / 'a-file' / 'data'} is not writable",
        ),
        "database unreachable": (
            ["--database-url", "postgresql://assay:secret@127.0.0.1:1/assay"],
            {},
            "cannot connect to PostgreSQL at postgresql://assay:***@127.0.0.1:1/assay",
        ),
        # A data directory of their own, should the check ever let them start.
        "bad config file": (
            ["--config", str(config), "--data-dir", str(tmp_path / "data")],
            {},
            f"config file {config}: port: expected an integer, got 'eighty'",
        ),
        "bad variable": (
            ["--data-dir", str(tmp_path / "data")],
            {"ASSAY_PORT": "abc"},
            "ASSAY_PORT: expected an integer, got 'abc'",
        ),
    }[case]
    line = _one_line_failure(_assay("serve", "--port", "0", *args, env=env))
    assert expected in line
    assert "secret" not in line
    # The same rule for every command that opens the database.
    if case != "bad variable":
        assert _one_line_failure(_assay("keys", "list", *args, env=env)) == line
