"""Decision records past retention over HTTP: 404 ``decision_expired``, distinct from an
id that never was (``not_found``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from assay.engine import Role, Transition
from assay.engine._retention import day_number, day_start, event_partition_start


@pytest.fixture
def module_dsn(pg_dsn: str) -> str:
    """A database of this test's own: expiry here drops every current day."""
    return pg_dsn


async def test_an_expired_decision_answers_decision_expired(world: Any) -> None:
    project = await world.project()
    experiment = await world.experiment(project, Transition.START)
    flag = world.unique("flag")
    await world.admin_create_flag(project, flag, experiment)
    await world.engine.refresh()
    sdk = await world.api_as(Role.SDK, project)
    answer = await sdk.post("/api/v1/decide", json={"flag": flag, "subject": "u1"})
    assert answer.body["reason"] == "experiment_assigned"  # durable before answered
    analyst = await world.api_as(Role.ANALYST, project)
    path = f"/api/v1/decisions/{answer.body['decision_id']}"
    assert (await analyst.get(path)).status == 200

    engine = world.engine
    later = datetime.now(UTC) + timedelta(days=engine.config.decision_record_retention_days + 2)
    expired = await engine.store.expire(later, engine.retention.policy)
    assert expired.decision_records >= 1

    gone = await analyst.get(path)
    assert (gone.status, gone.code) == (404, "decision_expired")
    never = await analyst.get("/api/v1/decisions/0123456789abcdef00000001")
    assert (never.status, never.code) == (404, "not_found")


async def test_metrics_show_rows_per_kind_and_partition(world: Any, anonymous: Any) -> None:
    project = await world.project()
    await world.engine.retention.run()  # the days ahead exist
    # An exposure with an id: its id is kept in its day's partition.
    sdk = await world.api_as(Role.SDK, project)
    experiment = await world.experiment(project, Transition.START)
    await world.engine.refresh()
    sent = await sdk.post(
        f"/api/v1/experiments/{experiment}/exposures?project={project}",
        json={"events": [{"subject": "u1", "variant": "control", "event_id": "e1"}]},
    )
    assert sent.status == 200, sent.body
    assert sent.body["recorded"] == 1
    text = (await anonymous.get("/metrics")).body
    week = day_start(event_partition_start(day_number(datetime.now(UTC))))
    today = f"assay_event_ids_p{week:%Y%m%d}"
    lines = text.splitlines()
    assert f'assay_partition_rows{{partition="{today}",table="assay_event_ids"}} 1.0' in lines
    assert 'assay_data_rows{kind="event_ids"} 1.0' in lines
    assert any(line.startswith('assay_data_bytes{kind="decision_records"}') for line in lines)
    assert any(
        line.startswith('assay_data_next_expiry_rows{kind="audit_entries"}') for line in lines
    )
