"""Hostile input: text PostgreSQL cannot store, nesting past the limit, numbers past their
bounds, headers and media types the server does not take. Each is a 4xx with its code,
nothing is written, and nobody else's request is affected."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from assay.adapters.http._app import build_documents
from assay.adapters.http._request import MAX_JSON_DEPTH
from assay.engine import Role, Transition

NUL = "a\u0000b"


def nested(depth: int) -> Any:
    """A value of ``depth`` levels of objects (then a number)."""
    value: Any = 1
    for _ in range(depth):
        value = {"x": value}
    return value


def raw_nested(depth: int) -> str:
    """JSON text of ``nested(depth)``, for depths msgspec would not encode."""
    return '{"x":' * depth + "1" + "}" * depth


def raw_deep_and(depth: int) -> str:
    """A condition of ``depth`` nested ``$and``s, as JSON text."""
    return '{"$and":[' * depth + '{"country":"DE"}' + "]}" * depth


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/projects", {"key": "{fresh}", "name": NUL}),
        ("/api/v1/projects", {"key": "{fresh}", "description": NUL}),
        ("/api/v1/keys", {"role": "VIEWER", "project": "{project}", "name": NUL}),
        ("/api/v1/flags?project={project}", {"key": "{fresh}", "description": NUL}),
        (
            "/api/v1/experiments?project={project}",
            {"key": "{fresh}", "variants": [{"key": "a", "value": NUL}]},
        ),
        ("/api/v1/experiments/{running}/pause?project={project}", {"reason": NUL}),
        ("/api/v1/decide?project={project}", {"flag": "{flag}", "subject": NUL}),
        (
            "/api/v1/decide?project={project}",
            {"flag": "{flag}", "subject": "s", "attributes": {NUL: 1}},
        ),
        (
            "/api/v1/experiments/{running}/exposures?project={project}",
            {"events": [{"subject": NUL, "variant": "control"}]},
        ),
    ],
)
async def test_a_nul_character_is_refused_and_nothing_is_written(
    world: Any, admin: Any, path: str, body: Any
) -> None:
    project = await world.project()
    scene = world.scene(project)
    path, body = await scene.fill(path), await scene.fill(body)
    await world.engine.refresh()
    before = await world.stored_state()
    decided, handled = world.engine.decisions_made, world.engine.ingestion.actor.handled
    answer = await admin.post(path, json=body)
    assert (answer.status, answer.code) == (422, "invalid_text"), answer.body
    assert answer.body["error"]["details"]["path"].startswith("$")
    assert await world.stored_state() == before
    assert world.engine.decisions_made == decided
    assert world.engine.ingestion.actor.handled == handled


async def test_a_nul_character_in_a_path_or_query_parameter_is_refused(
    world: Any, admin: Any
) -> None:
    project = await world.project()
    for path in (
        f"/api/v1/flags/a%00b?project={project}",
        f"/api/v1/flags?project={project}%00",
        "/api/v1/decisions/a%00b",
    ):
        answer = await admin.get(path)
        assert (answer.status, answer.code) == (422, "invalid_text"), (path, answer.body)
    decide = await admin.post(
        f"/api/v1/decide?project={project}%00", json={"flag": "f", "subject": "s"}
    )
    assert (decide.status, decide.code) == (422, "invalid_text")


async def test_a_nul_decide_leaves_concurrent_decides_alone(world: Any, admin: Any) -> None:
    """The reported failure: one poisoned subject failed the whole record batch."""
    project = await world.project()
    experiment = await world.experiment(project, Transition.START)
    flag = world.unique("flag")
    await world.admin_create_flag(project, flag, experiment)
    await world.engine.refresh()
    url = f"/api/v1/decide?project={project}"
    answers: dict[str, Any] = {}

    async def decide(subject: str) -> None:
        answers[subject] = await admin.post(url, json={"flag": flag, "subject": subject})

    async with trio.open_nursery() as nursery:
        for subject in [f"ok{i}" for i in range(10)] + [NUL]:
            nursery.start_soon(decide, subject)
    assert answers.pop(NUL).status == 422
    for answer in answers.values():
        assert answer.status == 200
        assert answer.body["reason"] == "experiment_assigned"
        assert await world.engine.get_decision(answer.body["decision_id"]) is not None


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/api/v1/decide?project={project}",
            '{"flag": "f", "subject": "s", "attributes": ' + raw_nested(500) + "}",
        ),
        (
            "/api/v1/decide?project={project}",
            {"flag": "f", "subject": "s", "attributes": nested(MAX_JSON_DEPTH)},  # 1 + 1 + 64
        ),
        (
            "/api/v1/flags?project={project}",
            '{"key": "{fresh}", "type": "json", "default_value": ' + raw_nested(500) + "}",
        ),
        (
            "/api/v1/flags?project={project}",
            '{"key": "{fresh}", "rules": [{"type": "force", "value": true, "condition": '
            + raw_deep_and(300)
            + "}]}",
        ),
    ],
)
async def test_nesting_past_the_limit_is_refused(
    world: Any, admin: Any, path: str, body: Any
) -> None:
    project = await world.project()
    scene = world.scene(project)
    before = await world.stored_state()
    if isinstance(body, str):
        fresh = world.unique("k")
        answer = await admin.post(
            await scene.fill(path), data=body.replace("{fresh}", fresh).encode()
        )
    else:
        answer = await admin.post(await scene.fill(path), json=await scene.fill(body))
    assert (answer.status, answer.code) == (422, "too_deep"), answer.body
    assert answer.body["error"]["details"]["max_depth"] == MAX_JSON_DEPTH
    assert await world.stored_state() == before


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 10_000, 100_000])
def test_any_depth_past_the_limit_is_too_deep_not_a_crash(depth: int) -> None:
    """Past the interpreter's recursion limit too (msgspec's decoder recurses)."""
    from assay.adapters.http._request import check_json
    from assay.engine import ValidationFailed

    with pytest.raises(ValidationFailed) as refused:
        check_json(("[" * depth + "]" * depth).encode())
    assert refused.value.code == "too_deep"


async def test_nesting_up_to_the_limit_is_taken(world: Any, admin: Any) -> None:
    project = await world.project()
    # The body is level 1, "attributes" level 2: the value nests the rest.
    attributes = nested(MAX_JSON_DEPTH - 2)
    answer = await admin.post(
        f"/api/v1/decide?project={project}",
        json={"flag": "f", "subject": "s", "attributes": attributes},
    )
    assert answer.status == 200, answer.body


@pytest.mark.parametrize(
    ("path", "body", "at"),
    [
        (
            "/api/v1/metrics?project={project}",
            {"key": "{fresh}", "attribution_window_hours": 4611686018427387904},
            "$.attribution_window_hours",
        ),
        (
            "/api/v1/experiments?project={project}",
            {
                "key": "{fresh}",
                "variants": [
                    {"key": "a", "value": 1, "weight": 1e308},
                    {"key": "b", "value": 2, "weight": 1e308},
                ],
            },
            "$.variants[0].weight",
        ),
        (
            "/api/v1/experiments?project={project}",
            {"key": "{fresh}", "participation_limit": 2**40},
            "$.participation_limit",
        ),
    ],
)
async def test_numbers_past_their_bounds_are_refused(
    world: Any, admin: Any, path: str, body: Any, at: str
) -> None:
    project = await world.project()
    scene = world.scene(project)
    before = await world.stored_state()
    answer = await admin.post(await scene.fill(path), json=await scene.fill(body))
    assert (answer.status, answer.code) == (422, "invalid_body"), answer.body
    assert answer.body["error"]["details"]["path"] == at
    assert await world.stored_state() == before


def test_the_document_states_the_bounds() -> None:
    document = build_documents().openapi_json.decode()
    assert '"maximum":87600' in document  # attribution_window_hours
    assert '"maximum":1000000.0' in document  # variant weights


async def test_an_empty_if_match_is_refused(world: Any, admin: Any) -> None:
    project = await world.project()
    flag = await world.flag(project)
    before = await world.stored_state()
    answer = await admin.patch(
        f"/api/v1/flags/{flag}?project={project}", json={"enabled": False}, headers={"If-Match": ""}
    )
    assert (answer.status, answer.code) == (422, "invalid_if_match")
    assert await world.stored_state() == before


@pytest.mark.parametrize("media", ["text/plain", "application/x-www-form-urlencoded"])
async def test_a_body_not_sent_as_json_is_415(world: Any, admin: Any, media: str) -> None:
    project = await world.project()
    before = await world.stored_state()
    for path in ("/api/v1/projects", f"/api/v1/decide?project={project}"):
        body = b'{"key": "x", "flag": "f", "subject": "s"}'
        answer = await admin.post(path, data=body, headers={"Content-Type": media})
        assert (answer.status, answer.code) == (415, "unsupported_media_type"), path
    assert await world.stored_state() == before
    ok = await admin.post(
        "/api/v1/projects",
        data=b'{"key": "%s"}' % world.unique("p").encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert ok.status == 201


def test_metrics_are_documented_as_prometheus_text() -> None:
    import json

    document = json.loads(build_documents().openapi_json)
    content = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(content) == ["text/plain; version=0.0.4; charset=utf-8"]


async def test_sdk_keys_are_not_needed_for_these_refusals(world: Any) -> None:
    """An SDK key meets the same limits on the routes it may use."""
    project = await world.project()
    api = await world.api_as(Role.SDK, project)
    answer = await api.post("/api/v1/decide", json={"flag": "f", "subject": NUL})
    assert (answer.status, answer.code) == (422, "invalid_text")
