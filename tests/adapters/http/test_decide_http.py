"""Deciding over HTTP: answers, batches, limits, looking decisions up, and /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

import assay
from assay.engine import Engine, EngineConfig, Role, Transition


@pytest.fixture
async def engine(module_dsn: str) -> AsyncIterator[Engine]:
    """Batches of 1,000 need more than the 4 KiB body limit the other HTTP tests use."""
    config = EngineConfig(database_url=module_dsn, pool_size=4)
    async with assay.open_engine(config, load_entry_points=False) as engine:
        yield engine


async def scene(world: Any) -> tuple[str, str]:
    """A project with a flag whose rule is a running two-variant experiment."""
    project = await world.project()
    experiment = await world.experiment(project, Transition.START)
    flag = world.unique("flag")
    await world.admin_create_flag(project, flag, experiment)
    await world.engine.refresh()
    return project, flag


async def test_decide_answers_with_the_assignment(world: Any) -> None:
    project, flag = await scene(world)
    sdk = await world.api_as(Role.SDK, project)
    answer = await sdk.post("/api/v1/decide", json={"flag": flag, "subject": "u1"})
    assert answer.status == 200, answer.body
    body = answer.body
    assert body["reason"] == "experiment_assigned"
    assert body["variant"] in ("control", "treatment")
    assert body["value"] is (body["variant"] == "treatment")
    # Durable before it was returned: an analyst can look it up at once.
    analyst = await world.api_as(Role.ANALYST, project)
    looked_up = await analyst.get(f"/api/v1/decisions/{body['decision_id']}")
    assert looked_up.status == 200
    assert looked_up.body["variant"] == body["variant"]


async def test_an_unknown_flag_is_a_normal_answer(world: Any) -> None:
    project, _ = await scene(world)
    sdk = await world.api_as(Role.SDK, project)
    answer = await sdk.post("/api/v1/decide", json={"flag": "nope", "subject": "u1"})
    assert (answer.status, answer.body["reason"], answer.body["value"]) == (
        200,
        "flag_not_found",
        None,
    )


async def test_batch_decides_every_pair_in_order(world: Any) -> None:
    project, flag = await scene(world)
    sdk = await world.api_as(Role.SDK, project)
    requests = [{"flag": flag, "subject": f"u{i}"} for i in range(1000)]
    answer = await sdk.post("/api/v1/decide/batch", json={"requests": requests})
    assert answer.status == 200
    decisions = answer.body["decisions"]
    assert [d["subject"] for d in decisions] == [r["subject"] for r in requests]
    variants = {d["variant"] for d in decisions}
    assert variants == {"control", "treatment"}


async def test_a_batch_over_the_limit_is_refused(world: Any) -> None:
    project, flag = await scene(world)
    sdk = await world.api_as(Role.SDK, project)
    before = world.engine.decisions_made
    requests = [{"flag": flag, "subject": f"u{i}"} for i in range(1001)]
    answer = await sdk.post("/api/v1/decide/batch", json={"requests": requests})
    assert (answer.status, answer.code) == (422, "batch_too_large")
    assert world.engine.decisions_made == before


async def test_malformed_attributes_are_refused(world: Any) -> None:
    project, flag = await scene(world)
    sdk = await world.api_as(Role.SDK, project)
    for body in (
        {"flag": flag, "subject": "u1", "attributes": "country=DE"},
        {"flag": flag, "subject": ""},
        {"flag": flag},
    ):
        answer = await sdk.post("/api/v1/decide", json=body)
        assert (answer.status, answer.code) == (422, "invalid_body"), body


async def test_decisions_of_another_project_are_invisible(world: Any) -> None:
    project, flag = await scene(world)
    decision = await world.engine.adecide(flag, "u1", project=project)
    other = await world.project()
    analyst = await world.api_as(Role.ANALYST, other)
    answer = await analyst.get(f"/api/v1/decisions/{decision.decision_id}")
    assert (answer.status, answer.code) == (404, "not_found")
    missing = await (await world.api_as(Role.ANALYST, project)).get("/api/v1/decisions/nope")
    assert (missing.status, missing.code) == (404, "not_found")


async def test_metrics_expose_latency_quantiles(world: Any, anonymous: Any) -> None:
    project, flag = await scene(world)
    sdk = await world.api_as(Role.SDK, project)
    for i in range(20):
        await sdk.post("/api/v1/decide", json={"flag": flag, "subject": f"u{i}"})
    answer = await anonymous.get("/metrics")
    assert answer.status == 200
    text = answer.body
    for q in ("0.5", "0.95", "0.99"):
        assert f'assay_decide_latency_seconds{{quantile="{q}"}}' in text
        assert (
            f'assay_http_request_latency_seconds{{quantile="{q}",route="POST /api/v1/decide"}}'
            in text
        )
    assert "assay_decide_latency_seconds_count" in text
    assert "assay_decision_records_written_total" in text
    made = [line for line in text.splitlines() if line.startswith("assay_decisions_total ")]
    assert made
    assert float(made[0].split()[1]) >= 20
    # Routes nobody called have no series at all, rather than NaN quantiles.
    assert "NaN" not in text
    assert 'route="DELETE /api/v1/flags/{key}"' not in text


async def test_a_fresh_engine_has_no_nan_metrics(engine, anonymous) -> None:
    text = (await anonymous.get("/metrics")).body
    assert "NaN" not in text, text
    # The in-process decide summary is there, empty; only /metrics itself has been timed
    # (after this answer, so not in it).
    assert "assay_decide_latency_seconds_count 0.0" in text
    assert "assay_http_request_latency_seconds{" not in text


async def test_rule_language_over_http(world: Any) -> None:
    """Parent conditions and typed ids through the API: saved, refused when they make a
    cycle, and decided with their reason codes."""
    project = await world.project()
    admin = await world.api_as(Role.ADMIN, project)
    url = f"/api/v1/flags?project={project}"
    parent = {
        "key": "parent",
        "type": "string",
        "default_value": "off",
        "rules": [{"type": "force", "condition": {"id": {"$in": [123, 456]}}, "value": "on"}],
    }
    child = {
        "key": "child",
        "type": "string",
        "default_value": "default",
        "rules": [
            {
                "type": "force",
                "value": "child-on",
                "parent_conditions": [
                    {"flag": "parent", "condition": {"value": "on"}, "gate": True}
                ],
            }
        ],
    }
    assert (await admin.post(url, json=parent)).status == 201
    assert (await admin.post(url, json=child)).status == 201
    loop = {"rules": [{"type": "force", "value": "x", "parent_conditions": [
        {"flag": "child", "condition": {}}
    ]}]}  # fmt: skip
    refused = await admin.patch(f"/api/v1/flags/parent?project={project}", json=loop)
    assert (refused.status, refused.code) == (422, "prerequisite_cycle")
    await world.engine.refresh()

    sdk = await world.api_as(Role.SDK, project)

    async def decide(attributes: dict[str, Any]) -> dict[str, Any]:
        answer = await sdk.post(
            "/api/v1/decide", json={"flag": "child", "subject": "123", "attributes": attributes}
        )
        assert answer.status == 200, answer.body
        return dict(answer.body)

    # The id keeps its JSON type: 123 is listed, "123" (the subject string) is not.
    on = await decide({"id": 123})
    assert (on["value"], on["reason"]) == ("child-on", "forced")
    gated = await decide({})
    assert (gated["value"], gated["reason"]) == (None, "prerequisite_gate")
    # A numeric subject is the id as a number.
    answer = await sdk.post("/api/v1/decide", json={"flag": "child", "subject": 456})
    assert (answer.status, answer.body["value"], answer.body["subject"]) == (200, "child-on", "456")
    batch = await sdk.post(
        "/api/v1/decide/batch",
        json={"requests": [{"flag": "child", "subject": s} for s in (123, "123")]},
    )
    assert [d["reason"] for d in batch.body["decisions"]] == ["forced", "prerequisite_gate"]


async def test_sticky_assignments_are_stored_before_the_answer_and_kept(world: Any) -> None:
    project, flag = await scene(world)
    experiment = (
        world.engine.snapshot.flags[(world.engine.project_id(project), flag)].rules[0].experiment
    )
    admin = await world.api_as(Role.ADMIN, project)
    one = f"/api/v1/experiments/{experiment}?project={project}"
    assert (await admin.patch(one, json={"sticky_bucketing": True})).status == 200
    await world.engine.refresh()
    sdk = await world.api_as(Role.SDK, project)
    requests = [{"flag": flag, "subject": f"u{i}"} for i in range(30)]
    first = await sdk.post("/api/v1/decide/batch", json={"requests": requests})
    assert first.status == 200, first.body
    variants = [d["variant"] for d in first.body["decisions"]]
    assert {d["reason"] for d in first.body["decisions"]} == {"experiment_assigned"}
    assert all(d["sticky_bucket"]["key"] == f"{experiment}__0" for d in first.body["decisions"])

    # Everyone new to the treatment now; those assigned keep their variant.
    moved = [
        {"key": "control", "value": False, "weight": 0},
        {"key": "treatment", "value": True, "weight": 1},
    ]
    patched = await admin.patch(one, json={"variants": moved, "bucket_version": 0})
    assert patched.status == 200, patched.body
    await world.engine.refresh()
    again = await sdk.post("/api/v1/decide/batch", json={"requests": requests})
    assert [d["variant"] for d in again.body["decisions"]] == variants
    assert {d["reason"] for d in again.body["decisions"]} == {"sticky_bucket"}
    single = await sdk.post("/api/v1/decide", json={"flag": flag, "subject": "u0"})
    assert (single.body["variant"], single.body["reason"]) == (variants[0], "sticky_bucket")

    down = await admin.patch(one, json={"bucket_version": 2})
    assert down.status == 200
    refused = await admin.patch(one, json={"bucket_version": 1})
    assert (refused.status, refused.code) == (409, "bucket_version_decreased")
