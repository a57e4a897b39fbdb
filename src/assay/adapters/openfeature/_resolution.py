"""What both providers share: an OpenFeature evaluation context in, assay's answer out; the
assignments they remember (for exposures once each, and for ``track``), how ``track``'s
arguments read as conversions, and OpenFeature's five typed resolve methods
(``TypedResolution``: a provider writes one ``_resolve``).

Rules kept here:
- the subject is the context's targeting key; a missing one is OpenFeature's
  ``TARGETING_KEY_MISSING``, never a decision for an empty subject;
- the attributes are the context's attributes, with their JSON types kept;
- a value whose type is not the one asked for is ``TYPE_MISMATCH`` with the caller's
  default: booleans are never integers, an integer is a float, objects are dicts or lists;
- an unknown flag is ``FLAG_NOT_FOUND`` with the caller's default;
- the reason is OpenFeature's (below), and assay's own reason code, the experiment, the rule
  and the decision id travel in the flag metadata.
"""

from __future__ import annotations

import abc
import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, FlagType, Reason
from openfeature.provider import AbstractProvider
from openfeature.track import TrackingEventDetails

Context = EvaluationContext | None
"""OpenFeature's optional evaluation context, as every resolve method takes it."""

# assay's reason codes (the decision's final outcome) as OpenFeature's reasons.
_REASONS: Mapping[str, Reason] = {
    "flag_off": Reason.DISABLED,
    "forced": Reason.TARGETING_MATCH,
    "rollout": Reason.SPLIT,
    "experiment_assigned": Reason.SPLIT,
    "rolled_back": Reason.TARGETING_MATCH,
    "default": Reason.DEFAULT,
    "prerequisite_failed": Reason.DEFAULT,
}


def openfeature_reason(assay_reason: str) -> Reason:
    """OpenFeature's reason for one of assay's reason codes; a code added later (a new rule
    kind) reads as TARGETING_MATCH when it set a value, which is what every rule does."""
    return _REASONS.get(assay_reason, Reason.TARGETING_MATCH)


class ContextError(Exception):
    """The evaluation context cannot be decided; ``code`` is OpenFeature's."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def subject_and_attributes(context: EvaluationContext | None) -> tuple[str, dict[str, Any]]:
    if context is None or not context.targeting_key:
        raise ContextError(
            ErrorCode.TARGETING_KEY_MISSING,
            "the evaluation context has no targeting key: assay decides for a subject",
        )
    return context.targeting_key, dict(context.attributes)


def has_type(value: Any, flag_type: FlagType) -> bool:
    match flag_type:
        case FlagType.BOOLEAN:
            return isinstance(value, bool)
        case FlagType.STRING:
            return isinstance(value, str)
        case FlagType.INTEGER:
            return isinstance(value, int) and not isinstance(value, bool)
        case FlagType.FLOAT:
            return isinstance(value, int | float) and not isinstance(value, bool)
        case FlagType.OBJECT:
            return isinstance(value, dict | list)
    return False  # pragma: no cover - FlagType is closed


def error_details(default: Any, code: ErrorCode, message: str) -> FlagResolutionDetails[Any]:
    return FlagResolutionDetails(
        value=default, reason=Reason.ERROR, error_code=code, error_message=message
    )


def details_from_decision(
    decision: Mapping[str, Any], flag_type: FlagType, default: Any
) -> FlagResolutionDetails[Any]:
    """OpenFeature's details from one decision (as ``/decide`` answers it in JSON)."""
    reason = decision["reason"]
    if reason == "flag_not_found":
        return error_details(
            default, ErrorCode.FLAG_NOT_FOUND, f"no flag {decision['flag']!r} in the project"
        )
    value = decision["value"]
    if not has_type(value, flag_type):
        return error_details(
            default,
            ErrorCode.TYPE_MISMATCH,
            f"flag {decision['flag']!r} holds {type(value).__name__} {value!r},"
            f" not a {flag_type.value.lower()}",
        )
    if flag_type is FlagType.FLOAT:
        value = float(value)
    metadata: dict[str, bool | int | float | str] = {
        "assay_reason": reason,
        "decision_id": decision["decision_id"],
        "in_experiment": bool(decision.get("in_experiment")),
    }
    for key in ("rule", "experiment", "experiment_reason"):
        if decision.get(key) is not None:
            metadata[key] = decision[key]
    return FlagResolutionDetails(
        value=value,
        reason=openfeature_reason(reason),
        variant=decision.get("variant"),
        flag_metadata=metadata,
    )


def exposure_event_id(experiment: str, subject: str, variant: str) -> str:
    """One id per (experiment, subject, variant): evaluating the same flag again sends the
    same exposure, which ingestion counts once. Hashed to stay within the id length."""
    digest = hashlib.sha256(f"{experiment}\0{subject}\0{variant}".encode()).hexdigest()
    return f"openfeature-{digest[:48]}"


class Assignments:
    """The experiments this provider saw each recent subject assigned to (the last
    ``limit`` subjects): whether an exposure is new, and where ``track`` sends conversions."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._of: OrderedDict[str, set[str]] = OrderedDict()

    def note(self, subject: str, experiment: str) -> bool:
        """Remember the assignment; whether it is new (its exposure is to be sent)."""
        experiments = self._of.get(subject)
        if experiments is None:
            experiments = self._of[subject] = set()
            if len(self._of) > self._limit:
                self._of.popitem(last=False)
        if experiment in experiments:
            return False
        experiments.add(experiment)
        return True

    def experiments_of(self, subject: str) -> list[str]:
        return sorted(self._of.get(subject, ()))


@dataclass(frozen=True)
class Conversions:
    """What one ``track`` call records: metric ``metric`` for ``subject`` in each of
    ``experiments``, with ``value`` and an optional idempotency key."""

    metric: str
    subject: str
    experiments: list[str]
    value: float
    idempotency_key: str | None


def conversions_of(
    name: str, context: Context, details: TrackingEventDetails | None, assignments: Assignments
) -> Conversions:
    """``track``'s arguments read as conversions: the experiment named in
    ``details.attributes["experiment"]``, else every experiment the subject was seen in."""
    subject, _ = subject_and_attributes(context)
    details = details or TrackingEventDetails()
    named = details.attributes.get("experiment")
    key = details.attributes.get("idempotency_key")
    return Conversions(
        metric=name,
        subject=subject,
        experiments=[str(named)] if named is not None else assignments.experiments_of(subject),
        value=1.0 if details.value is None else float(details.value),
        idempotency_key=None if key is None else str(key),
    )


class TypedResolution(AbstractProvider):
    """OpenFeature's typed ``resolve_*_details`` methods, each ``_resolve`` with its flag
    type: a provider built on it writes ``_resolve`` (and ``get_metadata``)."""

    @abc.abstractmethod
    def _resolve(
        self, flag: str, default: Any, context: EvaluationContext | None, flag_type: FlagType
    ) -> FlagResolutionDetails[Any]: ...

    def resolve_boolean_details(
        self, flag_key: str, default_value: bool, evaluation_context: Context = None
    ) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, default_value, evaluation_context, FlagType.BOOLEAN)

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: Context = None
    ) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, evaluation_context, FlagType.STRING)

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: Context = None
    ) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, default_value, evaluation_context, FlagType.INTEGER)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: Context = None,
    ) -> FlagResolutionDetails[float]:
        return self._resolve(flag_key, default_value, evaluation_context, FlagType.FLOAT)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[Any] | Mapping[str, Any],
        evaluation_context: Context = None,
    ) -> FlagResolutionDetails[Sequence[Any] | Mapping[str, Any]]:
        return self._resolve(flag_key, default_value, evaluation_context, FlagType.OBJECT)
