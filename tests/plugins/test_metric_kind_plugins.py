"""A metric kind from a plugin: registered through the hook, used by reports on both stores
(its SQL on PostgreSQL, its ``aggregate`` in memory), overriding a built-in of the same
name, and accepted when a metric is saved."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import assay.engine
from assay._bootstrap import store_factory
from assay.engine import (
    SYSTEM_KEY,
    EngineConfig,
    Experiment,
    ExperimentSpec,
    Metric,
    MetricSpec,
    ProjectSpec,
    Transition,
    Variant,
)
from assay.engine._core._stats import MeanStats, MetricStats
from assay.engine._metric_kinds import MemorySource, MetricKind, Row, SqlPlan, SqlQuery, SqlSource
from assay.engine._model import MetricSpec as Spec
from assay.engine.hookspecs import hookimpl
from assay.plugins import BUILTIN_PLUGINS


class ConvertersValue:
    """Value sum per *converted* subject (non-converters left out), from ``subjects``."""

    supports_cuped = False

    def check(self, metric: Spec) -> None:
        pass

    def inputs(self, metric: Spec) -> tuple[str, ...]:
        return (metric.key,)

    def sql(self, metric: Spec, source: SqlSource) -> SqlPlan:
        q = SqlQuery()
        q.text = (
            "SELECT variant, count(*) AS n, sum(post_sum) AS s, sum(post_sum * post_sum) AS ss "
            f"FROM {source.subjects(q, metric.key)} x WHERE post_count > 0 GROUP BY variant"
        )
        rows = yield q
        return {r["variant"]: {"n": r["n"], "s": r["s"], "ss": r["ss"]} for r in rows}

    def aggregate(self, metric: Spec, source: MemorySource) -> Mapping[str, Row]:
        out: dict[str, Row] = {}
        for variant, v in source.subjects(metric.key).items():
            x = v.post_sum[v.post_count > 0]
            out[variant] = {"n": x.size, "s": x.sum(), "ss": (x * x).sum()}
        return out

    def statistics(self, metric: Spec, row: Row) -> MetricStats:
        return MeanStats(
            n=int(row.get("n", 0)), sum=row.get("s", 0.0), sum_squares=row.get("ss", 0.0)
        )


class Plugin:
    @hookimpl
    def assay_metric_kinds(self) -> Mapping[str, MetricKind]:
        return {"per_converter": ConvertersValue(), "count": ConvertersValue()}


async def test_a_plugin_kind_runs_on_both_stores(store_dsn: str | None) -> None:
    config = (
        EngineConfig(store="memory")
        if store_dsn is None
        else EngineConfig(database_url=store_dsn, pool_size=2)
    )
    async with assay.engine.open_engine(
        config,
        store_factory=lambda: store_factory(config),
        builtin_plugins=[*BUILTIN_PLUGINS, Plugin()],
        load_entry_points=False,
    ) as engine:
        assert set(engine.metric_kinds) >= {"per_converter", "proportion", "percentile"}
        assert isinstance(engine.metric_kinds["count"], ConvertersValue)  # later wins
        service = engine.service
        await service.create_project(SYSTEM_KEY, ProjectSpec(key="p"))
        await service.create_object(
            SYSTEM_KEY, Metric, "p", MetricSpec(key="m", kind="per_converter")
        )
        await service.create_object(
            SYSTEM_KEY,
            Experiment,
            "p",
            ExperimentSpec(
                key="e",
                variants=[Variant(key="a", value=0), Variant(key="b", value=1)],
                primary_metrics=["m"],
            ),
        )
        await service.transition_experiment(SYSTEM_KEY, "p", "e", Transition.START)
        await engine.refresh()
        t = datetime.now(UTC) - timedelta(hours=1)
        for i, (variant, values) in enumerate(
            [("a", [2.0]), ("a", [1.0, 3.0]), ("a", []), ("b", [5.0]), ("b", [])]
        ):
            await engine.expose("p", "e", f"s{i}", variant, timestamp=t)
            for value in values:
                await engine.track("p", "e", "m", f"s{i}", value=value, timestamp=t)
        report = await engine.report("p", "e")
        (metric,) = report.metrics
        assert metric.error is None
        assert [(v.variant, v.n, v.value) for v in metric.values] == [("a", 2, 3.0), ("b", 1, 5.0)]
