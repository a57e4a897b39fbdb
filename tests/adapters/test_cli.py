"""The ``assay`` command: every command's --help, --version, keys and migrate against a real
database, and ``assay serve`` end to end as a user runs it (a subprocess on the embedded
PostgreSQL): the first admin key printed once, /health answering, and a flag surviving a
restart on the same data directory."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from assay import __version__
from assay.adapters.cli import main

ASSAY = [sys.executable, "-m", "assay.adapters.cli"]


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
    ],
)
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    assert "usage: assay" in capsys.readouterr().out


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


class Server:
    """``assay serve`` in a subprocess, read line by line until it reports its port."""

    def __init__(self, data_dir: Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("ASSAY_DATABASE_URL", None)
        self.process = subprocess.Popen(
            [*ASSAY, "serve", "--port", "0", "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.output: list[str] = []
        self.url = self._wait_for_url()

    def _wait_for_url(self) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.output.append(line)
            found = re.search(r"serving on (http://\S+)", line)
            if found:
                return found.group(1)
        self.stop()
        raise AssertionError("assay serve did not start:\n" + "".join(self.output))

    @property
    def admin_secret(self) -> str | None:
        for line in self.output:
            found = re.fullmatch(r"\s+(assay_\S+)\s*", line)
            if found:
                return found.group(1)
        return None

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            assert self.process.stdout is not None
            self.output.extend(self.process.stdout.readlines())
            self.process.stdout.close()


@pytest.fixture
def data_dir(scratch_base: Path) -> Iterator[Path]:
    path = scratch_base / f"serve-{os.getpid()}-{time.monotonic_ns()}"
    yield path
    # The server stopped the embedded PostgreSQL; its files can go.
    subprocess.run(["rm", "-rf", str(path)], check=False)


def test_serve_end_to_end_keeps_data_across_restarts(data_dir: Path) -> None:
    first = Server(data_dir)
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

    second = Server(data_dir)
    try:
        assert second.admin_secret is None, "the admin key is printed only once"
        with httpx.Client(base_url=second.url, headers=headers, timeout=10) as http:
            flag = http.get("/api/v1/flags/checkout?project=shop")
            assert flag.status_code == 200
            assert flag.json()["default_value"] is True
    finally:
        assert second.stop() == 0
