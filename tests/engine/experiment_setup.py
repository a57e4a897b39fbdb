"""What the tests of reports through a running engine share: the engine's configuration on
either store, and a project with its metrics and one running experiment.

``engine_config(store_dsn)``: the memory store, or PostgreSQL at ``store_dsn`` with a pool
of four connections. ``start_experiment`` creates the project, the metrics and the
experiment through the service, starts it and publishes the snapshot; the experiment has
two variants, ``control`` (value 0) and ``treatment`` (value 1), unless ``variants`` says
otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from assay.engine import (
    SYSTEM_KEY,
    Engine,
    EngineConfig,
    Experiment,
    ExperimentSpec,
    Metric,
    MetricSpec,
    ProjectSpec,
    Transition,
    Variant,
)

CONTROL_TREATMENT = [Variant(key="control", value=0), Variant(key="treatment", value=1)]


def engine_config(store_dsn: str | None) -> EngineConfig:
    if store_dsn is None:
        return EngineConfig(store="memory")
    return EngineConfig(database_url=store_dsn, pool_size=4)


async def start_experiment(
    engine: Engine,
    project: str,
    experiment: str,
    metrics: Sequence[MetricSpec],
    *,
    variants: Sequence[Variant] = CONTROL_TREATMENT,
    **fields: Any,
) -> None:
    """Project ``project`` with ``metrics``, and ``experiment`` (``fields`` are the rest of
    its ``ExperimentSpec``) running in it."""
    service = engine.service
    await service.create_project(SYSTEM_KEY, ProjectSpec(key=project))
    for spec in metrics:
        await service.create_object(SYSTEM_KEY, Metric, project, spec)
    await service.create_object(
        SYSTEM_KEY,
        Experiment,
        project,
        ExperimentSpec(key=experiment, variants=list(variants), **fields),
    )
    await service.transition_experiment(SYSTEM_KEY, project, experiment, Transition.START)
    await engine.refresh()
