"""Every experiment lifecycle transition through HTTP, allowed and forbidden.

The table is DESIGN's state machine written out by hand (DRAFT -> RUNNING <-> PAUSED ->
COMPLETED -> ARCHIVED, RUNNING -> COMPLETED, and ROLLED_BACK from RUNNING or PAUSED, which
may then be archived), so a wrong state machine in the engine fails here.
"""

from __future__ import annotations

import pytest

from assay.engine import ExperimentStatus, Transition

S, T = ExperimentStatus, Transition

# How to reach each status from DRAFT.
PATH_TO = {
    S.DRAFT: (),
    S.RUNNING: (T.START,),
    S.PAUSED: (T.START, T.PAUSE),
    S.COMPLETED: (T.START, T.COMPLETE),
    S.ROLLED_BACK: (T.START, T.ROLLBACK),
    S.ARCHIVED: (T.START, T.COMPLETE, T.ARCHIVE),
}

# (from, transition) -> the status after it; missing pairs are illegal (409).
ALLOWED = {
    (S.DRAFT, T.START): S.RUNNING,
    (S.RUNNING, T.PAUSE): S.PAUSED,
    (S.RUNNING, T.COMPLETE): S.COMPLETED,
    (S.RUNNING, T.ROLLBACK): S.ROLLED_BACK,
    (S.PAUSED, T.RESUME): S.RUNNING,
    (S.PAUSED, T.COMPLETE): S.COMPLETED,
    (S.PAUSED, T.ROLLBACK): S.ROLLED_BACK,
    (S.COMPLETED, T.ARCHIVE): S.ARCHIVED,
    (S.ROLLED_BACK, T.ARCHIVE): S.ARCHIVED,
}

CASES = [(status, transition) for status in S for transition in T]


def test_the_table_covers_every_status_and_transition() -> None:
    assert len(CASES) == 36
    assert set(PATH_TO) == set(S)


@pytest.mark.parametrize(("status", "transition"), CASES, ids=[f"{s}-{t}" for s, t in CASES])
async def test_transition(world, admin, status: S, transition: T) -> None:
    project = await world.project()
    experiment = await world.experiment(project, *PATH_TO[status])
    url = f"/api/v1/experiments/{experiment}/{transition.value}?project={project}"

    answer = await admin.post(url, json={"reason": "test"})

    after = await admin.get(f"/api/v1/experiments/{experiment}?project={project}")
    if (status, transition) in ALLOWED:
        assert answer.status == 200, answer.body
        assert answer.body["status"] == ALLOWED[status, transition]
        assert after.body["status"] == ALLOWED[status, transition]
        audit = await admin.get(
            f"/api/v1/audit?project={project}&resource_kind=experiment&resource_key={experiment}"
        )
        newest = audit.body["items"][0]
        assert newest["action"] == f"experiment.{transition.value}"
        assert newest["after"]["reason"] == "test"
    else:
        assert answer.status == 409, answer.body
        assert answer.code == "illegal_transition"
        assert answer.body["error"]["details"] == {
            "status": status.value,
            "transition": transition.value,
        }
        assert after.body["status"] == status


async def test_a_transition_accepts_an_empty_body(world, admin) -> None:
    project = await world.project()
    experiment = await world.experiment(project)
    answer = await admin.post(f"/api/v1/experiments/{experiment}/start?project={project}")
    assert answer.status == 200
    assert answer.body["status"] == "RUNNING"


async def test_a_transition_honours_if_match(world, admin) -> None:
    project = await world.project()
    experiment = await world.experiment(project)
    url = f"/api/v1/experiments/{experiment}/start?project={project}"
    stale = await admin.post(url, headers={"If-Match": "7"})
    assert (stale.status, stale.code) == (409, "revision_mismatch")
    fresh = await admin.post(url, headers={"If-Match": '"1"'})
    assert fresh.status == 200
    assert fresh.headers["etag"] == '"2"'


@pytest.mark.parametrize("status", list(S))
async def test_only_a_draft_experiment_may_be_deleted(world, admin, status: S) -> None:
    project = await world.project()
    experiment = await world.experiment(project, *PATH_TO[status])
    url = f"/api/v1/experiments/{experiment}?project={project}"

    answer = await admin.delete(url)

    if status is S.DRAFT:
        assert answer.status == 204
        assert (await admin.get(url)).status == 404
    else:
        assert answer.status == 409, answer.body
        assert answer.code == "experiment_not_deletable"
        assert (await admin.get(url)).body["status"] == status
