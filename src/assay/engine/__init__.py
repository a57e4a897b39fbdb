"""The Trio core of assay: domain model, messages, actors, runtime, hookspecs and ports.

This package imports neither ``assay.adapters`` nor ``assay.plugins``; the composition
root (``assay.open_engine``) hands it a store and the built-in plugins.
"""

from assay.engine._access import PERMISSIONS, Action, Resource, authorize
from assay.engine._config import EngineConfig
from assay.engine._core import Decision, Reason
from assay.engine._definitions import (
    Definitions,
    ExperimentDefinition,
    LoadReport,
    load_definitions,
    parse_definitions,
)
from assay.engine._error_codes import ERROR_CODES, REJECTION_CODES, ErrorCode
from assay.engine._errors import (
    ActorCrashed,
    AssayError,
    Conflict,
    EngineOverloaded,
    NotFound,
    PermissionDenied,
    StoreUnavailable,
    Unauthenticated,
    ValidationFailed,
)
from assay.engine._events import (
    Conversion,
    Event,
    EventsRecorded,
    Exposure,
    IngestionSummary,
    Rejection,
)
from assay.engine._growthbook_import import GrowthBookImport, convert_growthbook, import_growthbook
from assay.engine._latency import LatencyRecorder
from assay.engine._messages import Ping, Pong, RecordEvents, RefreshSnapshot, SnapshotPublished
from assay.engine._model import (
    ApiKey,
    AuditEntry,
    Experiment,
    ExperimentRule,
    ExperimentSpec,
    ExperimentStatus,
    Flag,
    FlagSpec,
    FlagType,
    ForceRule,
    Guardrail,
    Layer,
    LayerRange,
    LayerSpec,
    Metric,
    MetricSpec,
    Prerequisite,
    Project,
    ProjectSpec,
    Role,
    RolloutRule,
    Rule,
    Transition,
    Variant,
)
from assay.engine._pagination import Page
from assay.engine._ports import ConfigState, Store, StoreTransaction
from assay.engine._report_timeseries import Timeseries, report_timeseries
from assay.engine._runtime import Engine, Mailbox, StoreFactory, open_engine
from assay.engine._service import SYSTEM_KEY, ConfigService, hash_secret

__all__ = [
    "ERROR_CODES",
    "PERMISSIONS",
    "REJECTION_CODES",
    "SYSTEM_KEY",
    "Action",
    "ActorCrashed",
    "ApiKey",
    "AssayError",
    "AuditEntry",
    "ConfigService",
    "ConfigState",
    "Conflict",
    "Conversion",
    "Decision",
    "Definitions",
    "Engine",
    "EngineConfig",
    "EngineOverloaded",
    "ErrorCode",
    "Event",
    "EventsRecorded",
    "Experiment",
    "ExperimentDefinition",
    "ExperimentRule",
    "ExperimentSpec",
    "ExperimentStatus",
    "Exposure",
    "Flag",
    "FlagSpec",
    "FlagType",
    "ForceRule",
    "GrowthBookImport",
    "Guardrail",
    "IngestionSummary",
    "LatencyRecorder",
    "Layer",
    "LayerRange",
    "LayerSpec",
    "LoadReport",
    "Mailbox",
    "Metric",
    "MetricSpec",
    "NotFound",
    "Page",
    "PermissionDenied",
    "Ping",
    "Pong",
    "Prerequisite",
    "Project",
    "ProjectSpec",
    "Reason",
    "RecordEvents",
    "RefreshSnapshot",
    "Rejection",
    "Resource",
    "Role",
    "RolloutRule",
    "Rule",
    "SnapshotPublished",
    "Store",
    "StoreFactory",
    "StoreTransaction",
    "StoreUnavailable",
    "Timeseries",
    "Transition",
    "Unauthenticated",
    "ValidationFailed",
    "Variant",
    "authorize",
    "convert_growthbook",
    "hash_secret",
    "import_growthbook",
    "load_definitions",
    "open_engine",
    "parse_definitions",
    "report_timeseries",
]
