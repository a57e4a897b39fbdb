"""``POST /api/v1/plan`` over HTTP: the answer, and plans that cannot be met (422 + code)."""

from __future__ import annotations

import pytest

from assay.engine import Role


async def test_plan_answers_subjects_and_days(world) -> None:
    project = await world.project()
    api = await world.api_as(Role.ANALYST)
    answer = await api.post(
        f"/api/v1/plan?project={project}",
        json={"baseline_rate": 0.1, "mde": 0.05, "daily_traffic": 10000},
    )
    assert answer.status == 200, answer.body
    assert answer.body["fixed_subjects_per_variant"] == 57760
    assert answer.body["sequential_subjects_per_variant"] > 57760
    assert answer.body["fixed_days"] == pytest.approx(11.552)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"baseline_rate": 0.1, "mde": 0}, "invalid_plan"),
        ({"baseline_rate": 0.1, "mde": 0.05, "power": 1}, "invalid_plan"),
        ({"baseline_rate": 0.1, "mde": 0.05, "daily_traffic": 0}, "invalid_plan"),
        ({"baseline_mean": 5, "baseline_variance": 0, "mde": 0.05}, "zero_variance_baseline"),
        ({"baseline_rate": 0.1, "mde": 0.05, "surprise": 1}, "unknown_field"),
    ],
)
async def test_a_plan_that_cannot_be_met_is_a_422_with_a_code(world, body, code) -> None:
    project = await world.project()
    api = await world.api_as(Role.ANALYST)
    answer = await api.post(f"/api/v1/plan?project={project}", json=body)
    assert answer.status == 422, answer.body
    assert answer.body["error"]["code"] == code
