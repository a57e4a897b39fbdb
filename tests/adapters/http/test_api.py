"""Round trips through the API, and the shape of its answers."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from assay.adapters.http import create_app
from assay.engine import EngineOverloaded, Role


async def test_project_round_trip(admin, world) -> None:
    key = world.unique("shop")
    created = await admin.post("/api/v1/projects", json={"key": key, "name": "Shop"})
    assert created.status == 201
    assert created.body["key"] == key
    assert created.body["revision"] == 1
    assert created.headers["etag"] == '"1"'

    fetched = await admin.get(f"/api/v1/projects/{key}")
    assert fetched.body == created.body

    renamed = await admin.patch(
        f"/api/v1/projects/{key}", json={"name": "The shop"}, headers={"If-Match": '"1"'}
    )
    assert renamed.status == 200
    assert (renamed.body["name"], renamed.body["revision"]) == ("The shop", 2)

    rekeyed = await admin.patch(f"/api/v1/projects/{key}", json={"key": "other"})
    assert (rekeyed.status, rekeyed.code) == (422, "immutable_field")

    archived = await admin.post(f"/api/v1/projects/{key}/archive")
    assert archived.body["archived"] is True
    restored = await admin.post(f"/api/v1/projects/{key}/restore", json={})
    assert restored.body["archived"] is False

    listed = await admin.get("/api/v1/projects?limit=500")
    assert key in [p["key"] for p in listed.body["items"]]


async def test_flag_rules_keep_their_order_and_patch_replaces_them(admin, world) -> None:
    project = await world.project()
    rules = [
        {"type": "force", "id": "staff", "condition": {"staff": True}, "value": True},
        {"type": "rollout", "id": "half", "coverage": 0.5, "value": True},
    ]
    url = f"/api/v1/flags?project={project}"
    created = await admin.post(url, json={"key": "checkout", "rules": rules})
    assert created.status == 201, created.body
    assert [r["id"] for r in created.body["rules"]] == ["staff", "half"]
    assert created.body["rules"][1]["hash_attribute"] == "id"  # defaults are filled in

    one = f"/api/v1/flags/checkout?project={project}"
    patched = await admin.patch(one, json={"rules": list(reversed(rules)), "enabled": False})
    assert patched.status == 200
    assert [r["id"] for r in patched.body["rules"]] == ["half", "staff"]
    assert patched.body["enabled"] is False
    assert patched.body["revision"] == 2

    assert (await admin.get(one)).body == patched.body
    assert (await admin.delete(one)).status == 204
    gone = await admin.get(one)
    assert (gone.status, gone.code) == (404, "not_found")


@pytest.mark.parametrize(
    ("kind", "body", "patch"),
    [
        ("experiments", {"variants": [{"key": "a", "value": 1}]}, {"coverage": 0.25}),
        ("layers", {"name": "checkout"}, {"description": "one at a time"}),
        ("metrics", {"kind": "count"}, {"higher_is_better": False}),
        ("segments", {"values": ["u1", 2]}, {"values": ["u3"], "attribute": "email"}),
    ],
)
async def test_crud_round_trip(admin, world, kind: str, body: dict, patch: dict) -> None:
    project = await world.project()
    key = world.unique(kind)
    created = await admin.post(f"/api/v1/{kind}?project={project}", json={"key": key, **body})
    assert created.status == 201, created.body
    one = f"/api/v1/{kind}/{key}?project={project}"
    patched = await admin.patch(one, json=patch)
    assert patched.status == 200
    assert all(patched.body[field] == value for field, value in patch.items())
    listed = await admin.get(f"/api/v1/{kind}?project={project}")
    assert [item["key"] for item in listed.body["items"]] == [key]
    assert (await admin.delete(one)).status == 204
    assert (await admin.get(f"/api/v1/{kind}?project={project}")).body["items"] == []


async def test_segment_references_are_checked_when_saved(admin, world) -> None:
    project = await world.project()
    flags = f"/api/v1/flags?project={project}"
    rule = {"type": "force", "condition": {"id": {"$inGroup": "beta"}}, "value": True}
    before = await world.stored_state()
    missing = await admin.post(flags, json={"key": "f", "rules": [rule]})
    assert (missing.status, missing.code) == (422, "segment_not_found")
    assert missing.body["error"]["details"]["field"] == "rules[0].condition"
    assert await world.stored_state() == before

    segments = f"/api/v1/segments?project={project}"
    assert (await admin.post(segments, json={"key": "beta", "values": ["u1"]})).status == 201
    assert (await admin.post(flags, json={"key": "f", "rules": [rule]})).status == 201
    in_use = await admin.delete(f"/api/v1/segments/beta?project={project}")
    assert (in_use.status, in_use.code) == (409, "in_use")
    assert in_use.body["error"]["details"] == {"used_by": ["flag f"]}
    bad = await admin.post(segments, json={"key": "c", "type": "condition"})
    assert (bad.status, bad.code) == (422, "invalid_segment")

    decided = await admin.post(
        f"/api/v1/decide?project={project}", json={"flag": "f", "subject": "u1"}
    )
    assert decided.body["reason"] == "forced", decided.body


async def test_a_key_secret_is_shown_once_and_its_hash_never(admin, world) -> None:
    project = await world.project()
    created = await admin.post(
        "/api/v1/keys", json={"role": "DEVELOPER", "project": project, "name": "ci"}
    )
    assert created.status == 201
    secret = created.body["secret"]
    assert secret.startswith(created.body["prefix"])
    assert created.body["active"] is True
    assert "secret_hash" not in created.body

    developer = world.api(secret)
    assert (await developer.get("/api/v1/flags")).status == 200  # scoped: no ?project=

    listed = await admin.get(f"/api/v1/keys?project={project}")
    assert [k["id"] for k in listed.body["items"]] == [created.body["id"]]
    audit = await admin.get(f"/api/v1/audit?project={project}&resource_kind=key")
    for answer in (listed, audit):
        text = str(answer.body)
        assert "secret_hash" not in text
        assert secret not in text


async def test_an_sdk_key_must_be_scoped(admin, world) -> None:
    before = await world.stored_state()
    answer = await admin.post("/api/v1/keys", json={"role": "SDK"})
    assert (answer.status, answer.code) == (422, "project_required")
    assert await world.stored_state() == before


async def test_the_audit_log_filters_by_resource(admin, world) -> None:
    project = await world.project()
    flag = await world.flag(project)
    other = await world.flag(project)
    await admin.patch(f"/api/v1/flags/{flag}?project={project}", json={"enabled": False})

    entries = (
        await admin.get(f"/api/v1/audit?project={project}&resource_kind=flag&resource_key={flag}")
    ).body["items"]
    assert [e["action"] for e in entries] == ["flag.update", "flag.create"]
    assert entries[0]["before"]["enabled"] is True
    assert entries[0]["after"]["enabled"] is False
    assert all(e["resource_key"] == flag for e in entries)

    kinds = (await admin.get(f"/api/v1/audit?project={project}&resource_kind=flag")).body
    assert {e["resource_key"] for e in kinds["items"]} == {flag, other}
    bad_kind = await admin.get(f"/api/v1/audit?project={project}&resource_kind=flags")
    assert (bad_kind.status, bad_kind.code) == (422, "invalid_parameter")


@pytest.mark.parametrize("key", [None, "valid"])
async def test_an_unknown_route_is_404(world, key: str | None) -> None:
    api = await world.api_as(Role.ADMIN) if key else world.api()
    answer = await api.get("/api/v1/nothing-here")
    assert (answer.status, answer.code) == (404, "route_not_found")
    assert set(answer.body["error"]) == {"code", "message", "details"}


async def test_a_wrong_method_is_405(admin) -> None:
    answer = await admin.call("PUT", "/api/v1/flags")
    assert (answer.status, answer.code) == (405, "method_not_allowed")
    assert set(answer.headers["allow"].split(", ")) >= {"GET", "POST"}


class FailingService:
    """A service whose every call fails the given way."""

    def __init__(self, service: Any, error: BaseException) -> None:
        self._service = service
        self._error = error

    async def authenticate(self, secret: str) -> Any:
        return await self._service.authenticate(secret)

    async def list_projects(self, *args: Any, **kwargs: Any) -> Any:
        raise self._error


class EngineWithService:
    def __init__(self, engine: Any, service: Any) -> None:
        self._engine = engine
        self.service = service

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


async def test_an_unexpected_error_is_a_logged_500_that_reveals_nothing(
    engine, world, caplog
) -> None:
    _, secret = await world.key(Role.ADMIN)
    failing = FailingService(engine.service, RuntimeError("secret internals"))
    app = create_app(EngineWithService(engine, failing))  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="assay.http"):
        response = await app.test_client().get(
            "/api/v1/projects", headers={"Authorization": f"Bearer {secret}"}
        )
    assert response.status_code == 500
    body = await response.get_json()
    assert body["error"]["code"] == "internal_error"
    assert "secret internals" not in str(body)
    [record] = [r for r in caplog.records if r.name == "assay.http"]
    assert record.exc_info is not None
    assert "secret internals" in str(record.exc_info[1])


async def test_an_overloaded_engine_is_503(engine, world) -> None:
    _, secret = await world.key(Role.ADMIN)
    failing = FailingService(engine.service, EngineOverloaded("inbox full"))
    app = create_app(EngineWithService(engine, failing))  # type: ignore[arg-type]
    response = await app.test_client().get(
        "/api/v1/projects", headers={"Authorization": f"Bearer {secret}"}
    )
    assert response.status_code == 503
    assert (await response.get_json())["error"]["code"] == "overloaded"
