"""Engine configuration: defaults, then a TOML file, then ``ASSAY_*`` variables, then
explicit overrides (the CLI's flags), each layer replacing the one before."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from assay.engine._errors import ValidationFailed

ENV_PREFIX = "ASSAY_"

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]


class EngineConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every setting assay reads. The README's configuration table mirrors this."""

    store: Literal["postgres", "memory"] = "postgres"
    """``postgres`` (external via ``database_url``, else embedded) or ``memory``."""
    database_url: str | None = None
    """An external PostgreSQL; when unset, an embedded server runs in ``data_dir``."""
    data_dir: str | None = None
    """Where the embedded PostgreSQL keeps its data (default: the user data directory)."""
    project: str | None = None
    """The project in-process ``engine.decide`` uses when none is named."""
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8000
    workers: PositiveInt = 1
    max_body_bytes: PositiveInt = 16 * 1024 * 1024
    """Larger request bodies are refused with 413 before they are parsed."""
    inbox_size: PositiveInt = 1024
    """Capacity of each actor's inbox; a full inbox makes senders wait (backpressure)."""
    pool_size: PositiveInt = 10
    ingestion_write_lanes: PositiveInt = 2
    """Ingestion transactions in flight at once, each holding a pooled connection while it
    writes (so keep it below ``pool_size``): while one commits, PostgreSQL works on
    another. Events are split over them by subject; 1 writes one transaction at a time."""
    restart_backoff_seconds: PositiveFloat = 0.1
    restart_backoff_max_seconds: PositiveFloat = 10.0
    decision_cache_size: Annotated[int, msgspec.Meta(ge=0)] = 100_000
    decision_cache_ttl_seconds: PositiveFloat = 60.0
    sticky_bucket_cache_size: Annotated[int, msgspec.Meta(ge=0)] = 100_000
    """Sticky-bucket documents (one per subject and hash attribute) kept in process for the
    synchronous ``decide``; the least recently used go first (docs/design.md)."""
    decision_records: Literal["sync", "async", "disabled"] = "async"
    decision_records_write_interval_seconds: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.01
    """Shortest time between the starts of two writes of decision records. Every write costs
    a round trip and a commit whatever its size (~200 us of this process's CPU); under load
    records gather for up to this long, so batches are fewer and larger. Measured on
    /decide with PostgreSQL (3,000 requests/s, 2 cores): server CPU per request ~390 us at
    0, ~335 at 0.005, ~320 at 0.01; p99 latency 12 -> 13.6 ms. The price is up to this much
    latency on durable records (``experiment_assigned``, and everything in ``sync`` mode)
    when the previous write started less than this long ago; after a quiet spell nothing
    waits. 0 writes as soon as the last write finished."""
    guardrail_interval_seconds: PositiveFloat = 60.0
    """How often the leading guardrail actor checks every running experiment."""
    guardrail_srm_p_value: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.001
    """Health check: a sample ratio mismatch is flagged below this chi-square p-value."""
    guardrail_no_traffic_minutes: PositiveFloat = 60.0
    """Health check: flagged when no new subject was exposed for this long."""
    guardrail_crossover_limit: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.01
    """Health check: flagged when more than this share of subjects saw two variants."""
    guardrail_health_min_units: PositiveInt = 100
    """Exposed subjects before the SRM and crossover checks judge anything."""
    guardrail_outbox_poll_seconds: PositiveFloat = 5.0
    """How often the leader looks for due notifications (retries, other processes')."""
    guardrail_retry_base_seconds: PositiveFloat = 5.0
    """First delay before a failed notification is retried; doubled on each failure."""
    guardrail_retry_max_seconds: PositiveFloat = 3600.0
    """Longest delay between retries; notifications are retried until delivered."""
    guardrail_outbox_retention_days: PositiveFloat = 30.0
    """Delivered notifications are deleted this long after delivery (by the leader, hourly);
    undelivered ones are kept until they are delivered."""
    guardrail_delivery_timeout_seconds: PositiveFloat = 30.0
    """How long one delivery attempt may take before it counts as failed."""
    event_future_skew_seconds: PositiveFloat = 300.0
    """Events timestamped further in the future are rejected (``timestamp_in_future``)."""
    event_max_age_days: PositiveFloat = 30.0
    """Events timestamped longer ago are rejected (``timestamp_too_old``)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        *,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> EngineConfig:
        """Read the layers in order. Unknown keys and bad values raise ValidationFailed
        naming the setting, so a typo in a config file is an error, not a silent default."""
        values: dict[str, Any] = {}
        if path is not None:
            try:
                with Path(path).open("rb") as f:
                    values.update(tomllib.load(f))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ValidationFailed(
                    f"cannot read config file {path}: {exc}", code="invalid_config"
                ) from exc
        environ = os.environ if env is None else env
        for field in cls.__struct_fields__:
            raw = environ.get(ENV_PREFIX + field.upper())
            if raw is not None and raw != "":
                values[field] = raw
        if overrides:
            values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            # strict=False lets "8080" from the environment become an int.
            return msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ValidationFailed(f"invalid configuration: {exc}", code="invalid_config") from exc
