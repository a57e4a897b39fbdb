"""Exposures and conversions over HTTP: the three write routes, the ingestion summary,
who may use them, and bad input (refused whole when it does not decode, event by event
when it does)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

import assay
from assay.adapters.http import create_app
from assay.engine import SYSTEM_KEY, EngineConfig, ProjectSpec, Role, Transition

if TYPE_CHECKING:
    from tests.adapters.http.conftest import Api, World


async def running_experiment(world: World) -> tuple[str, str, str]:
    """A project with a metric and a running experiment using it, in the snapshot."""
    project = await world.project()
    metric = await world.metric(project)
    experiment = await world.experiment(project, Transition.START)
    await world.engine.refresh()
    return project, experiment, metric


def exposure(experiment: str, subject: str, variant: str = "control", **kw: Any) -> dict:
    """An event for the mixed route."""
    return {
        "type": "exposure",
        "experiment": experiment,
        "subject": subject,
        "variant": variant,
        **kw,
    }


def conversion(experiment: str, metric: str, subject: str, **kw: Any) -> dict:
    return {
        "type": "conversion",
        "experiment": experiment,
        "metric": metric,
        "subject": subject,
        **kw,
    }


def counts(body: dict[str, Any]) -> tuple[int, int, int, int, int]:
    return (
        body["received"],
        body["recorded"],
        body["deduplicated"],
        body["pending"],
        len(body["rejected"]),
    )


async def summary(api: Api, project: str, experiment: str) -> dict[str, Any]:
    response = await api.get(f"/api/v1/experiments/{experiment}/ingestion?project={project}")
    assert response.status == 200, response.body
    body: dict[str, Any] = response.body
    return body


async def test_an_sdk_key_sends_events_and_an_analyst_reads_the_summary(world: World) -> None:
    project, experiment, metric = await running_experiment(world)
    sdk = await world.api_as(Role.SDK, project)
    analyst = await world.api_as(Role.ANALYST, project)
    base = f"/api/v1/experiments/{experiment}"
    earlier = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()

    exposures = await sdk.post(
        f"{base}/exposures",
        json={
            "events": [
                {"subject": "u1", "variant": "control", "timestamp": earlier},
                {"subject": "u2", "variant": "treatment", "event_id": "e2"},
                {"subject": "u2", "variant": "treatment", "event_id": "e2"},
            ]
        },
    )
    assert exposures.status == 200, exposures.body
    assert counts(exposures.body) == (3, 2, 1, 0, 0)

    conversions = await sdk.post(
        f"{base}/conversions",
        json={
            "events": [
                {"metric": metric, "subject": "u1", "value": 12.5},
                {"metric": metric, "subject": "u9"},  # not exposed yet: waits
                {"metric": metric, "subject": "u1", "idempotency_key": "o1", "value": 2},
                {"metric": metric, "subject": "u1", "idempotency_key": "o1", "value": 2},
            ]
        },
    )
    assert counts(conversions.body) == (4, 2, 1, 1, 0)

    mixed = await sdk.post(
        "/api/v1/events",
        json={"events": [exposure(experiment, "u2"), conversion(experiment, metric, "u2")]},
    )
    assert counts(mixed.body) == (2, 2, 0, 0, 0)

    body = await summary(analyst, project, experiment)
    assert (body["experiment"], body["exposures"], body["crossovers"], body["pending"]) == (
        experiment,
        1,
        1,
        1,
    )
    # The three counts of docs/reports.md (``exposures`` is the older name of analysed).
    assert (body["assigned"], body["analysed"]) == (2, 1)
    assert body["variants"] == [
        {"variant": "control", "exposures": 1, "crossovers": 0, "assigned": 1, "analysed": 1},
        {"variant": "treatment", "exposures": 0, "crossovers": 1, "assigned": 1, "analysed": 0},
    ]
    [m] = body["metrics"]
    assert (m["metric"], m["conversions"], m["value_sum"], m["crossover"]) == (metric, 2, 14.5, 1)
    assert m["variants"] == [
        {"variant": "control", "conversions": 2, "subjects": 1, "value_sum": 14.5}
    ]


async def test_the_same_batch_twice_records_it_once(world: World) -> None:
    project, experiment, metric = await running_experiment(world)
    sdk = await world.api_as(Role.SDK, project)
    batch = {
        "events": [
            exposure(experiment, "u1", event_id="x1"),
            conversion(experiment, metric, "u1", event_id="c1"),
        ]
    }
    first = await sdk.post("/api/v1/events", json=batch)
    second = await sdk.post("/api/v1/events", json=batch)
    assert (counts(first.body), counts(second.body)) == ((2, 2, 0, 0, 0), (2, 0, 2, 0, 0))


async def test_invalid_events_are_rejected_by_index_and_the_rest_recorded(world: World) -> None:
    project, experiment, _ = await running_experiment(world)
    sdk = await world.api_as(Role.SDK, project)
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    response = await sdk.post(
        "/api/v1/events",
        json={
            "events": [
                exposure(experiment, "u1", "blue"),
                exposure(experiment, "u2"),
                conversion(experiment, "nope", "u2"),
                exposure("missing", "u3"),
                exposure(experiment, "u4", timestamp=future),
                exposure(experiment, "u5", timestamp="2024-05-01T12:00:00"),  # no offset
            ]
        },
    )
    assert response.status == 200
    assert counts(response.body) == (6, 1, 0, 0, 5)
    assert [(r["index"], r["code"]) for r in response.body["rejected"]] == [
        (0, "unknown_variant"),
        (2, "unknown_metric"),
        (3, "unknown_experiment"),
        (4, "timestamp_in_future"),
        (5, "invalid_timestamp"),
    ]
    admin = await world.api_as(Role.ADMIN)
    assert (await summary(admin, project, experiment))["exposures"] == 1


async def test_a_body_that_does_not_decode_records_nothing(world: World) -> None:
    project, experiment, _ = await running_experiment(world)
    sdk = await world.api_as(Role.SDK, project)
    url = f"/api/v1/experiments/{experiment}/exposures"
    good = {"subject": "u1", "variant": "control"}
    malformed = await sdk.post(url, data=b'{"events": [{"subject": "u1", "variant": ')
    assert (malformed.status, malformed.code) == (400, "malformed_json")
    wrong_type = await sdk.post(url, json={"events": [good, {"subject": 7, "variant": "a"}]})
    assert (wrong_type.status, wrong_type.code) == (422, "invalid_body")
    assert wrong_type.body["error"]["details"]["path"] == "$.events[1].subject"
    unknown = await sdk.post(url, json={"events": [good, {**good, "colour": "red"}]})
    assert (unknown.status, unknown.code) == (422, "unknown_field")
    untagged = await sdk.post("/api/v1/events", json={"events": [good]})
    assert untagged.status == 422
    admin = await world.api_as(Role.ADMIN)
    assert (await summary(admin, project, experiment))["exposures"] == 0


async def test_who_may_send_and_read(world: World) -> None:
    project, experiment, _ = await running_experiment(world)
    url = f"/api/v1/experiments/{experiment}/exposures?project={project}"
    read = f"/api/v1/experiments/{experiment}/ingestion?project={project}"
    body = {"events": [{"subject": "u1", "variant": "control"}]}
    expected = {
        # role: (send, read)
        Role.ADMIN: (200, 200),
        Role.DEVELOPER: (200, 200),
        Role.ANALYST: (403, 200),
        Role.VIEWER: (404, 404),
        Role.SDK: (200, 404),
    }
    for role, (send, see) in expected.items():
        api = await world.api_as(role, project)
        assert ((await api.post(url, json=body)).status, (await api.get(read)).status) == (
            send,
            see,
        ), role
    other = await world.project()
    stranger = await world.api_as(Role.SDK, other)
    assert (await stranger.post(url, json=body)).status == 404
    anonymous = world.api()
    assert (await anonymous.post(url, json=body)).status == 401


async def test_an_archived_project_refuses_events(world: World) -> None:
    project, experiment, _ = await running_experiment(world)
    sdk = await world.api_as(Role.SDK, project)
    await world.engine.service.set_project_archived(SYSTEM_KEY, project, True)
    await world.engine.refresh()
    response = await sdk.post(
        f"/api/v1/experiments/{experiment}/exposures",
        json={"events": [{"subject": "u1", "variant": "control"}]},
    )
    assert (response.status, response.code) == (409, "project_archived")


async def test_the_summary_of_an_unknown_experiment_is_404(world: World) -> None:
    project = await world.project()
    admin = await world.api_as(Role.ADMIN)
    response = await admin.get(f"/api/v1/experiments/nope/ingestion?project={project}")
    assert response.status == 404


async def test_more_than_10000_events_is_refused_whole(module_dsn: str) -> None:
    # This module's engines refuse bodies over 4 KiB; 10,001 events need a bigger limit.
    config = EngineConfig(database_url=module_dsn, pool_size=2)
    async with assay.open_engine(config, load_entry_points=False) as engine:
        project = f"big-{uuid.uuid4().hex[:8]}"
        await engine.service.create_project(SYSTEM_KEY, ProjectSpec(key=project))
        _, secret = await engine.service.create_key(SYSTEM_KEY, role=Role.SDK, project=project)
        event = {"subject": "u1", "variant": "control"}
        body = msgspec.json.encode({"events": [event] * 10_001})
        # The experiment need not exist: the size is checked before anything else.
        response = (
            await create_app(engine)
            .test_client()
            .post(
                "/api/v1/experiments/x/exposures",
                data=body,
                headers={"Authorization": f"Bearer {secret}", "Content-Length": str(len(body))},
            )
        )
        error = msgspec.json.decode(await response.get_data())["error"]
    assert (response.status_code, error["code"]) == (422, "batch_too_large")
    assert error["details"] == {"max_events": 10_000, "received": 10_001}


def test_the_event_routes_are_documented() -> None:
    from assay.adapters.http import build_openapi
    from assay.adapters.http.routes import ROUTES

    document = build_openapi(ROUTES)
    paths = document["paths"]
    assert paths["/api/v1/events"]["post"]["operationId"] == "recordEvents"
    assert paths["/api/v1/experiments/{key}/exposures"]["post"]["operationId"] == (
        "recordExposures"
    )
    assert "post" in paths["/api/v1/experiments/{key}/conversions"]
    assert "get" in paths["/api/v1/experiments/{key}/ingestion"]
    schemas = document["components"]["schemas"]
    assert set(schemas["EventsRecorded"]["required"]) >= {
        "received",
        "recorded",
        "deduplicated",
        "pending",
    }
    assert schemas["EventsBatch"]["properties"]["events"]["maxItems"] == 10_000
