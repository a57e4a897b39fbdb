"""``GET /api/v1/experiments/{key}/report`` over HTTP: status, shape and bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from assay.engine import SYSTEM_KEY, Experiment, Metric, MetricSpec, Role, Transition


async def _experiment_with_data(world, project: str) -> str:
    service = world.engine.service
    await service.create_object(
        SYSTEM_KEY, Metric, project, MetricSpec(key="bought", kind="proportion")
    )
    experiment = await world.experiment(project)
    await service.update_object(
        SYSTEM_KEY, Experiment, project, experiment, {"primary_metrics": ["bought"]}
    )
    await service.transition_experiment(SYSTEM_KEY, project, experiment, Transition.START)
    await world.engine.refresh()
    t = datetime.now(UTC) - timedelta(hours=2)
    for i in range(40):
        variant = "control" if i % 2 else "treatment"
        await world.engine.expose(project, experiment, f"u{i}", variant, timestamp=t)
        if i % 3 == 0:
            await world.engine.track(project, experiment, "bought", f"u{i}", timestamp=t)
    return experiment


async def test_report_shape(world) -> None:
    project = await world.project()
    experiment = await _experiment_with_data(world, project)
    api = await world.api_as(Role.ANALYST)
    answer = await api.get(f"/api/v1/experiments/{experiment}/report?project={project}")
    assert answer.status == 200, answer.body
    body = answer.body
    assert body["experiment"] == experiment
    assert body["control"] == "control"
    assert body["correction"] == "holm"
    assert [v["key"] for v in body["variants"]] == ["control", "treatment"]
    assert sum(v["exposed"] for v in body["variants"]) == 40
    assert body["srm"]["flagged"] is False
    (metric,) = body["metrics"]
    assert metric["key"] == "bought"
    assert metric["kind"] == "proportion"
    assert [v["n"] for v in metric["values"]] == [20, 20]
    (comparison,) = metric["comparisons"]
    assert comparison["variant"] == "treatment"
    assert comparison["verdict"] in ("better", "worse", "no_detectable_difference")
    for scale in ("absolute", "relative"):
        lift = comparison["result"][scale]
        assert set(lift) >= {"fixed", "sequential", "bayesian"}
        assert lift["fixed"]["adjusted_p_value"] is not None
    since = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    later = await api.get(
        f"/api/v1/experiments/{experiment}/report?project={project}"
        f"&start={since.replace('+00:00', 'Z')}&correction=none"
    )
    assert later.status == 200, later.body
    assert later.body["correction"] == "none"
    assert sum(v["exposed"] for v in later.body["variants"]) == 0
    dated = await api.get(
        f"/api/v1/experiments/{experiment}/report?project={project}&start=2020-01-01&end=2099-01-01"
    )
    assert dated.status == 200, dated.body
    assert sum(v["exposed"] for v in dated.body["variants"]) == 40


async def test_report_errors(world) -> None:
    project = await world.project()
    experiment = await world.experiment(project, Transition.START)
    api = await world.api_as(Role.ANALYST)
    base = f"/api/v1/experiments/{experiment}/report?project={project}"
    missing = await api.get(f"/api/v1/experiments/nope/report?project={project}")
    assert missing.status == 404
    assert missing.code == "not_found"
    for query, code in (
        ("&start=yesterday", "invalid_parameter"),
        ("&start=2024-01-01T00:00:00", "invalid_parameter"),  # no offset
        ("&end=2024-13-01", "invalid_parameter"),
        ("&start=2024-02-01&end=2024-01-01", "invalid_period"),
        ("&correction=bonferroni", "invalid_parameter"),
        ("&window=3", "unknown_parameter"),
    ):
        answer = await api.get(base + query)
        assert answer.status == 422, (query, answer.body)
        assert answer.code == code, (query, answer.body)


async def test_unknown_metric_kind_is_refused(world) -> None:
    project = await world.project()
    api = await world.api_as(Role.DEVELOPER)
    answer = await api.post(
        f"/api/v1/metrics?project={project}", json={"key": "m", "kind": "median"}
    )
    assert answer.status == 422, answer.body
    assert answer.code == "unknown_metric_kind"
    assert "percentile" in answer.body["error"]["details"]["accepted"]
