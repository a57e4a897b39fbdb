"""Events: exposures and conversions, how a batch is checked, and what it answers.

Event fields are typed loosely on purpose (plain ``str`` rather than ``Key``): a batch that
decodes is checked here event by event, so one bad event is rejected with its own code and
index while the rest of the batch is recorded. Python callers build these Structs without
msgspec's checks, so the same checks must run here anyway.

The storage side speaks ``StagedEvent`` (a checked event, with ids resolved) and answers an
``Outcome`` per event; the ingestion actor turns those into ``EventsRecorded`` per caller.
"""

from __future__ import annotations

import enum
import math
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Final, NamedTuple

import msgspec

from assay.engine._core._durations import describe_duration
from assay.engine._error_codes import REJECTION_CODES as REJECTION_MEANINGS
from assay.engine._error_codes import check_rejection_code
from assay.engine._model import Experiment, ExperimentStatus, Metric

MAX_BATCH_EVENTS: Final = 10_000
"""The most events one batch may carry; more is refused whole (``batch_too_large``)."""
MAX_SUBJECT_LENGTH: Final = 512
"""As long as a decision's subject may be, so exposures logged on assignment fit."""
MAX_EVENT_ID_LENGTH: Final = 128
MAX_IDEMPOTENCY_KEY_LENGTH: Final = 128

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_UNRESOLVED: Final = object()
"""A metric key the checker has not resolved yet."""
_FLOAT_MAX: Final = sys.float_info.max

# Experiments in these states take no events: a draft has no subjects yet, and an archived
# experiment is closed for good. Paused, completed and rolled-back experiments still take
# them, because SDKs deliver buffered events late.
_CLOSED: Final = {
    ExperimentStatus.DRAFT: ("experiment_not_started", "has not started"),
    ExperimentStatus.ARCHIVED: ("experiment_archived", "is archived"),
}

REJECTION_CODES: Final = tuple(REJECTION_MEANINGS)
"""Every code a rejected event may carry (the registry's, in ``_error_codes``)."""


def _doc(text: str) -> Any:
    return msgspec.Meta(description=text)


Timestamp = Annotated[
    datetime | None,
    _doc(
        "When it happened (RFC 3339 with an offset); defaults to when the batch arrived. "
        "Too far in the future or too old is rejected."
    ),
]
EventId = Annotated[
    str | None,
    _doc(
        f"Client-chosen id (1-{MAX_EVENT_ID_LENGTH} chars); an id seen before in the "
        "project makes the event a duplicate, so retries are safe."
    ),
]
Subject = Annotated[str, _doc(f"The subject (user, device...) id, 1-{MAX_SUBJECT_LENGTH} chars.")]


class Exposure(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="exposure",
    tag_field="type",
    # Events hold only scalars, so they can never be part of a reference cycle: leaving
    # them out of the garbage collector saves real time on batches of thousands.
    gc=False,
):
    """A subject saw a variant of an experiment. The first exposure per (experiment,
    subject) wins; another variant later makes the subject a crossover."""

    experiment: Annotated[str, _doc("Experiment key.")]
    subject: Subject
    variant: Annotated[str, _doc("Variant key.")]
    timestamp: Timestamp = None
    event_id: EventId = None


class Conversion(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="conversion",
    tag_field="type",
    gc=False,
):
    """A subject did what a metric counts. For a metric that requires exposure, a
    conversion arriving before its subject's exposure waits (pending) until it lands."""

    experiment: Annotated[str, _doc("Experiment key.")]
    metric: Annotated[str, _doc("Metric key.")]
    subject: Subject
    value: Annotated[float, _doc("A finite number; 1 by default.")] = 1.0
    timestamp: Timestamp = None
    idempotency_key: Annotated[
        str | None,
        _doc(
            f"1-{MAX_IDEMPOTENCY_KEY_LENGTH} chars, unique per experiment: a second "
            "conversion with the same key is a duplicate."
        ),
    ] = None
    event_id: EventId = None


Event = Exposure | Conversion


class Rejection(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    """Position of the event in the batch, from 0."""
    code: str
    """One of ``REJECTION_CODES``."""
    message: str

    def __post_init__(self) -> None:
        check_rejection_code(self.code)


class EventsRecorded(msgspec.Struct, frozen=True, kw_only=True):
    """What became of a batch. ``received`` = ``recorded`` + ``deduplicated`` +
    ``pending`` + the number rejected. Answered only once the batch is committed."""

    received: int
    recorded: int
    """Stored now: new exposures (crossovers included) and attributed conversions."""
    deduplicated: int
    """Seen before: a known ``event_id`` or idempotency key, or an exposure already
    recorded for that subject and variant."""
    pending: int
    """Conversions waiting for their subject's exposure."""
    rejected: list[Rejection] = []


# --- the ingestion summary --------------------------------------------------------------


class VariantCounts(msgspec.Struct, frozen=True, kw_only=True):
    """One variant's subjects, in the three counts docs/reports.md defines."""

    variant: str
    exposures: int
    """Analysed subjects (kept under this older name; equal to ``analysed``)."""
    crossovers: int
    """Assigned subjects of this variant later exposed to another one."""
    assigned: int = 0
    """Subjects first exposed to this variant, crossovers included (filled by ``summarize``)."""
    analysed: int = 0
    """``assigned - crossovers`` (filled by ``summarize``)."""


class MetricVariantCounts(msgspec.Struct, frozen=True, kw_only=True):
    variant: str
    conversions: int
    subjects: int
    """Distinct subjects among those conversions."""
    value_sum: float


class MetricCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Conversions of one metric. Only ``attributed`` ones (within the attribution window
    after the subject's first exposure, crossovers excluded) count per variant; the other
    three explain every stored conversion that does not."""

    metric: str
    conversions: int
    """Attributed conversions, all variants."""
    value_sum: float
    variants: list[MetricVariantCounts] = []
    outside_window: int = 0
    """Before the first exposure, or after the window (or after the experiment ended)."""
    crossover: int = 0
    """Of crossover subjects: excluded from analysis."""
    unexposed: int = 0
    """Of subjects never exposed (only for metrics that do not require exposure)."""


class IngestionCounts(msgspec.Struct, frozen=True, kw_only=True):
    """What the store counts for one experiment."""

    crossovers: int
    """Distinct crossover subjects."""
    pending: int
    """Conversions still waiting for an exposure (not expired)."""
    variants: list[VariantCounts] = []
    metrics: list[MetricCounts] = []


class IngestionSummary(msgspec.Struct, frozen=True, kw_only=True):
    experiment: str
    exposures: int
    """Analysed subjects (kept under this older name; equal to ``analysed``)."""
    crossovers: int
    """Assigned subjects exposed to more than one variant."""
    pending: int
    variants: list[VariantCounts]
    metrics: list[MetricCounts]
    assigned: int = 0
    """Subjects exposed at least once, crossovers included."""
    analysed: int = 0
    """``assigned - crossovers``: the subjects reports analyse."""


def _counted(v: VariantCounts) -> VariantCounts:
    return msgspec.structs.replace(v, assigned=v.exposures + v.crossovers, analysed=v.exposures)


def summarize(
    experiment: Experiment, counts: IngestionCounts, metric_keys: Sequence[str]
) -> IngestionSummary:
    """The summary of ``counts``, listing every declared variant and each of
    ``metric_keys`` (with zeros where nothing arrived) before anything else seen."""
    seen_variants = {v.variant: v for v in counts.variants}
    variants = [
        _counted(seen_variants.pop(v.key, VariantCounts(variant=v.key, exposures=0, crossovers=0)))
        for v in experiment.variants
    ] + sorted((_counted(v) for v in seen_variants.values()), key=lambda v: v.variant)
    seen_metrics = {m.metric: m for m in counts.metrics}
    metrics = [
        seen_metrics.pop(key, MetricCounts(metric=key, conversions=0, value_sum=0.0))
        for key in dict.fromkeys(metric_keys)
    ] + sorted(seen_metrics.values(), key=lambda m: m.metric)
    return IngestionSummary(
        experiment=experiment.key,
        exposures=sum(v.exposures for v in variants),
        crossovers=counts.crossovers,
        pending=counts.pending,
        variants=variants,
        assigned=sum(v.assigned for v in variants),
        analysed=sum(v.analysed for v in variants),
        metrics=metrics,
    )


# --- what the store receives and answers ------------------------------------------------


class Kind(enum.IntEnum):
    EXPOSURE = 0
    CONVERSION = 1


class Outcome(enum.IntEnum):
    RECORDED = 0
    DUPLICATE = 1
    PENDING = 2
    CROSSOVER = 3
    """Recorded, as a crossover (the subject was first exposed to another variant)."""


class StagedEvent(NamedTuple):
    """A checked event, ready for the store. A tuple: the PostgreSQL adapter copies these
    straight into a staging table."""

    kind: int
    """A ``Kind``."""
    project_id: str
    experiment_id: str
    subject: str
    variant: str | None
    """Exposures only."""
    metric: str | None
    """Conversions only."""
    value: float
    timestamp: float
    """When it happened, in epoch seconds (exact to the microsecond: a float64 holds every
    microsecond of this era). A float rather than a datetime because the PostgreSQL
    adapter COPYs these tuples as they are, and encoding a double costs a third of
    encoding a timestamptz, the largest share of staging an event."""
    event_id: str | None
    idempotency_key: str | None
    expires_at: float | None
    """Conversions of a metric that requires exposure: until when (epoch seconds) the
    conversion may wait for its subject's exposure. None: it never waits."""


# --- checking a batch -------------------------------------------------------------------


class _ExperimentInfo(NamedTuple):
    experiment_id: str
    variants: frozenset[str]


class EventChecker:
    """Checks the events of one project's batches against one configuration snapshot.

    Lookups are remembered per checker, so a batch of thousands of events for a handful of
    experiments and metrics resolves each of them once.
    """

    def __init__(
        self,
        project_id: str,
        experiments: Mapping[tuple[str, str], Experiment],
        metrics: Mapping[tuple[str, str], Metric],
        *,
        received_at: datetime,
        future_skew: timedelta,
        max_age: timedelta,
    ) -> None:
        self.project_id = project_id
        self._experiments = experiments
        self._metrics = metrics
        self.received_at = received_at
        self._latest = received_at + future_skew
        self._earliest = received_at - max_age
        self._future_skew = future_skew
        self._max_age = max_age
        self._received_epoch = received_at.timestamp()
        self._experiment_cache: dict[object, _ExperimentInfo | Rejection] = {}
        self._metric_cache: dict[object, float | Rejection | None] = {}

    def check(self, index: int, event: object) -> StagedEvent | Rejection:
        """The staged event, or why ``event`` (at ``index`` in its batch) is rejected."""
        # ``type() is`` rather than isinstance: it is the hot path, and these are final.
        kind = type(event)
        if kind is Exposure:
            assert isinstance(event, Exposure)
            return self._exposure(index, event)
        if kind is Conversion:
            assert isinstance(event, Conversion)
            return self._conversion(index, event)
        return Rejection(
            index=index,
            code="invalid_event",
            message=f"expected an Exposure or a Conversion, got {kind.__name__}",
        )

    def check_into(
        self,
        events: Sequence[Any],
        start: int,
        stop: int,
        staged: list[StagedEvent],
        rejected: list[Rejection],
    ) -> None:
        """``check`` each of ``events[start:stop]``, adding the result to ``staged`` or
        ``rejected``.

        Ingestion's hot loop. An event that plainly passes (its experiment and metric
        already resolved by this checker, every field of the exact type expected) is
        staged inline: the calls ``check`` makes per event cost more than its checks.
        Every other event, whatever the inline test is unsure of, goes through ``check``,
        which decides and says why. The inline test is never laxer than ``check``: an
        event staged here is one ``check`` stages, identically (a property test holds
        the two to that)."""
        new = tuple.__new__
        check = self.check
        experiments = self._experiment_cache
        metrics = self._metric_cache
        project_id = self.project_id
        latest, earliest, received = self._latest, self._earliest, self._received_epoch
        isfinite = math.isfinite
        for index in range(start, stop):
            event = events[index]
            kind = type(event)
            if kind is Exposure or kind is Conversion:
                key, subject, event_id, at = (
                    event.experiment,
                    event.subject,
                    event.event_id,
                    event.timestamp,
                )
                info = experiments.get(key) if type(key) is str else None
                if at is None:
                    epoch: float | None = received
                elif (
                    type(at) is datetime
                    and type(at.tzinfo) is timezone  # a fixed offset: never naive
                    and earliest <= at <= latest
                ):
                    epoch = at.timestamp()
                else:
                    epoch = None
                if (
                    epoch is not None
                    and type(info) is _ExperimentInfo
                    and type(subject) is str
                    and 0 < len(subject) <= MAX_SUBJECT_LENGTH
                    and "\x00" not in subject
                    and (
                        event_id is None
                        or (
                            type(event_id) is str
                            and 0 < len(event_id) <= MAX_EVENT_ID_LENGTH
                            and "\x00" not in event_id
                        )
                    )
                ):
                    if kind is Exposure:
                        variant = event.variant
                        if type(variant) is str and variant in info.variants:
                            staged.append(
                                new(
                                    StagedEvent,
                                    (
                                        Kind.EXPOSURE,
                                        project_id,
                                        info.experiment_id,
                                        subject,
                                        variant,
                                        None,
                                        1.0,
                                        epoch,
                                        event_id,
                                        None,
                                        None,
                                    ),
                                )
                            )
                            continue
                    else:
                        metric, value, idempotency_key = (
                            event.metric,
                            event.value,
                            event.idempotency_key,
                        )
                        expires = (
                            metrics.get(metric, _UNRESOLVED) if type(metric) is str else _UNRESOLVED
                        )
                        value_type = type(value)
                        if (
                            (expires is None or type(expires) is float)
                            and (
                                (value_type is float and isfinite(value))
                                or (value_type is int and -_FLOAT_MAX <= value <= _FLOAT_MAX)
                            )
                            and (
                                idempotency_key is None
                                or (
                                    type(idempotency_key) is str
                                    and 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_LENGTH
                                    and "\x00" not in idempotency_key
                                )
                            )
                        ):
                            staged.append(
                                new(
                                    StagedEvent,
                                    (
                                        Kind.CONVERSION,
                                        project_id,
                                        info.experiment_id,
                                        subject,
                                        None,
                                        metric,
                                        float(value),
                                        epoch,
                                        event_id,
                                        idempotency_key,
                                        expires,
                                    ),
                                )
                            )
                            continue
            result = check(index, event)
            if isinstance(result, Rejection):
                rejected.append(result)
            else:
                staged.append(result)

    def _exposure(self, index: int, event: Exposure) -> StagedEvent | Rejection:
        info = self._experiment(event.experiment)
        if type(info) is Rejection:
            return _at(info, index)
        assert isinstance(info, _ExperimentInfo)
        variant = event.variant
        # A str first: an unhashable variant (Python callers skip msgspec's checks) would
        # raise in the set look-up.
        if type(variant) is not str or variant not in info.variants:
            if not _is_key(variant):
                return _bad_key(index, "variant", variant)
            return Rejection(
                index=index,
                code="unknown_variant",
                message=f"experiment {event.experiment!r} has no variant {variant!r}",
            )
        common = self._common(index, event.subject, event.timestamp, event.event_id)
        if type(common) is Rejection:
            return common
        assert isinstance(common, float)
        return StagedEvent(
            Kind.EXPOSURE,
            self.project_id,
            info.experiment_id,
            event.subject,
            variant,
            None,
            1.0,
            common,
            event.event_id,
            None,
            None,
        )

    def _conversion(self, index: int, event: Conversion) -> StagedEvent | Rejection:
        info = self._experiment(event.experiment)
        if type(info) is Rejection:
            return _at(info, index)
        assert isinstance(info, _ExperimentInfo)
        expires_at = self._metric(event.metric)
        if type(expires_at) is Rejection:
            return _at(expires_at, index)
        assert expires_at is None or isinstance(expires_at, float)
        value = event.value
        if not _finite_number(value):
            return Rejection(
                index=index,
                code="invalid_value",
                message=f"value must be a finite number: {value!r}",
            )
        key = event.idempotency_key
        if key is not None and not _valid_text(key, MAX_IDEMPOTENCY_KEY_LENGTH):
            return Rejection(
                index=index,
                code="invalid_idempotency_key",
                message=f"idempotency_key must be 1-{MAX_IDEMPOTENCY_KEY_LENGTH} characters "
                "of text without NUL",
            )
        common = self._common(index, event.subject, event.timestamp, event.event_id)
        if type(common) is Rejection:
            return common
        assert isinstance(common, float)
        return StagedEvent(
            Kind.CONVERSION,
            self.project_id,
            info.experiment_id,
            event.subject,
            None,
            event.metric,
            float(value),
            common,
            event.event_id,
            key,
            expires_at,
        )

    def _common(
        self, index: int, subject: object, timestamp: object, event_id: object
    ) -> float | Rejection:
        """Checks shared by both kinds; the event's time (epoch seconds) when they pass."""
        if not _valid_text(subject, MAX_SUBJECT_LENGTH):
            return Rejection(
                index=index,
                code="invalid_subject",
                message=f"subject must be 1-{MAX_SUBJECT_LENGTH} characters of text without NUL",
            )
        if event_id is not None and not _valid_text(event_id, MAX_EVENT_ID_LENGTH):
            return Rejection(
                index=index,
                code="invalid_event_id",
                message=f"event_id must be 1-{MAX_EVENT_ID_LENGTH} characters of text without NUL",
            )
        if timestamp is None:
            return self._received_epoch
        # utcoffset(), not tzinfo: a tzinfo may say None, and then the time is naive (and
        # comparing it with an aware one would raise).
        if not isinstance(timestamp, datetime) or timestamp.utcoffset() is None:
            return Rejection(
                index=index,
                code="invalid_timestamp",
                message="timestamp must be a date and time with a UTC offset",
            )
        if timestamp > self._latest:
            return Rejection(
                index=index,
                code="timestamp_in_future",
                message=f"timestamp is more than "
                f"{describe_duration(self._future_skew.total_seconds())} in the future",
            )
        if timestamp < self._earliest:
            return Rejection(
                index=index,
                code="timestamp_too_old",
                message="timestamp is more than "
                f"{describe_duration(self._max_age.total_seconds())} old",
            )
        return timestamp.timestamp()

    def _experiment(self, key: object) -> _ExperimentInfo | Rejection:
        try:
            found = self._experiment_cache.get(key)
        except TypeError:  # unhashable: not a key at all
            return _bad_key(0, "experiment", key)
        if found is None:
            found = self._resolve_experiment(key)
            self._experiment_cache[key] = found
        return found

    def _resolve_experiment(self, key: object) -> _ExperimentInfo | Rejection:
        experiment = self._experiments.get((self.project_id, key)) if type(key) is str else None
        if experiment is None:
            if not _is_key(key):
                return _bad_key(0, "experiment", key)
            return Rejection(
                index=0, code="unknown_experiment", message=f"no experiment {key!r} in this project"
            )
        closed = _CLOSED.get(experiment.status)
        if closed is not None:
            code, why = closed
            return Rejection(index=0, code=code, message=f"experiment {key!r} {why}")
        if experiment.compacted_at is not None:
            # Its raw events are (or are about to be) gone: an exposure could no longer be
            # told from a repeat, a conversion no longer find its exposure (retention.md).
            return Rejection(
                index=0,
                code="experiment_compacted",
                message=f"experiment {key!r} ended long ago and its raw events were compacted",
            )
        return _ExperimentInfo(experiment.id, frozenset(v.key for v in experiment.variants))

    def _metric(self, key: object) -> float | Rejection | None:
        try:
            if key in self._metric_cache:
                return self._metric_cache[key]
        except TypeError:
            return _bad_key(0, "metric", key)
        metric = self._metrics.get((self.project_id, key)) if type(key) is str else None
        found: float | Rejection | None
        if metric is None:
            found = (
                _bad_key(0, "metric", key)
                if not _is_key(key)
                else Rejection(
                    index=0, code="unknown_metric", message=f"no metric {key!r} in this project"
                )
            )
        elif metric.requires_exposure:
            found = (self.received_at + timedelta(hours=metric.pending_ttl_hours)).timestamp()
        else:
            found = None
        self._metric_cache[key] = found
        return found


def _finite_number(value: object) -> bool:
    """A float or int that is a finite double. (An int too big for a double would make
    ``math.isfinite`` raise; Python callers skip msgspec's checks.)"""
    if type(value) is float:
        return math.isfinite(value)
    # int against float compares exactly, however big the int.
    return type(value) is int and -_FLOAT_MAX <= value <= _FLOAT_MAX


def _valid_text(value: object, max_length: int) -> bool:
    # PostgreSQL text cannot hold NUL; refusing it here keeps both stores alike.
    return type(value) is str and 0 < len(value) <= max_length and "\x00" not in value


def _is_key(value: object) -> bool:
    return type(value) is str and _KEY.match(value) is not None


def _bad_key(index: int, field: str, value: object) -> Rejection:
    return Rejection(
        index=index,
        code="invalid_key",
        message=f"{field} must be a key (letters, digits, '_', '.', '-'; 1-128 chars): "
        f"{_short(value)}",
    )


def _at(rejection: Rejection, index: int) -> Rejection:
    """A cached rejection, for the event at ``index``."""
    return Rejection(index=index, code=rejection.code, message=rejection.message)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def count_outcomes(outcomes: Sequence[int]) -> tuple[int, int, int]:
    """(recorded, deduplicated, pending) among ``outcomes``."""
    duplicates = outcomes.count(Outcome.DUPLICATE)
    pending = outcomes.count(Outcome.PENDING)
    return len(outcomes) - duplicates - pending, duplicates, pending
