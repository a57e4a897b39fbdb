"""``GET /metrics``: Prometheus text exposition, through prometheus_client.

Latency quantiles (p50/p95/p99) come from the engine's recorders (in-process decide and
every HTTP route) as summaries over a recent window; counters come from the decision actor
and the decision cache. A collector reads them at scrape time, so the hot paths only ever
touch their own cheap recorders. The data lifecycle's gauges (rows and bytes per kind and
partition, oldest row, what the next expiry removes) are read from the store at most once
a minute (``Retention.stats``), and left out while the store is unavailable.
"""

import logging
import math
import weakref
from collections.abc import Iterator, Mapping

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from assay.adapters.http._routing import Call, Route
from assay.engine import Engine, LatencyRecorder
from assay.engine._retention import RetentionStats

log = logging.getLogger("assay.adapters.http")

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class EngineCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        decide = self._engine.latency["decide"]
        yield _summary(
            "assay_decide_latency_seconds",
            "Decide latency over the recent window (in process: timed on one decision in "
            "16; _count is the number timed, assay_decisions_total the number made).",
            {"": decide},
        )
        yield CounterMetricFamily(
            "assay_decisions", "Decisions made.", value=self._engine.decisions_made
        )
        routes = {k: v for k, v in self._engine.latency.items() if k != "decide"}
        yield _summary(
            "assay_http_request_latency_seconds",
            "HTTP request latency per route over the recent window.",
            routes,
            label="route",
        )
        stats = self._engine.decision_stats
        for name, help_text in (
            ("records_written", "Decision records written."),
            ("records_dropped", "Decision records dropped (queue full or write failed)."),
            ("cache_hits", "Decision cache hits."),
            ("cache_misses", "Decision cache misses."),
        ):
            yield CounterMetricFamily(f"assay_decision_{name}", help_text, value=stats[name])
        yield GaugeMetricFamily(
            "assay_snapshot_version",
            "Version of the configuration snapshot in force.",
            value=self._engine.snapshot.version,
        )
        retention = self._engine.retention
        yield CounterMetricFamily(
            "assay_retention_runs", "Expiry runs by this process (as leader).", value=retention.runs
        )
        if retention.last_stats is not None:
            yield from _retention_gauges(retention.last_stats)


def _retention_gauges(stats: RetentionStats) -> Iterator[Metric]:
    kinds = (
        ("rows", "Rows held per kind of data (estimated for big partitions).", "rows"),
        ("bytes", "Bytes on disk per kind of data, indexes included.", "bytes"),
        ("next_expiry_rows", "Rows the next expiry run would remove.", "next_expiry_rows"),
    )
    for name, help_text, field in kinds:
        family = GaugeMetricFamily(f"assay_data_{name}", help_text, labels=["kind"])
        for kind in stats.kinds:
            family.add_metric([kind.kind], getattr(kind, field))
        yield family
    oldest = GaugeMetricFamily(
        "assay_data_oldest_timestamp_seconds",
        "Time of the oldest row per kind (day-partitioned kinds: the start of its day).",
        labels=["kind"],
    )
    for kind in stats.kinds:
        if kind.oldest is not None:
            oldest.add_metric([kind.kind], kind.oldest.timestamp())
    yield oldest
    for name, help_text in (
        ("rows", "Rows per partition (estimated for big partitions)."),
        ("bytes", "Bytes per partition, indexes included."),
    ):
        family = GaugeMetricFamily(
            f"assay_partition_{name}", help_text, labels=["table", "partition"]
        )
        for part in stats.partitions:
            family.add_metric([part.table, part.partition], getattr(part, name))
        yield family


def _summary(
    name: str,
    help_text: str,
    recorders: Mapping[str, LatencyRecorder],
    label: str | None = None,
) -> Metric:
    family = SummaryMetricFamily(name, help_text, labels=[label] if label else None)
    for key, recorder in sorted(recorders.items()):
        if label and recorder.count == 0:
            continue  # a route nobody has called has no series, rather than NaN ones
        labels = {label: key} if label else {}
        family.add_metric(
            list(labels.values()), count_value=recorder.count, sum_value=recorder.total
        )
        # add_metric takes no quantiles; Prometheus summaries carry them as samples. An
        # empty window has none (not NaN).
        for q, value in recorder.quantiles().items():
            if not math.isnan(value):
                family.add_sample(name, {**labels, "quantile": str(q)}, value)
    return family


# One registry per engine, made on the first scrape and gone with the engine.
_REGISTRIES: "weakref.WeakKeyDictionary[Engine, CollectorRegistry]" = weakref.WeakKeyDictionary()


def _registry(engine: Engine) -> CollectorRegistry:
    registry = _REGISTRIES.get(engine)
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(EngineCollector(engine))
        _REGISTRIES[engine] = registry
    return registry


async def metrics(call: Call) -> str:
    try:
        await call.engine.retention.stats(trio.current_time())
    except Exception:
        log.warning("lifecycle statistics unavailable for /metrics", exc_info=True)
    return generate_latest(_registry(call.engine)).decode()


ROUTES = (
    Route(
        method="GET",
        path="/metrics",
        endpoint=metrics,
        operation_id="metrics",
        summary="Prometheus metrics",
        description="Decide latency (in process) and per-route HTTP latency as p50/p95/p99 "
        "summaries, decision record and cache counters, the snapshot version, and the data "
        "lifecycle: rows and bytes per kind and partition, the oldest row per kind, what the "
        "next expiry removes (docs/retention.md).",
        tag="operations",
        public=True,
        media_type=PROMETHEUS_TEXT,
    ),
)
