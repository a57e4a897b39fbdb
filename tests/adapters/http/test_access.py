"""Who may call what, through HTTP.

The matrix below is DESIGN's Access section written out by hand, not computed from the
engine's permission table, so a wrong table in the engine fails here:

- ADMIN: everything.
- DEVELOPER: creates and manages flags and experiments (with their layers and metrics);
  reads projects and the audit log; no project changes, no keys.
- ANALYST: reads everything a project holds, including the audit log; changes nothing.
- VIEWER: reads configuration only (projects, flags, experiments, layers, metrics).
- SDK: may only decide and send events, so every endpoint here is invisible to it.

Key management is ADMIN-only: no other role can even see the keys.

A read the role may not make is 404 (the resource does not exist for it); a write it may
not make, on something it can read, is 403.
"""

from __future__ import annotations

from typing import Any

import pytest

from assay.adapters.http import ROUTES
from assay.engine import Role

ROLES = (Role.ADMIN, Role.DEVELOPER, Role.ANALYST, Role.VIEWER, Role.SDK)
P = "?project={project}"

# method, path, JSON body, then the status for ADMIN, DEVELOPER, ANALYST, VIEWER, SDK.
# {placeholders} are made fresh for every role: {project} is a new project (an SDK key is
# scoped to it, the other roles' keys to no project), {fresh} a new unused key.
MATRIX: list[tuple[str, str, Any, int, int, int, int, int]] = [
    ("GET", "/api/v1/projects", None, 200, 200, 200, 200, 404),
    ("POST", "/api/v1/projects", {"key": "{fresh}"}, 201, 403, 403, 403, 404),
    ("GET", "/api/v1/projects/{project}", None, 200, 200, 200, 200, 404),
    ("PATCH", "/api/v1/projects/{project}", {"name": "renamed"}, 200, 403, 403, 403, 404),
    ("POST", "/api/v1/projects/{project}/archive", None, 200, 403, 403, 403, 404),
    ("POST", "/api/v1/projects/{archived_project}/restore", None, 200, 403, 403, 403, 404),
    # flags
    ("GET", "/api/v1/flags" + P, None, 200, 200, 200, 200, 404),
    ("POST", "/api/v1/flags" + P, {"key": "{fresh}"}, 201, 201, 403, 403, 404),
    ("GET", "/api/v1/flags/{flag}" + P, None, 200, 200, 200, 200, 404),
    ("PATCH", "/api/v1/flags/{flag}" + P, {"enabled": False}, 200, 200, 403, 403, 404),
    ("DELETE", "/api/v1/flags/{flag}" + P, None, 204, 204, 403, 403, 404),
    # experiments
    ("GET", "/api/v1/experiments" + P, None, 200, 200, 200, 200, 404),
    ("POST", "/api/v1/experiments" + P, {"key": "{fresh}"}, 201, 201, 403, 403, 404),
    ("GET", "/api/v1/experiments/{draft}" + P, None, 200, 200, 200, 200, 404),
    ("PATCH", "/api/v1/experiments/{draft}" + P, {"coverage": 0.5}, 200, 200, 403, 403, 404),
    ("DELETE", "/api/v1/experiments/{draft}" + P, None, 204, 204, 403, 403, 404),
    ("POST", "/api/v1/experiments/{draft}/start" + P, None, 200, 200, 403, 403, 404),
    ("POST", "/api/v1/experiments/{running}/pause" + P, None, 200, 200, 403, 403, 404),
    ("POST", "/api/v1/experiments/{paused}/resume" + P, None, 200, 200, 403, 403, 404),
    ("POST", "/api/v1/experiments/{running}/complete" + P, None, 200, 200, 403, 403, 404),
    ("POST", "/api/v1/experiments/{completed}/archive" + P, None, 200, 200, 403, 403, 404),
    ("POST", "/api/v1/experiments/{running}/rollback" + P, None, 200, 200, 403, 403, 404),
    # layers
    ("GET", "/api/v1/layers" + P, None, 200, 200, 200, 200, 404),
    ("POST", "/api/v1/layers" + P, {"key": "{fresh}"}, 201, 201, 403, 403, 404),
    ("GET", "/api/v1/layers/{layer}" + P, None, 200, 200, 200, 200, 404),
    ("PATCH", "/api/v1/layers/{layer}" + P, {"name": "renamed"}, 200, 200, 403, 403, 404),
    ("DELETE", "/api/v1/layers/{layer}" + P, None, 204, 204, 403, 403, 404),
    # metrics
    ("GET", "/api/v1/metrics" + P, None, 200, 200, 200, 200, 404),
    ("POST", "/api/v1/metrics" + P, {"key": "{fresh}"}, 201, 201, 403, 403, 404),
    ("GET", "/api/v1/metrics/{metric}" + P, None, 200, 200, 200, 200, 404),
    ("PATCH", "/api/v1/metrics/{metric}" + P, {"name": "renamed"}, 200, 200, 403, 403, 404),
    ("DELETE", "/api/v1/metrics/{metric}" + P, None, 204, 204, 403, 403, 404),
    # segments
    ("GET", "/api/v1/segments" + P, None, 200, 200, 200, 200, 404),
    ("POST", "/api/v1/segments" + P, {"key": "{fresh}"}, 201, 201, 403, 403, 404),
    ("GET", "/api/v1/segments/{segment}" + P, None, 200, 200, 200, 200, 404),
    ("PATCH", "/api/v1/segments/{segment}" + P, {"name": "renamed"}, 200, 200, 403, 403, 404),
    ("DELETE", "/api/v1/segments/{segment}" + P, None, 204, 204, 403, 403, 404),
    # keys
    ("GET", "/api/v1/keys", None, 200, 404, 404, 404, 404),
    ("POST", "/api/v1/keys", {"role": "VIEWER", "project": "{project}"}, 201, 404, 404, 404, 404),
    ("DELETE", "/api/v1/keys/{key_id}", None, 204, 404, 404, 404, 404),
    # SDK connections: managed like flags, read by every role that reads configuration
    ("GET", "/api/v1/sdk-connections" + P, None, 200, 200, 200, 200, 404),
    ("POST", "/api/v1/sdk-connections" + P, {"name": "{fresh}"}, 201, 201, 403, 403, 404),
    ("GET", "/api/v1/sdk-connections/{connection}" + P, None, 200, 200, 200, 200, 404),
    (
        "GET",
        "/api/v1/sdk-connections/{connection}/remote-only" + P,
        None,
        200,
        200,
        200,
        200,
        404,
    ),
    (
        "PATCH",
        "/api/v1/sdk-connections/{connection}" + P,
        {"encrypt": True},
        200,
        200,
        403,
        403,
        404,
    ),
    ("DELETE", "/api/v1/sdk-connections/{connection}" + P, None, 204, 204, 403, 403, 404),
    # audit
    ("GET", "/api/v1/audit" + P, None, 200, 200, 200, 404, 404),
    # decide: SDK keys may decide; ANALYST reads decisions but does not make them
    ("POST", "/api/v1/decide" + P, {"flag": "{flag}", "subject": "u1"}, 200, 200, 403, 404, 200),
    (
        "POST",
        "/api/v1/decide/batch" + P,
        {"requests": [{"flag": "{flag}", "subject": "u1"}]},
        200,
        200,
        403,
        404,
        200,
    ),
    ("GET", "/api/v1/decisions/{decision}", None, 200, 200, 200, 404, 404),
    # reports: ANALYST and up
    ("GET", "/api/v1/experiments/{running}/report" + P, None, 200, 200, 200, 404, 404),
    ("GET", "/api/v1/experiments/{running}/report/timeseries" + P, None, 200, 200, 200, 404, 404),
    (
        "POST",
        "/api/v1/plan" + P,
        {"baseline_rate": 0.1, "mde": 0.05},
        200,
        200,
        200,
        404,
        404,
    ),
    # guardrails: ANALYST and up read; DEVELOPER and up ask for a check
    (
        "GET",
        "/api/v1/experiments/{running}/guardrails/triggers" + P,
        None,
        200,
        200,
        200,
        404,
        404,
    ),
    ("GET", "/api/v1/experiments/{running}/guardrails/outbox" + P, None, 200, 200, 200, 404, 404),
    ("POST", "/api/v1/experiments/{running}/guardrails/check" + P, None, 200, 200, 403, 404, 404),
    # events: SDK keys (and DEVELOPER and up) send them; ANALYST and up read the summary
    (
        "POST",
        "/api/v1/events" + P,
        {"events": [{"type": "exposure", "experiment": "e", "subject": "u1", "variant": "a"}]},
        200,
        200,
        403,
        404,
        200,
    ),
    (
        "POST",
        "/api/v1/experiments/{running}/exposures" + P,
        {"events": [{"subject": "u1", "variant": "control"}]},
        200,
        200,
        403,
        404,
        200,
    ),
    (
        "POST",
        "/api/v1/experiments/{running}/conversions" + P,
        {"events": [{"metric": "{metric}", "subject": "u1"}]},
        200,
        200,
        403,
        404,
        200,
    ),
    ("GET", "/api/v1/experiments/{running}/ingestion" + P, None, 200, 200, 200, 404, 404),
]


def test_the_matrix_lists_every_authenticated_route() -> None:
    listed = {(method, path.split("?")[0]) for method, path, *_ in MATRIX}
    # Normalise placeholders to the route table's names.
    normalised = {(method, _template(path)) for method, path in listed}
    routes = {(r.method, _template(r.path)) for r in ROUTES if not r.public}
    assert normalised == routes


def _template(path: str) -> str:
    return "/".join("{}" if part.startswith("{") else part for part in path.split("/"))


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [(m, p, b, dict(zip(ROLES, statuses, strict=True))) for m, p, b, *statuses in MATRIX],
    ids=[f"{m} {p}" for m, p, *_ in MATRIX],
)
async def test_role_matrix(world, method: str, path: str, body: Any, expected: dict) -> None:
    mismatches = []
    for role in ROLES:
        project = await world.project()
        api = await world.api_as(role, project if role is Role.SDK else None)
        scene = world.scene(project)
        url = await scene.fill(path)
        answer = await api.call(method, url, json=await scene.fill(body))
        if answer.status != expected[role]:
            mismatches.append(
                f"{role}: expected {expected[role]}, got {answer.status} {answer.body}"
            )
        elif answer.status == 404:
            assert answer.code in ("not_found", "project_not_found"), answer.body
        elif answer.status == 403:
            assert answer.code == "forbidden", answer.body
    assert not mismatches, "\n".join(mismatches)


# --- project scope ---------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.ADMIN, Role.DEVELOPER, Role.ANALYST, Role.VIEWER])
async def test_another_projects_resources_are_invisible(world, role: Role) -> None:
    mine, theirs = await world.project(), await world.project()
    api = await world.api_as(role, mine)
    flag = await world.flag(theirs)
    experiment = await world.experiment(theirs)
    layer = await world.layer(theirs)
    metric = await world.metric(theirs)
    segment = await world.segment(theirs)
    their_key, _ = await world.key(Role.VIEWER, theirs)
    before = await world.stored_state()

    q = f"?project={theirs}"
    requests: list[tuple[str, str, Any]] = [
        ("GET", f"/api/v1/projects/{theirs}", None),
        ("PATCH", f"/api/v1/projects/{theirs}", {"name": "x"}),
        ("POST", f"/api/v1/projects/{theirs}/archive", None),
        ("GET", f"/api/v1/audit{q}", None),
        ("GET", f"/api/v1/keys{q}", None),
        ("POST", "/api/v1/keys", {"role": "VIEWER", "project": theirs}),
        ("DELETE", f"/api/v1/keys/{their_key.id}", None),
        ("POST", f"/api/v1/experiments/{experiment}/start{q}", None),
    ]
    for kind, key in (
        ("flags", flag),
        ("experiments", experiment),
        ("layers", layer),
        ("metrics", metric),
        ("segments", segment),
    ):
        requests += [
            ("GET", f"/api/v1/{kind}{q}", None),
            ("POST", f"/api/v1/{kind}{q}", {"key": world.unique("new")}),
            ("GET", f"/api/v1/{kind}/{key}{q}", None),
            ("PATCH", f"/api/v1/{kind}/{key}{q}", {"description": "x"}),
            ("DELETE", f"/api/v1/{kind}/{key}{q}", None),
        ]
    for method, url, body in requests:
        answer = await api.call(method, url, json=body)
        assert answer.status == 404, (method, url, answer.body)
        assert answer.code in ("not_found", "project_not_found"), (method, url, answer.body)
    assert await world.stored_state() == before


async def test_a_scoped_key_sees_only_its_own_project(world) -> None:
    mine = await world.project()
    await world.project()
    flag = await world.flag(mine)
    api = await world.api_as(Role.VIEWER, mine)

    projects = await api.get("/api/v1/projects")
    assert [p["key"] for p in projects.body["items"]] == [mine]
    # Without ?project= the key's own project is meant.
    flags = await api.get("/api/v1/flags")
    assert [f["key"] for f in flags.body["items"]] == [flag]


async def test_a_scoped_admin_cannot_create_keys_elsewhere_or_unscoped(world) -> None:
    mine, theirs = await world.project(), await world.project()
    api = await world.api_as(Role.ADMIN, mine)
    before = await world.stored_state()

    elsewhere = await api.post("/api/v1/keys", json={"role": "VIEWER", "project": theirs})
    assert (elsewhere.status, elsewhere.code) == (404, "project_not_found")
    unscoped = await api.post("/api/v1/keys", json={"role": "ADMIN"})
    assert (unscoped.status, unscoped.code) == (403, "forbidden")
    assert await world.stored_state() == before

    own = await api.post("/api/v1/keys", json={"role": "VIEWER", "project": mine})
    assert own.status == 201


@pytest.mark.parametrize("role", [Role.DEVELOPER, Role.ANALYST, Role.VIEWER, Role.SDK])
async def test_a_role_that_cannot_see_keys_gets_404_for_any_key_creation(world, role) -> None:
    project = await world.project()
    api = await world.api_as(role, project)
    answer = await api.post("/api/v1/keys", json={"role": "VIEWER"})
    assert (answer.status, answer.code) == (404, "not_found")


async def test_a_key_not_scoped_to_a_project_must_name_one(admin) -> None:
    answer = await admin.get("/api/v1/flags")
    assert (answer.status, answer.code) == (422, "project_required")


# --- authentication --------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Bearer garbage", "Bearer assay_garbage", "Basic dXNlcjpw"],
)
async def test_a_missing_or_invalid_key_is_401(world, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = await world.api().get("/api/v1/projects", headers=headers)
    assert answer.status == 401
    assert answer.code == "unauthenticated"
    assert answer.headers["www-authenticate"].startswith("Bearer")


async def test_a_revoked_key_is_401(world, admin) -> None:
    key, secret = await world.key(Role.VIEWER)
    victim = world.api(secret)
    assert (await victim.get("/api/v1/projects")).status == 200

    assert (await admin.delete(f"/api/v1/keys/{key.id}")).status == 204

    answer = await victim.get("/api/v1/projects")
    assert (answer.status, answer.code) == (401, "unauthenticated")
    # Revoking again changes nothing and still answers 204.
    assert (await admin.delete(f"/api/v1/keys/{key.id}")).status == 204


async def test_every_authenticated_route_refuses_an_anonymous_caller(world) -> None:
    for route in ROUTES:
        if route.public:
            continue
        url = _template(route.path).replace("{}", "anything")
        answer = await world.api().call(route.method, url, json={})
        assert (answer.status, answer.code) == (401, "unauthenticated"), route.path
