"""``assay definitions load`` and ``assay import growthbook`` against a real PostgreSQL:
what they print, what they write, and how they fail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from assay.adapters.cli import main
from assay.adapters.postgres import open_postgres_store
from assay.engine import (
    SYSTEM_KEY,
    ConfigService,
    Experiment,
    ExperimentStatus,
    Flag,
    ProjectSpec,
    Segment,
)

P = "shop"

DEFINITIONS = {
    "experiments": [
        {
            "key": "button",
            "variants": [{"key": "control", "value": "blue"}, {"key": "green", "value": "green"}],
            "status": "RUNNING",
        }
    ],
    "flags": [
        {
            "key": "button-color",
            "type": "string",
            "default_value": "blue",
            "rules": [{"type": "experiment", "experiment": "button"}],
        }
    ],
}

TOML = """
[[flags]]
key = "dark-mode"
default_value = false
rules = [{ type = "force", condition = { beta = true }, value = true }]
"""

PAYLOAD = {
    "status": 200,
    "features": {
        "banner": {"defaultValue": False, "rules": [{"condition": {"beta": True}, "force": True}]},
        "checkout": {
            "defaultValue": "old",
            "rules": [
                {"force": "new", "coverage": 0.2, "hashVersion": 2},
                {
                    "key": "checkout-exp",
                    "variations": ["old", "new"],
                    "weights": [0.5, 0.5],
                    "parentConditions": [{"id": "banner", "condition": {"value": True}}],
                },
                {"key": "checkout-exp-2", "variations": ["old", "new"], "phase": "1"},
            ],
        },
    },
}


def run(dsn: str, *argv: str) -> int:
    return main([*argv, "--database-url", dsn])


def with_service(dsn: str, action: Any) -> Any:
    async def go() -> Any:
        async with open_postgres_store(dsn) as store:
            return await action(ConfigService(store))

    return trio.run(go)


@pytest.fixture
def dsn(pg_dsn: str) -> str:
    async def create(service: ConfigService) -> None:
        await service.create_project(SYSTEM_KEY, ProjectSpec(key=P))

    with_service(pg_dsn, create)
    return pg_dsn


def write(tmp_path: Path, name: str, content: str | dict[str, Any]) -> str:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def get(dsn: str, kind: Any, key: str) -> Any:
    async def action(service: ConfigService) -> Any:
        return await service.get_object(SYSTEM_KEY, kind, P, key)

    return with_service(dsn, action)


def count(dsn: str, kind: Any) -> int:
    async def action(service: ConfigService) -> int:
        return len((await service.list_objects(SYSTEM_KEY, kind, P, limit=500)).items)

    return int(with_service(dsn, action))


def test_definitions_load_prints_and_applies(
    dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = write(tmp_path, "assay.json", DEFINITIONS)
    assert run(dsn, "definitions", "load", file, "--project", P) == 0
    out = capsys.readouterr().out
    assert "created experiment 'button'; start -> RUNNING" in out
    assert "created flag 'button-color'" in out
    assert "experiments: 1 created" in out
    assert "flags: 1 created" in out
    assert get(dsn, Experiment, "button").status is ExperimentStatus.RUNNING
    assert get(dsn, Flag, "button-color").revision == 1

    assert run(dsn, "definitions", "load", file, "--project", P) == 0
    out = capsys.readouterr().out
    assert "created" not in out.replace("0 created", "")
    assert "experiments: 0 created, 0 updated, 1 unchanged" in out
    assert get(dsn, Flag, "button-color").revision == 1

    toml = write(tmp_path, "more.TOML", TOML)
    assert run(dsn, "definitions", "load", toml, "--project", P, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["flag"] == {"created": 1, "updated": 0, "unchanged": 0}
    assert report["changes"][0]["key"] == "dark-mode"
    assert get(dsn, Flag, "dark-mode").rules[0].value is True


def test_definitions_load_segments_and_the_import_keeps_saved_groups(
    dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = write(
        tmp_path,
        "segments.toml",
        """
[[segments]]
key = "beta"
values = ["u1", "u2"]

[[flags]]
key = "beta-banner"
rules = [{ type = "force", condition = { id = { "$inGroup" = "beta" } }, value = true }]
""",
    )
    assert run(dsn, "definitions", "load", toml, "--project", P) == 0
    out = capsys.readouterr().out
    assert "created segment 'beta'" in out
    assert "segments: 1 created" in out
    assert get(dsn, Segment, "beta").values == ["u1", "u2"]

    payload = {
        "features": {
            "staff-only": {
                "defaultValue": False,
                "rules": [{"condition": {"$savedGroup": {"id": "staff"}}, "force": True}],
            }
        },
        "savedGroups": {"staff": {"type": "list", "attributeKey": "email", "values": ["a@x"]}},
    }
    file = write(tmp_path, "gb.json", payload)
    assert run(dsn, "import", "growthbook", file, "--project", P) == 0
    capsys.readouterr()
    staff = get(dsn, Segment, "staff")
    assert (staff.attribute, staff.values) == ("email", ["a@x"])
    assert get(dsn, Flag, "staff-only").rules[0].condition == {"$savedGroup": {"id": "staff"}}


def test_definitions_dry_run_writes_nothing(
    dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = write(tmp_path, "assay.json", DEFINITIONS)
    assert run(dsn, "definitions", "load", file, "--project", P, "--dry-run") == 0
    out = capsys.readouterr().out
    assert out.startswith("dry run: nothing written")
    assert "would create flag 'button-color'" in out
    assert count(dsn, Flag) == 0
    assert count(dsn, Experiment) == 0


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("defs.yaml", "flags: []", "name it .json or .toml"),
        (
            "defs.json",
            {"flags": [{"key": "f", "colour": 1}]},
            "error (invalid_definitions): flag 'f' (flags[0]): Object contains unknown field "
            "`colour`",
        ),
        ("defs.toml", "flags = [", "error (invalid_definitions): not a valid TOML document"),
        (
            "defs.json",
            {"flags": [{"key": "f", "rules": [{"type": "experiment", "experiment": "x"}]}]},
            "flag 'f' (rules[0].experiment): experiment 'x' does not exist",
        ),
        (
            "defs.json",
            {
                "flags": [
                    {
                        "key": "f",
                        "rules": [
                            {"type": "force", "value": True, "condition": {"age": {"$bogus": 1}}}
                        ],
                    }
                ]
            },
            "error (unknown_operator): flag 'f' (rules[0].condition): ",
        ),
    ],
)
def test_definitions_bad_input_exits_1(
    dsn: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: Any,
    message: str,
) -> None:
    file = write(tmp_path, name, content)
    for dry_run in ([], ["--dry-run"]):
        assert run(dsn, "definitions", "load", file, "--project", P, *dry_run) == 1
        captured = capsys.readouterr()
        assert message in captured.err
        assert captured.out == ""
    assert count(dsn, Flag) == 0


def test_missing_file_and_missing_project(
    dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(dsn, "definitions", "load", str(tmp_path / "none.json"), "--project", P) == 1
    assert "cannot read" in capsys.readouterr().err
    file = write(tmp_path, "assay.json", DEFINITIONS)
    assert run(dsn, "definitions", "load", file, "--project", "new") == 1
    assert "error (project_not_found): project 'new' not found" in capsys.readouterr().err
    assert run(dsn, "definitions", "load", file, "--project", "new", "--create-project") == 0
    assert "project 'new' (created)" in capsys.readouterr().out


def test_import_growthbook(dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = write(tmp_path, "features.json", PAYLOAD)
    assert run(dsn, "import", "growthbook", file, "--project", P, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "would create flag 'checkout'" in out
    assert "would create experiment 'checkout-exp'; would start -> RUNNING" in out
    assert count(dsn, Flag) == 0

    assert run(dsn, "import", "growthbook", file, "--project", P) == 0
    out = capsys.readouterr().out
    assert "created flag 'banner'" in out
    assert "created flag 'checkout'" in out
    assert "1 warning(s):" in out
    assert "warning: features.checkout.rules[2]: this flag already runs experiment" in out
    checkout = get(dsn, Flag, "checkout")
    assert [type(r).__name__ for r in checkout.rules] == ["RolloutRule", "ExperimentRule"]
    assert checkout.rules[0].coverage == 0.19995  # GrowthBook's n < 0.2, as assay's n <= c
    assert [p.flag for p in checkout.rules[1].parent_conditions] == ["banner"]
    exp = get(dsn, Experiment, "checkout-exp")
    assert exp.status is ExperimentStatus.RUNNING
    assert exp.hash_version == 1

    assert run(dsn, "import", "growthbook", file, "--project", P, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert {c["action"] for c in report["changes"]} == {"unchanged"}
    assert len(report["warnings"]) == 1


def test_import_growthbook_bad_payload(
    dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = write(tmp_path, "features.json", "[1]")
    assert run(dsn, "import", "growthbook", file, "--project", P) == 1
    assert "error (invalid_payload)" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["definitions", "load"], ["import", "growthbook"]])
def test_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--project KEY" in out
    assert "--dry-run" in out
    assert "FILE" in out
