"""The immutable configuration snapshot that decide reads.

It is compiled once per configuration change and swapped in atomically, so a decision
never sees half of a change and never waits for the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from assay.engine._model import Experiment, Flag, Layer, Metric, Project

_EMPTY: Mapping[str, object] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    projects: Mapping[str, Project] = field(default_factory=dict)
    """Projects by id."""
    project_ids: Mapping[str, str] = field(default_factory=dict)
    """Project id by project key."""
    flags: Mapping[tuple[str, str], Flag] = field(default_factory=dict)
    """Flags by (project id, key)."""
    experiments: Mapping[tuple[str, str], Experiment] = field(default_factory=dict)
    layers: Mapping[tuple[str, str], Layer] = field(default_factory=dict)
    metrics: Mapping[tuple[str, str], Metric] = field(default_factory=dict)


EMPTY_SNAPSHOT = Snapshot(version=0)


def index_snapshot(
    version: int,
    projects: list[Project],
    flags: list[Flag],
    experiments: list[Experiment],
    layers: list[Layer],
    metrics: list[Metric],
) -> Snapshot:
    return Snapshot(
        version=version,
        projects=MappingProxyType({p.id: p for p in projects}),
        project_ids=MappingProxyType({p.key: p.id for p in projects}),
        flags=MappingProxyType({(f.project_id, f.key): f for f in flags}),
        experiments=MappingProxyType({(e.project_id, e.key): e for e in experiments}),
        layers=MappingProxyType({(x.project_id, x.key): x for x in layers}),
        metrics=MappingProxyType({(m.project_id, m.key): m for m in metrics}),
    )
