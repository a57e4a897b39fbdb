"""The example plugin, loaded from its entry point into a real engine (memory store), as
``assay serve`` would load it: each hook is used the way the engine uses it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from assay_example_plugin import JsonLines, pause_on_harm

import assay
from assay.engine.hookspecs import GuardrailTrigger, Notification, Transition

PROJECT = "shop"


@pytest.fixture
async def engine() -> AsyncIterator[assay.Engine]:
    # load_entry_points=True (the default): the plugin comes in through its entry point.
    async with assay.open_engine(assay.EngineConfig(store="memory")) as engine:
        await engine.service.create_project(assay.SYSTEM_KEY, assay.ProjectSpec(key=PROJECT))
        yield engine


async def _experiment(engine: assay.Engine, **fields: Any) -> assay.Experiment:
    spec = assay.ExperimentSpec(
        key=fields.pop("key", "checkout"),
        variants=[
            assay.Variant(key="control", value="a"),
            assay.Variant(key="treatment", value="b"),
        ],
        **fields,
    )
    return await engine.service.create_object(assay.SYSTEM_KEY, assay.Experiment, PROJECT, spec)


# --- $domain ------------------------------------------------------------------------------


async def test_the_domain_operator_targets_by_email_domain(engine: assay.Engine) -> None:
    await engine.service.create_object(
        assay.SYSTEM_KEY,
        assay.Flag,
        PROJECT,
        assay.FlagSpec(
            key="beta",
            default_value=False,
            rules=[
                assay.ForceRule(
                    condition={"email": {"$domain": ["Example.com", "example.org"]}},
                    value=True,
                )
            ],
        ),
    )
    assert engine.decide("beta", "u1", {"email": "ana@example.COM"}, project=PROJECT).value
    assert engine.decide("beta", "u2", {"email": "bo@example.org"}, project=PROJECT).value
    assert not engine.decide("beta", "u3", {"email": "cy@elsewhere.com"}, project=PROJECT).value
    assert not engine.decide("beta", "u4", {"email": 42}, project=PROJECT).value
    assert not engine.decide("beta", "u5", {}, project=PROJECT).value


@pytest.mark.parametrize("argument", ["example.com", [], [1], ["a@b.com"]])
async def test_a_bad_domain_argument_is_refused_when_saved(
    engine: assay.Engine, argument: Any
) -> None:
    with pytest.raises(assay.ValidationFailed) as info:
        await engine.service.create_object(
            assay.SYSTEM_KEY,
            assay.Flag,
            PROJECT,
            assay.FlagSpec(
                key="beta",
                default_value=False,
                rules=[assay.ForceRule(condition={"email": {"$domain": argument}}, value=True)],
            ),
        )
    assert info.value.code == "invalid_operator_argument"


# --- per_converter_mean -------------------------------------------------------------------


async def test_per_converter_mean_averages_over_converting_subjects(
    engine: assay.Engine,
) -> None:
    await engine.service.create_object(
        assay.SYSTEM_KEY,
        assay.Metric,
        PROJECT,
        assay.MetricSpec(key="order-value", kind="per_converter_mean"),
    )
    await _experiment(engine, primary_metrics=["order-value"])
    await engine.service.transition_experiment(
        assay.SYSTEM_KEY, PROJECT, "checkout", Transition.START
    )
    # control: 4 exposed, 2 buy (10 and 30); treatment: 2 exposed, 1 buys twice (5 + 15).
    for subject in ("c1", "c2", "c3", "c4"):
        await engine.expose(PROJECT, "checkout", subject, "control")
    for subject in ("t1", "t2"):
        await engine.expose(PROJECT, "checkout", subject, "treatment")
    for subject, value in [("c1", 10.0), ("c2", 30.0), ("t1", 5.0), ("t1", 15.0)]:
        await engine.track(PROJECT, "checkout", "order-value", subject, value=value)

    report = await engine.report(PROJECT, "checkout")
    (metric,) = report.metrics
    assert metric.kind == "per_converter_mean"
    assert metric.error is None
    values = {v.variant: (v.n, v.value) for v in metric.values}
    assert values == {"control": (2, 20.0), "treatment": (1, 20.0)}


# --- jsonl channel ------------------------------------------------------------------------


async def test_a_jsonl_channel_without_a_path_is_refused_when_saved(
    engine: assay.Engine,
) -> None:
    await engine.service.create_object(
        assay.SYSTEM_KEY, assay.Metric, PROJECT, assay.MetricSpec(key="errors")
    )
    guardrail = {"metric": "errors", "harmful_direction": "increase"}
    with pytest.raises(assay.ValidationFailed) as info:
        await _experiment(engine, guardrails=[{**guardrail, "channels": [{"type": "jsonl"}]}])
    assert info.value.code == "invalid_channel"
    saved = await _experiment(
        engine, guardrails=[{**guardrail, "channels": [{"type": "jsonl", "path": "x.jsonl"}]}]
    )
    assert saved.guardrails[0].channels == [{"type": "jsonl", "path": "x.jsonl"}]


async def test_a_jsonl_channel_appends_one_line_per_delivery(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    channel = JsonLines()
    config = {"type": "jsonl", "path": str(path)}
    channel.validate(config)
    now = datetime.now(UTC)
    for n in range(2):
        await channel.deliver(
            Notification(
                id=f"ntf_{n}",
                trigger_id="grt_1",
                project_id="prj_1",
                experiment_id="exp_1",
                channel=config,
                payload={"id": f"ntf_{n}", "message": "errors rose"},
                created_at=now,
                next_attempt_at=now,
            )
        )
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [
        {"id": "ntf_0", "message": "errors rose"},
        {"id": "ntf_1", "message": "errors rose"},
    ]


# --- pause-on-harm ------------------------------------------------------------------------


class _Context:
    """What the guardrail actor hands an action, reduced to what this one uses."""

    def __init__(self, experiment: assay.Experiment, kind: str) -> None:
        self.experiment = experiment
        self.trigger = GuardrailTrigger(
            id="grt_1",
            project_id=experiment.project_id,
            experiment_id=experiment.id,
            experiment_key=experiment.key,
            experiment_revision=experiment.revision,
            check="guardrail:0:errors" if kind == "guardrail" else kind,
            kind=kind,  # type: ignore[arg-type]
            threshold=0.02,
            message="errors rose by 10%",
            action="pause-on-harm",
            triggered_at=datetime.now(UTC),
        )
        self.transitions: list[tuple[Transition, str]] = []

    async def transition(self, transition: Transition, *, reason: str) -> assay.Experiment:
        self.transitions.append((transition, reason))
        return self.experiment


async def test_pause_on_harm_pauses_on_a_metric_breach(engine: assay.Engine) -> None:
    context = _Context(await _experiment(engine), "guardrail")
    assert await pause_on_harm(context) == "paused"
    assert context.transitions == [(Transition.PAUSE, "errors rose by 10%")]


@pytest.mark.parametrize("kind", ["srm", "no_traffic", "crossover_rate"])
async def test_pause_on_harm_only_notifies_on_a_health_check(
    engine: assay.Engine, kind: str
) -> None:
    context = _Context(await _experiment(engine), kind)
    assert "health check" in await pause_on_harm(context)
    assert context.transitions == []


async def test_pause_on_harm_is_accepted_as_a_guardrail_action(engine: assay.Engine) -> None:
    await engine.service.create_object(
        assay.SYSTEM_KEY, assay.Metric, PROJECT, assay.MetricSpec(key="errors")
    )
    guardrail = {"metric": "errors", "harmful_direction": "increase", "action": "pause-on-harm"}
    saved = await _experiment(engine, guardrails=[guardrail])
    assert saved.guardrails[0].action == "pause-on-harm"
    with pytest.raises(assay.ValidationFailed) as info:
        await _experiment(engine, key="other", guardrails=[{**guardrail, "action": "nope"}])
    assert info.value.code == "unknown_action"
