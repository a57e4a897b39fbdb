"""Bad input on every write endpoint: each is refused with its documented status and code,
and nothing is written (the audit log, every configuration object and every key are
exactly as before).

After the bad requests, the good one is sent to the same target and must succeed, so a
refusal cannot come from a test that aimed at the wrong thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from assay.adapters.http import ROUTES
from assay.engine import Role

LIMIT = 4096  # the engines in these tests refuse bodies over 4 KiB (see conftest)
P = "?project={project}"


@dataclass(frozen=True)
class Write:
    method: str
    path: str
    good: Any
    """A body that succeeds (None: an empty body)."""
    unknown_field: Any
    wrong_type: Any
    missing_path: str | None
    """The same request aimed at something that does not exist, when it names something."""
    missing_body: Any = None
    good_status: int = 200
    decides: bool = False
    """The route decides rather than changes configuration: the good request must make a
    decision (and a bad one none)."""
    records_events: bool = False
    """The route records events rather than changes configuration: the good request must
    reach the ingestion actor (and a bad one must not)."""
    computes: bool = False
    """The route only computes (the calculator): the good request changes nothing either."""


def _object_writes(kind: str, target: str, wrong_type: dict[str, Any]) -> list[Write]:
    base = f"/api/v1/{kind}"
    return [
        Write(
            "POST",
            base + P,
            {"key": "{fresh}"},
            {"key": "{fresh}", "bogus": 1},
            {"key": "{fresh}", **wrong_type},
            base + "?project=no-such-project",
            {"key": "{fresh}"},
            201,
        ),
        Write(
            "PATCH",
            f"{base}/{{{target}}}" + P,
            {"description": "changed"},
            {"bogus": 1},
            wrong_type,
            f"{base}/no-such-key" + P,
            {"description": "changed"},
        ),
        Write(
            "DELETE",
            f"{base}/{{{target}}}" + P,
            None,
            {"bogus": 1},
            [],
            f"{base}/no-such-key" + P,
            None,
            204,
        ),
    ]


def _transition(name: str, status: str) -> Write:
    return Write(
        "POST",
        f"/api/v1/experiments/{{{status}}}/{name}" + P,
        {"reason": "because"},
        {"reason": "because", "bogus": 1},
        {"reason": 5},
        f"/api/v1/experiments/no-such-key/{name}" + P,
    )


WRITES = [
    Write(
        "POST",
        "/api/v1/projects",
        {"key": "{fresh}"},
        {"key": "{fresh}", "bogus": 1},
        {"key": 5},
        None,  # names nothing that could be missing
        good_status=201,
    ),
    Write(
        "PATCH",
        "/api/v1/projects/{project}",
        {"name": "renamed"},
        {"bogus": 1},
        {"name": 5},
        "/api/v1/projects/no-such-project",
        {"name": "renamed"},
    ),
    Write(
        "POST",
        "/api/v1/projects/{project}/archive",
        None,
        {"bogus": 1},
        [],
        "/api/v1/projects/no-such-project/archive",
    ),
    Write(
        "POST",
        "/api/v1/projects/{archived_project}/restore",
        None,
        {"bogus": 1},
        "restore",
        "/api/v1/projects/no-such-project/restore",
    ),
    *_object_writes("flags", "flag", {"enabled": "yes"}),
    *_object_writes("experiments", "draft", {"coverage": "all"}),
    *_object_writes("layers", "layer", {"name": ["a", "list"]}),
    *_object_writes("metrics", "metric", {"higher_is_better": 1}),
    *_object_writes("segments", "segment", {"values": "u1"}),
    _transition("start", "draft"),
    _transition("pause", "running"),
    _transition("resume", "paused"),
    _transition("complete", "running"),
    _transition("archive", "completed"),
    _transition("rollback", "running"),
    Write(
        "POST",
        "/api/v1/keys",
        {"role": "VIEWER", "project": "{project}"},
        {"role": "VIEWER", "project": "{project}", "bogus": 1},
        {"role": "VIEWER", "project": ["{project}"]},
        "/api/v1/keys",
        {"role": "VIEWER", "project": "no-such-project"},
        201,
    ),
    Write(
        "POST",
        "/api/v1/sdk-connections" + P,
        {"name": "{fresh}"},
        {"name": "{fresh}", "bogus": 1},
        {"name": 5},
        "/api/v1/sdk-connections?project=no-such-project",
        {"name": "web"},
        201,
    ),
    Write(
        "PATCH",
        "/api/v1/sdk-connections/{connection}" + P,
        {"allow_exposures": True},
        {"bogus": 1},
        {"encrypt": "yes"},
        "/api/v1/sdk-connections/sdk_nope" + P,
        {"allow_exposures": True},
    ),
    Write(
        "DELETE",
        "/api/v1/sdk-connections/{connection}" + P,
        None,
        {"bogus": 1},
        [],
        "/api/v1/sdk-connections/sdk_nope" + P,
        good_status=204,
    ),
    Write(
        "POST",
        "/api/v1/decide" + P,
        {"flag": "{flag}", "subject": "u1"},
        {"flag": "{flag}", "subject": "u1", "bogus": 1},
        {"flag": "{flag}", "subject": "u1", "attributes": ["not", "an", "object"]},
        "/api/v1/decide?project=no-such-project",
        {"flag": "{flag}", "subject": "u1"},
        decides=True,
    ),
    Write(
        "POST",
        "/api/v1/decide/batch" + P,
        {"requests": [{"flag": "{flag}", "subject": "u1"}]},
        {"requests": [{"flag": "{flag}", "subject": "u1", "bogus": 1}]},
        {"requests": [{"flag": "{flag}", "subject": True}]},
        "/api/v1/decide/batch?project=no-such-project",
        {"requests": [{"flag": "{flag}", "subject": "u1"}]},
        decides=True,
    ),
    Write(
        "DELETE",
        "/api/v1/keys/{key_id}",
        None,
        {"bogus": 1},
        [],
        "/api/v1/keys/key_nope",
        good_status=204,
    ),
    # Events: a bad body reaches no actor. (An unknown experiment is reported per event,
    # so the missing target here is the project.)
    Write(
        "POST",
        "/api/v1/events" + P,
        {"events": [{"type": "exposure", "experiment": "e", "subject": "u1", "variant": "a"}]},
        {"events": [{"type": "exposure", "experiment": "e", "subject": "u1", "bogus": 1}]},
        {"events": [{"type": "exposure", "experiment": "e", "subject": 5, "variant": "a"}]},
        "/api/v1/events?project=no-such-project",
        {"events": []},
        records_events=True,
    ),
    Write(
        "POST",
        "/api/v1/experiments/{running}/exposures" + P,
        {"events": [{"subject": "u1", "variant": "control"}]},
        {"events": [{"subject": "u1", "variant": "control", "bogus": 1}]},
        {"events": [{"subject": "u1", "variant": 5}]},
        "/api/v1/experiments/{running}/exposures?project=no-such-project",
        {"events": []},
        records_events=True,
    ),
    Write(
        "POST",
        "/api/v1/experiments/{running}/conversions" + P,
        {"events": [{"metric": "m", "subject": "u1"}]},
        {"events": [{"metric": "m", "subject": "u1", "bogus": 1}]},
        {"events": [{"metric": "m", "subject": "u1", "value": "much"}]},
        "/api/v1/experiments/{running}/conversions?project=no-such-project",
        {"events": []},
        records_events=True,
    ),
    # The calculator: nothing to find missing but the project; nothing is written.
    Write(
        "POST",
        "/api/v1/plan" + P,
        {"baseline_rate": 0.1, "mde": 0.05},
        {"baseline_rate": 0.1, "mde": 0.05, "bogus": 1},
        {"baseline_rate": "ten percent", "mde": 0.05},
        "/api/v1/plan?project=no-such-project",
        {"baseline_rate": 0.1, "mde": 0.05},
        computes=True,
    ),
    # A check someone asks for is audited, so the good request changes the stored state.
    Write(
        "POST",
        "/api/v1/experiments/{running}/guardrails/check" + P,
        None,
        {"bogus": 1},
        [],
        "/api/v1/experiments/no-such-key/guardrails/check" + P,
    ),
]


def _route_of(write: Write) -> tuple[str, str]:
    parts = write.path.split("?")[0].split("/")
    return write.method, "/".join("{}" if p.startswith("{") else p for p in parts)


def test_every_write_route_is_covered() -> None:
    # GrowthBook's SDK protocol routes (raw, public, named by a client key) have their bad
    # input checked in test_sdk_protocol.py, against a live server.
    writes = {
        (r.method, "/".join("{}" if p.startswith("{") else p for p in r.path.split("/")))
        for r in ROUTES
        if r.method != "GET" and not r.raw
    }
    assert {_route_of(w) for w in WRITES} == writes


def _encode(body: Any) -> bytes:
    return b"" if body is None else msgspec.json.encode(body)


@pytest.mark.parametrize("write", WRITES, ids=[" ".join(_route_of(w)) for w in WRITES])
async def test_bad_input_is_refused_and_writes_nothing(world, write: Write) -> None:
    project = await world.project()
    api = await world.api_as(Role.ADMIN)
    scene = world.scene(project)
    path = await scene.fill(write.path)
    good = _encode(await scene.fill(write.good))
    cases: list[tuple[str, str, bytes, int, tuple[str, ...]]] = [
        ("malformed JSON", path, b'{"key": ', 400, ("malformed_json",)),
        ("not JSON at all", path, b"key=value", 400, ("malformed_json",)),
        (
            "unknown field",
            path,
            _encode(await scene.fill(write.unknown_field)),
            422,
            ("unknown_field",),
        ),
        ("wrong type", path, _encode(await scene.fill(write.wrong_type)), 422, ("invalid_body",)),
        # Text PostgreSQL cannot store, wherever it is; nesting past the limit.
        ("NUL in a key", path, b'{"k\\u0000": 1}', 422, ("invalid_text",)),
        ("too deep", path, b"[" * 100 + b"]" * 100, 422, ("too_deep",)),
        # Valid JSON padded with whitespace: refused for its size alone.
        ("oversize", path, (good or b"{}") + b" " * LIMIT, 413, ("body_too_large",)),
    ]
    if write.missing_path is not None:
        missing_body = await scene.fill(write.missing_body)
        cases.append(
            (
                "unknown target",
                await scene.fill(write.missing_path),
                _encode(missing_body),
                404,
                ("not_found", "project_not_found"),
            )
        )
    before = await world.stored_state()
    decided_before = world.engine.decisions_made
    ingestion = world.engine.ingestion.actor  # counts every message it handled
    handled_before = ingestion.handled

    for case, url, body, status, codes in cases:
        answer = await api.call(write.method, url, data=body)
        assert answer.status == status, (case, answer.body)
        assert answer.code in codes, (case, answer.body)
        assert answer.body["error"]["message"], case
        if status == 422:
            assert answer.body["error"]["details"]["path"].startswith("$"), case
        assert await world.stored_state() == before, f"{case} wrote something"

    chunked = await _send_chunked(api, write.method, path, (good or b"{}") + b" " * LIMIT)
    assert (chunked.status, chunked.code) == (413, "body_too_large")
    assert await world.stored_state() == before, "the chunked oversize body wrote something"

    assert world.engine.decisions_made == decided_before, "a refused request decided"
    assert ingestion.handled == handled_before, "a refused request reached the ingestion actor"

    control = await api.call(write.method, path, data=good)
    assert control.status == write.good_status, control.body
    if write.decides:
        assert world.engine.decisions_made == decided_before + 1
    elif write.records_events:
        assert ingestion.handled == handled_before + 1
    elif write.computes:
        assert await world.stored_state() == before
    else:
        assert await world.stored_state() != before


async def _send_chunked(api: Any, method: str, path: str, body: bytes) -> Any:
    """Send ``body`` in pieces without a Content-Length, as a chunked upload would."""
    headers = {"Authorization": f"Bearer {api.secret}"}
    connection = api.client.request(path, method=method, headers=headers)
    async with connection:
        third = len(body) // 3 + 1
        for start in range(0, len(body), third):
            await connection.send(body[start : start + third])
        await connection.send_complete()
    response = await connection.as_response()
    return await api.wrap(response)


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"key": "{fresh}", "coverage": 1.5}, "$.coverage"),
        ({"key": "{fresh}", "hash_version": 3}, "$.hash_version"),
        (
            {"key": "{fresh}", "variants": [{"key": "a", "value": 1, "weight": -1}]},
            "$.variants[0].weight",
        ),
        ({"key": "not a key!"}, "$.key"),
        (
            {"key": "{fresh}", "variants": [{"key": "a", "value": 1, "color": "red"}]},
            "$.variants[0]",
        ),
    ],
)
async def test_out_of_range_values_name_their_path(world, admin, body: Any, path: str) -> None:
    project = await world.project()
    before = await world.stored_state()
    answer = await admin.post(
        f"/api/v1/experiments?project={project}", json=await world.scene(project).fill(body)
    )
    assert answer.status == 422
    assert answer.code in ("invalid_body", "unknown_field")
    assert answer.body["error"]["details"]["path"] == path
    assert await world.stored_state() == before


async def test_a_patch_with_a_wrong_nested_type_names_its_path(world, admin) -> None:
    project = await world.project()
    flag = await world.flag(project)
    before = await world.stored_state()
    answer = await admin.patch(
        f"/api/v1/flags/{flag}?project={project}",
        json={"rules": [{"type": "force", "value": True, "condition": "nope"}]},
    )
    assert (answer.status, answer.code) == (422, "invalid_body")
    assert answer.body["error"]["details"]["path"] == "$.rules[0].condition"
    assert await world.stored_state() == before


async def test_a_domain_validation_error_keeps_its_code(world, admin) -> None:
    project = await world.project()
    before = await world.stored_state()
    answer = await admin.post(
        f"/api/v1/flags?project={project}", json={"key": "f", "type": "string", "default_value": 3}
    )
    assert (answer.status, answer.code) == (422, "value_type_mismatch")
    assert await world.stored_state() == before


async def test_a_duplicate_is_a_conflict(world, admin) -> None:
    project = await world.project()
    flag = await world.flag(project)
    before = await world.stored_state()
    answer = await admin.post(f"/api/v1/flags?project={project}", json={"key": flag})
    assert (answer.status, answer.code) == (409, "already_exists")
    assert await world.stored_state() == before


async def test_a_stale_if_match_is_a_conflict(world, admin) -> None:
    project = await world.project()
    flag = await world.flag(project)
    url = f"/api/v1/flags/{flag}?project={project}"
    before = await world.stored_state()
    for header in ("2", '"2"', 'W/"0"'):
        answer = await admin.patch(url, json={"enabled": False}, headers={"If-Match": header})
        assert (answer.status, answer.code) == (409, "revision_mismatch"), header
        answer = await admin.delete(url, headers={"If-Match": header})
        assert (answer.status, answer.code) == (409, "revision_mismatch"), header
    garbage = await admin.patch(url, json={"enabled": False}, headers={"If-Match": "soon"})
    assert (garbage.status, garbage.code) == (422, "invalid_if_match")
    assert await world.stored_state() == before


async def test_an_archived_project_refuses_writes(world, admin) -> None:
    project = await world.project()
    flag = await world.flag(project)
    assert (await admin.post(f"/api/v1/projects/{project}/archive")).status == 200
    before = await world.stored_state()
    answer = await admin.patch(f"/api/v1/flags/{flag}?project={project}", json={"enabled": False})
    assert (answer.status, answer.code) == (409, "project_archived")
    assert await world.stored_state() == before
