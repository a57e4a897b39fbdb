"""Cursor pagination on every list endpoint."""

from __future__ import annotations

import pytest

from assay.engine import Role

LISTS = {
    "projects": "/api/v1/projects",
    "flags": "/api/v1/flags?project={project}",
    "experiments": "/api/v1/experiments?project={project}",
    "layers": "/api/v1/layers?project={project}",
    "metrics": "/api/v1/metrics?project={project}",
    "keys": "/api/v1/keys?project={project}",
    "audit": "/api/v1/audit?project={project}",
}


def with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


async def fill(world, name: str, project: str, count: int) -> None:
    for _ in range(count):
        match name:
            case "projects":
                await world.project()
            case "flags" | "audit":  # each flag created adds an audit entry
                await world.flag(project)
            case "experiments":
                await world.experiment(project)
            case "layers":
                await world.layer(project)
            case "metrics":
                await world.metric(project)
            case "keys":
                await world.key(Role.VIEWER, project)


@pytest.mark.parametrize("name", list(LISTS))
async def test_the_cursor_walks_every_item_once(world, admin, name: str) -> None:
    project = await world.project()
    await fill(world, name, project, 5)
    url = LISTS[name].format(project=project)

    everything = await admin.get(with_query(url, "limit=500"))
    assert everything.status == 200
    assert everything.body["next_cursor"] is None
    assert len(everything.body["items"]) >= 5

    walked, pages, cursor = [], 0, ""
    while True:
        page = await admin.get(with_query(url, f"limit=2&cursor={cursor}"))
        assert page.status == 200, page.body
        assert len(page.body["items"]) <= 2
        walked += page.body["items"]
        pages += 1
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
    assert pages >= 3
    assert walked == everything.body["items"]


BAD_PAGING = [
    ("cursor=!!!", "invalid_cursor"),
    ("cursor=cz/eA", "invalid_cursor"),
    ("limit=0", "invalid_limit"),
    ("limit=501", "invalid_limit"),
    ("limit=-1", "invalid_limit"),
    ("limit=ten", "invalid_parameter"),
    ("limit=1&limit=2", "invalid_parameter"),
    ("colour=red", "unknown_parameter"),
]
# A well-formed cursor from a list of the other kind: the audit log pages by entry number,
# the other lists by key.
FOREIGN_CURSOR = {"audit": "czp4"}  # the key "x"
KEY_CURSOR_FROM_AUDIT = "aTox"  # the number 1


@pytest.mark.parametrize("name", list(LISTS))
async def test_bad_paging_parameters_are_422(world, admin, name: str) -> None:
    project = await world.project()
    url = LISTS[name].format(project=project)
    foreign = FOREIGN_CURSOR.get(name, KEY_CURSOR_FROM_AUDIT)
    for query, code in [*BAD_PAGING, (f"cursor={foreign}", "invalid_cursor")]:
        answer = await admin.get(with_query(url, query))
        assert (answer.status, answer.code) == (422, code), (query, answer.body)
