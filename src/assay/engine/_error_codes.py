"""The registry of every code a client can see: error codes (with their HTTP status) and
the codes of rejected events.

This is the one place a code is defined. ``docs/api.md``'s tables and the OpenAPI document's
error responses are generated from it (``scripts/gen_docs.py``; a test fails when the
committed tables differ), and the error types refuse a code that is not here when they are
constructed, so an undocumented code cannot reach a client.

Adding a code is one line in ``ERROR_CODES`` (or ``REJECTION_CODES``), then
``.venv/bin/python scripts/gen_docs.py`` to rewrite docs/api.md. The status is the HTTP status
the code is answered with; it must match the error class it is raised with (``NotFound``
404, ``Conflict`` 409, ``ValidationFailed`` 422, ...). The CLI reports every code the same
way, whatever its status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class ErrorCode:
    status: int
    """The HTTP status this code is answered with."""
    meaning: str
    """One line for people: when a client gets this code."""


ERROR_CODES: Final[dict[str, ErrorCode]] = {
    # 400: the request could not be read at all.
    "malformed_json": ErrorCode(400, "The body is not valid JSON (or is empty)."),
    "bad_request": ErrorCode(400, "The HTTP request itself is malformed."),
    # 401, 403: who is asking.
    "unauthenticated": ErrorCode(401, "No API key, a malformed header, or an unknown or revoked key."),
    "forbidden": ErrorCode(403, "The key may read this but not change it."),
    "csrf_failed": ErrorCode(403, "A console form did not come from this session (or the session expired)."),
    # 404: nothing there (or nothing this key may see).
    "not_found": ErrorCode(404, "No such object, or the key may not read it."),
    "project_not_found": ErrorCode(404, "No such project, or the key may not read it."),
    "client_key_not_found": ErrorCode(404, "No active SDK connection has this client key (unknown, revoked or malformed: the answer is the same)."),
    "route_not_found": ErrorCode(404, "No route has this path."),
    "decision_expired": ErrorCode(404, "The decision record is past its retention and was deleted (docs/retention.md)."),
    # 405, 408, 413: the HTTP layer.
    "method_not_allowed": ErrorCode(405, "The route exists but not with this method (`details.allowed`)."),
    "request_timeout": ErrorCode(408, "The request body did not arrive in time."),
    "body_too_large": ErrorCode(413, "The body is larger than `max_body_bytes`."),
    "unsupported_media_type": ErrorCode(415, "The body is sent with a Content-Type other than JSON."),
    # 409: the write conflicts with the current state.
    "conflict": ErrorCode(409, "The write conflicts with the current state."),
    "already_exists": ErrorCode(409, "An object with this key (or a key with this secret) exists."),
    "revision_mismatch": ErrorCode(409, "`If-Match` names a revision that is no longer current."),
    "illegal_transition": ErrorCode(409, "The experiment's lifecycle does not allow this transition from its status."),
    "experiment_not_deletable": ErrorCode(409, "Only a DRAFT experiment may be deleted."),
    "experiment_locked": ErrorCode(409, "A field that a started experiment's analysis depends on cannot change."),
    "experiment_not_running": ErrorCode(409, "The action needs a RUNNING experiment."),
    "flag_has_running_experiment": ErrorCode(409, "The flag already has a running experiment."),
    "layer_range_overlap": ErrorCode(409, "A running experiment already holds part of this layer range."),
    "in_use": ErrorCode(409, "Another object refers to this one; remove the reference first."),
    "bucket_version_decreased": ErrorCode(409, "A sticky experiment's bucket_version or min_bucket_version may only go up."),
    "project_archived": ErrorCode(409, "The project is archived and refuses writes."),
    # 422: the request was read, and is invalid.
    "validation_failed": ErrorCode(422, "The input is invalid."),
    "invalid_body": ErrorCode(422, "The body does not match the schema (`details.path` points at the value)."),
    "invalid_text": ErrorCode(422, "A NUL character in a body, path or query: PostgreSQL cannot store it (`details.path`)."),
    "timeseries_too_long": ErrorCode(422, "More than 200 points at this interval: ask for interval=day."),
    "action_not_available": ErrorCode(422, "The console action is not possible for this experiment with this role and status."),
    "invalid_plan": ErrorCode(422, "A plan that cannot be met: an MDE of zero, power or alpha outside (0, 1), no traffic (`details.field`)."),
    "zero_variance_baseline": ErrorCode(422, "The plan's baseline has no variance (a rate of 0 or 1, a variance of 0): no sample size detects a change."),
    "no_baseline_data": ErrorCode(422, "The metric has no recent data in the experiment's control to estimate a baseline from."),
    "no_primary_metric": ErrorCode(422, "A plan needs the experiment to have a primary metric."),
    "overlapping_ranges": ErrorCode(422, "An experiment's explicit bucket ranges overlap."),
    "duplicate_forced_value": ErrorCode(422, "A forced-variation value is listed for two variants."),
    "invalid_bucket_version": ErrorCode(422, "min_bucket_version is above bucket_version, which would keep everyone out."),
    "invalid_segment": ErrorCode(422, "A segment's fields do not fit its type (a list segment with a condition, or the reverse)."),
    "invalid_segment_reference": ErrorCode(422, "A condition refers to a segment in a malformed way (`$savedGroup` without an id, ...)."),
    "segment_not_found": ErrorCode(422, "A condition refers to a segment the project does not have."),
    "segment_type_mismatch": ErrorCode(422, "`$inGroup`/`$notInGroup` name a condition segment (they take list segments)."),
    "segment_cycle": ErrorCode(422, "Condition segments refer to each other in a cycle."),
    "too_deep": ErrorCode(422, "Arrays and objects nested more than 64 deep in a body."),
    "unknown_field": ErrorCode(422, "The body has a field the schema does not know (`details.field`)."),
    "unknown_parameter": ErrorCode(422, "A query parameter the route does not take."),
    "invalid_parameter": ErrorCode(422, "A query parameter given twice, of the wrong type, or not one of its choices."),
    "invalid_if_match": ErrorCode(422, "`If-Match` is not a revision number (or `*`)."),
    "invalid_cursor": ErrorCode(422, "`cursor` is not one this server handed out."),
    "invalid_limit": ErrorCode(422, "`limit` (or a participation limit) is out of range."),
    "project_required": ErrorCode(422, "A key for all projects must name one with `?project=`."),
    "batch_too_large": ErrorCode(422, "More events or decisions in one batch than allowed; nothing was recorded."),
    "immutable_field": ErrorCode(422, "The patch changes a field that cannot change (a key)."),
    "value_type_mismatch": ErrorCode(422, "A value does not match the flag's type."),
    "unknown_reference": ErrorCode(422, "Refers to a flag, experiment, layer or metric that does not exist."),
    "prerequisite_cycle": ErrorCode(422, "Flag prerequisites form a cycle."),
    "duplicate_rule_id": ErrorCode(422, "Two rules of a flag share an id."),
    "duplicate_variant": ErrorCode(422, "Two variants share a key."),
    "duplicate_key": ErrorCode(422, "A definitions file defines the same object twice."),
    "invalid_weights": ErrorCode(422, "Variant weights are all zero."),
    "invalid_range": ErrorCode(422, "A layer range is empty or outside the layer."),
    "missing_field": ErrorCode(422, "A field the object's kind needs is missing."),
    "invalid_condition": ErrorCode(422, "A targeting condition is not well formed."),
    "unknown_operator": ErrorCode(422, "A targeting condition uses an operator nobody registered."),
    "invalid_operator_argument": ErrorCode(422, "A targeting operator's argument is invalid."),
    "invalid_regex": ErrorCode(422, "A `$regex` pattern is not a regular expression."),
    "unsafe_regex": ErrorCode(422, "A `$regex` pattern needs backtracking, which RE2 does not run."),
    "unknown_metric_kind": ErrorCode(422, "A metric's kind is not registered by any plugin."),
    "cuped_unsupported": ErrorCode(422, "The metric's kind does not support CUPED (`cuped_days`)."),
    "unknown_action": ErrorCode(422, "A guardrail's action is not registered by any plugin."),
    "unknown_channel": ErrorCode(422, "A notification channel type is not registered by any plugin."),
    "invalid_channel": ErrorCode(422, "A notification channel's settings are invalid."),
    "invalid_period": ErrorCode(422, "A report period without a UTC offset, or that starts after it ends."),
    "invalid_correction": ErrorCode(422, "Not a known multiple-testing correction."),
    "invalid_statistics": ErrorCode(422, "Statistics asked for with impossible inputs."),
    "invalid_format": ErrorCode(422, "A definitions format other than json or toml."),
    "invalid_definitions": ErrorCode(422, "A definitions file that does not decode or is invalid."),
    "invalid_payload": ErrorCode(422, "A GrowthBook payload that does not decode."),
    "invalid_config": ErrorCode(422, "A configuration setting or file is invalid."),
    # 500: a bug.
    "internal_error": ErrorCode(500, "The server failed unexpectedly: a bug."),
    # 503: try again later.
    "not_ready": ErrorCode(503, "No configuration snapshot is published yet."),
    "store_unavailable": ErrorCode(503, "The database does not answer."),
    "overloaded": ErrorCode(503, "An actor's inbox is full; retry later."),
    "actor_crashed": ErrorCode(503, "The actor handling the request failed and restarted; nothing unacknowledged was kept, so retry."),
}  # fmt: skip
"""Every error code: ``{"error": {"code": ...}}``. One line each; see the module docstring."""

REJECTION_CODES: Final[dict[str, str]] = {
    "invalid_event": "The event is not an exposure or conversion of the expected shape.",
    "invalid_key": "An experiment or metric key that is not a key (empty, too long, not text).",
    "unknown_experiment": "No experiment with this key in the project.",
    "experiment_not_started": "The experiment is a DRAFT.",
    "experiment_archived": "The experiment is archived.",
    "unknown_variant": "The experiment has no such variant.",
    "unknown_metric": "No metric with this key in the project.",
    "invalid_subject": "The subject is empty, too long or not text.",
    "invalid_value": "A conversion value that is not a finite number.",
    "invalid_event_id": "An event id that is empty, too long or not text.",
    "invalid_idempotency_key": "An idempotency key that is empty, too long or not text.",
    "invalid_timestamp": "A timestamp without a UTC offset.",
    "timestamp_in_future": "Further ahead than `event_future_skew_seconds`.",
    "timestamp_too_old": "Older than `event_max_age_days`.",
}
"""Every code a rejected event may carry in ``rejected: [{index, code, message}]``."""


def registry_hint(code: str) -> str:
    """What to do about an unregistered code: the failure message every check shows."""
    return (
        f"error code {code!r} is not in the registry: add one line to ERROR_CODES in "
        f'src/assay/engine/_error_codes.py, e.g. "{code}": ErrorCode(STATUS, "when a '
        'client gets it."), then run `.venv/bin/python scripts/gen_docs.py` to update docs/api.md'
    )


def check_code(code: str, status: int | None = None) -> str:
    """``code`` if it is registered (with ``status``, when given); raises ``ValueError``
    saying what to do otherwise. A programming error, so not an ``AssayError``."""
    entry = ERROR_CODES.get(code)
    if entry is None:
        raise ValueError(registry_hint(code))
    if status is not None and entry.status != status:
        raise ValueError(
            f"error code {code!r} is registered with status {entry.status} but raised as "
            f"{status}: raise it with the error class for {entry.status}, or change its "
            "line in ERROR_CODES (src/assay/engine/_error_codes.py)"
        )
    return code


def check_rejection_code(code: str) -> str:
    if code not in REJECTION_CODES:
        raise ValueError(
            f"rejection code {code!r} is not in the registry: add one line to "
            "REJECTION_CODES in src/assay/engine/_error_codes.py, then run "
            "`.venv/bin/python scripts/gen_docs.py` to update docs/api.md"
        )
    return code
