"""Engine configuration: defaults, then a TOML file, then ``ASSAY_*`` variables, then
explicit overrides (the CLI's flags), each layer replacing the one before. A bad value is
reported with where it came from: the file and key, the variable, or the flag."""

from __future__ import annotations

import math
import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import msgspec.inspect

from assay.engine._errors import ValidationFailed

ENV_PREFIX = "ASSAY_"

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]


DEFAULT_RAW_EVENT_RETENTION_DAYS = 90
"""Days after an experiment ends before its raw events are compacted, unless set."""


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
    stream_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] | None = None
    """A second port on ``host`` serving only GrowthBook's ``GET /sub/{clientKey}`` streams
    from a lean listener (SDKs take it as ``streamingHost``); the main port serves the
    same streams through hypercorn. One worker only (docs/sdk-streaming.md)."""
    stream_heartbeat_seconds: PositiveFloat = 20.0
    """Between heartbeats (an SSE comment) on every open stream."""
    stream_stall_seconds: PositiveFloat = 30.0
    """A stream whose pending write makes no progress for this long is disconnected."""
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
    """Health check: the false-alarm level of the anytime-valid SRM test over the whole run
    (a mismatch is flagged when its sequential p-value falls below it)."""
    guardrail_no_traffic_minutes: PositiveFloat = 60.0
    """Health check: flagged when no new subject was exposed for this long."""
    guardrail_crossover_limit: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.01
    """Health check: flagged when more than this share of subjects saw two variants."""
    guardrail_health_min_units: PositiveInt = 100
    """Assigned subjects before the SRM and crossover checks judge anything."""
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
    decision_record_retention_days: PositiveInt = 30
    """Decision records are kept at least this many days after their decision, then
    expire a UTC day at a time (``GET /decisions/{id}`` answers 404 ``decision_expired``).
    See docs/retention.md."""
    event_id_retention_days: PositiveInt | None = None
    """Event ids are kept for de-duplication at least this many days after their event's
    timestamp. Unset: ``event_max_age_days`` plus ``event_future_skew_seconds``, rounded up
    to whole days. Shorter is refused: an id must outlive every event ingestion accepts."""
    audit_retention_days: PositiveInt | None = None
    """Audit-log entries older than this are deleted; unset (the default) keeps them
    forever."""
    raw_event_retention_days: PositiveInt | None = None
    """The raw exposures, conversions and crossovers of an experiment are compacted away
    this many days after it ended (completed or archived), its report then served from
    its rollups alone; events for it are refused from then on (``experiment_compacted``).
    Unset: 90, or ``event_max_age_days`` plus ``event_future_skew_seconds`` in whole days
    if that is longer. Shorter than that is refused: a late event of the experiment that
    ingestion would accept must still find its rows. See docs/retention.md."""
    retention_interval_seconds: PositiveFloat = 3600.0
    """How often the leader creates partitions ahead and drops (or deletes) what expired."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = None
    """What reaches the console. Unset: INFO for ``assay serve``, WARNING for the other
    commands (they print their answer and nothing else). DEBUG also shows the embedded
    PostgreSQL's own output and a traceback with every startup failure."""

    def __post_init__(self) -> None:
        # msgspec turns a ValueError here into a ValidationError naming no field, so the
        # message names the settings itself.
        kept = self.event_id_retention_days
        if kept is not None and kept * 86400.0 < (
            self.event_max_age_days * 86400.0 + self.event_future_skew_seconds
        ):
            raise ValueError(
                f"event_id_retention_days ({kept}) must be at least event_max_age_days "
                f"({self.event_max_age_days:g}) plus event_future_skew_seconds "
                f"({self.event_future_skew_seconds:g} s): an event id must be kept as long "
                "as an event with it may be accepted, or de-duplication would fail"
            )
        raw = self.raw_event_retention_days
        accepted = self.event_max_age_days * 86400.0 + self.event_future_skew_seconds
        if raw is not None and raw * 86400.0 < accepted:
            raise ValueError(
                f"raw_event_retention_days ({raw}) must be at least event_max_age_days "
                f"({self.event_max_age_days:g}) plus event_future_skew_seconds "
                f"({self.event_future_skew_seconds:g} s): an experiment's raw events must be "
                "kept as long as a late event of it may be accepted"
            )

    @property
    def event_id_retention(self) -> int:
        """``event_id_retention_days`` in force (whole days), the default computed."""
        if self.event_id_retention_days is not None:
            return self.event_id_retention_days
        return math.ceil(self.event_max_age_days + self.event_future_skew_seconds / 86400.0)

    @property
    def raw_event_retention(self) -> int:
        """``raw_event_retention_days`` in force (whole days), the default computed."""
        if self.raw_event_retention_days is not None:
            return self.raw_event_retention_days
        least = math.ceil(self.event_max_age_days + self.event_future_skew_seconds / 86400.0)
        return max(DEFAULT_RAW_EVENT_RETENTION_DAYS, least)

    certfile: str | None = None
    """TLS certificate (PEM) for ``assay serve``; with ``keyfile``, the server speaks HTTPS."""
    keyfile: str | None = None
    """TLS private key (PEM) matching ``certfile``."""
    trusted_proxies: str = ""
    """Comma-separated addresses or networks (``10.0.0.0/8``) of reverse proxies whose
    ``X-Forwarded-For`` / ``X-Forwarded-Proto`` are believed; from anyone else they are
    ignored."""
    console_session_minutes: PositiveInt = 480
    """A console session ends this long after sign-in (sooner when its key is revoked)."""

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        *,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> EngineConfig:
        """Read the layers in order. Unknown keys and bad values raise ValidationFailed
        naming the setting where it was given (``ASSAY_PORT: expected an integer from 0 to
        65535, got 'abc'``), so a typo is an error, not a silent default."""
        given: list[tuple[str, Any, str]] = []  # (setting, value, where it was given)
        if path is not None:
            try:
                with Path(path).open("rb") as f:
                    from_file = tomllib.load(f)
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ValidationFailed(
                    f"cannot read config file {path}: {exc}", code="invalid_config"
                ) from exc
            given += [(k, v, f"config file {path}: {k}") for k, v in from_file.items()]
        environ = os.environ if env is None else env
        for field in cls.__struct_fields__:
            raw = environ.get(ENV_PREFIX + field.upper())
            if raw is not None and raw != "":
                given.append((field, raw, ENV_PREFIX + field.upper()))
        given += [
            (k, v, "--" + k.replace("_", "-"))
            for k, v in (overrides or {}).items()
            if v is not None
        ]
        info = msgspec.inspect.type_info(cls)
        assert isinstance(info, msgspec.inspect.StructType)
        types = {f.name: f.type for f in info.fields}
        hints = typing.get_type_hints(cls, include_extras=True)
        values: dict[str, Any] = {}
        # Every layer's values are checked, also those a later layer replaces: a mistake in
        # a file is reported even on the day a flag happens to override it.
        for key, value, source in given:
            if key not in types:
                raise ValidationFailed(f"{source}: no such setting", code="invalid_config")
            try:
                # strict=False lets "8080" from the environment become an int. The field's
                # own type only: rules between settings are checked once all are in.
                msgspec.convert(value, hints[key], strict=False)
            except msgspec.ValidationError as exc:
                raise ValidationFailed(
                    f"{source}: expected {_describe(types[key], value)}, got {value!r}",
                    code="invalid_config",
                ) from exc
            values[key] = value
        try:
            return msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as exc:  # a rule between settings (__post_init__)
            raise ValidationFailed(f"invalid configuration: {exc}", code="invalid_config") from exc


def _describe(kind: msgspec.inspect.Type, value: Any) -> str:
    """What a setting takes, in words, for the error about ``value``: the bounds only when
    ``value`` is of the right type but out of them."""
    match kind:
        case msgspec.inspect.UnionType(types=types):
            return " or ".join(
                _describe(t, value) for t in types if not isinstance(t, msgspec.inspect.NoneType)
            )
        case msgspec.inspect.LiteralType(values=values):
            return "one of " + ", ".join(str(v) for v in values)
        case msgspec.inspect.IntType() | msgspec.inspect.FloatType():
            number = int if isinstance(kind, msgspec.inspect.IntType) else float
            noun = "an integer" if number is int else "a number"
            try:
                msgspec.convert(value, number, strict=False)
            except msgspec.ValidationError:
                return noun
            # :g, as msgspec may report a bound as 0 or as 0.0.
            low = (f">= {kind.ge:g}" if kind.ge is not None else None) or (
                f"> {kind.gt:g}" if kind.gt is not None else None
            )
            high = (f"<= {kind.le:g}" if kind.le is not None else None) or (
                f"< {kind.lt:g}" if kind.lt is not None else None
            )
            if kind.ge is not None and kind.le is not None:
                return f"{noun} from {kind.ge:g} to {kind.le:g}"
            return " and ".join([f"{noun} {low}" if low else noun, *([high] if high else [])])
        case msgspec.inspect.StrType():
            return "a string"
        case _:
            return str(kind)
