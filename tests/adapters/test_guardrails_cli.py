"""``assay guardrails check``: checks a running experiment against the configured database,
acts on a breach and prints what every check found."""

from __future__ import annotations

import json

import pytest
import trio

import assay
from assay.adapters.cli import main
from assay.engine import (
    SYSTEM_KEY,
    EngineConfig,
    Experiment,
    ExperimentSpec,
    Metric,
    MetricSpec,
    ProjectSpec,
    Transition,
    Variant,
)
from assay.engine._events import Conversion, Event, Exposure
from assay.engine._model import Guardrail


async def _harmful_experiment(dsn: str) -> None:
    config = EngineConfig(database_url=dsn, pool_size=2, guardrail_interval_seconds=3600)
    async with assay.open_engine(config, load_entry_points=False) as engine:
        service = engine.service
        await service.create_project(SYSTEM_KEY, ProjectSpec(key="shop"))
        await service.create_object(SYSTEM_KEY, Metric, "shop", MetricSpec(key="errors"))
        guardrail = Guardrail(metric="errors", harmful_direction="increase", action="pause")
        spec = ExperimentSpec(
            key="exp",
            variants=[Variant(key="control", value=0), Variant(key="treatment", value=1)],
            guardrails=[guardrail],
        )
        await service.create_object(SYSTEM_KEY, Experiment, "shop", spec)
        await service.transition_experiment(SYSTEM_KEY, "shop", "exp", Transition.START)
        await engine.refresh()
        events: list[Event] = []
        for i in range(3000):
            for arm, rate in (("control", 0.2), ("treatment", 0.3)):
                events.append(Exposure(experiment="exp", subject=f"{arm}{i}", variant=arm))
                if i < rate * 3000:
                    events.append(
                        Conversion(experiment="exp", metric="errors", subject=f"{arm}{i}")
                    )
        for offset in range(0, len(events), 10_000):
            await engine.record_events("shop", events[offset : offset + 10_000])


def test_guardrails_check_prints_the_outcome(
    pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    trio.run(_harmful_experiment, pg_dsn)
    db = ["--database-url", pg_dsn]

    assert main(["guardrails", "check", "exp", "--project", "shop", *db]) == 0
    out = capsys.readouterr().out
    assert "experiment exp: PAUSED" in out
    assert "BREACHED" in out
    assert "guardrail:0:errors" in out
    assert "action pause done" in out

    # Paused now: a second check is refused with the reason.
    assert main(["guardrails", "check", "exp", "--project", "shop", *db]) == 1
    assert "experiment_not_running" in capsys.readouterr().err


def test_guardrails_check_as_json(pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    trio.run(_harmful_experiment, pg_dsn)
    args = ["guardrails", "check", "exp", "--project", "shop", "--json", "--database-url", pg_dsn]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "PAUSED"
    assert result["triggers"][0]["action_status"] == "done"


@pytest.mark.parametrize("command", [["guardrails"], ["guardrails", "check"]])
def test_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    assert "usage: assay" in capsys.readouterr().out
