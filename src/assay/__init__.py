"""assay: an experimentation engine for Python services on Trio.

Embed it with ``async with assay.open_engine(config) as engine:``; extend it with plugin
packages through the ``assay.plugins`` entry point; or run ``assay serve``.
"""

from assay._bootstrap import open_engine
from assay._version import __version__
from assay.engine import (
    ApiKey,
    AssayError,
    Conflict,
    Engine,
    EngineConfig,
    Experiment,
    ExperimentStatus,
    Flag,
    FlagType,
    Layer,
    Metric,
    NotFound,
    Project,
    Role,
    ValidationFailed,
    Variant,
)

__all__ = [
    "ApiKey",
    "AssayError",
    "Conflict",
    "Engine",
    "EngineConfig",
    "Experiment",
    "ExperimentStatus",
    "Flag",
    "FlagType",
    "Layer",
    "Metric",
    "NotFound",
    "Project",
    "Role",
    "ValidationFailed",
    "Variant",
    "__version__",
    "open_engine",
]
