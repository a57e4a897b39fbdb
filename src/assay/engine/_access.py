"""Who may do what: the permission matrix, as data, in one place.

Read is checked before write. A caller that may not *read* a resource is told it does not
exist (404), so a key never learns what another project or role holds; a caller that may
read but not write gets 403.
"""

from __future__ import annotations

import enum
from typing import Final

from assay.engine._errors import NotFound, PermissionDenied
from assay.engine._model import ApiKey, Role


class Resource(enum.StrEnum):
    PROJECT = "project"
    FLAG = "flag"
    EXPERIMENT = "experiment"
    LAYER = "layer"
    METRIC = "metric"
    SEGMENT = "segment"
    SDK_CONNECTION = "sdk_connection"
    KEY = "key"
    AUDIT = "audit"
    REPORT = "report"
    DECISION = "decision"
    EVENT = "event"
    GUARDRAIL = "guardrail"


class Action(enum.StrEnum):
    READ = "read"
    WRITE = "write"


_R, _W = Action.READ, Action.WRITE
_CONFIG = (
    Resource.PROJECT,
    Resource.FLAG,
    Resource.EXPERIMENT,
    Resource.LAYER,
    Resource.METRIC,
    Resource.SEGMENT,
    Resource.SDK_CONNECTION,
)

PERMISSIONS: Final[dict[Role, frozenset[tuple[Resource, Action]]]] = {
    # Everything.
    Role.ADMIN: frozenset((r, a) for r in Resource for a in Action),
    # Creates and manages flags and experiments (with their layers, metrics and
    # guardrails); may decide and send events to try them out. No keys, no projects.
    Role.DEVELOPER: frozenset(
        {(r, _R) for r in _CONFIG}
        | {(r, _W) for r in _CONFIG if r is not Resource.PROJECT}
        | {(Resource.AUDIT, _R), (Resource.REPORT, _R)}
        | {(Resource.GUARDRAIL, _R), (Resource.GUARDRAIL, _W)}
        | {(Resource.DECISION, _R), (Resource.DECISION, _W)}
        | {(Resource.EVENT, _R), (Resource.EVENT, _W)}
    ),
    # Reads everything a project holds, runs reports; changes nothing.
    Role.ANALYST: frozenset(
        {(r, _R) for r in _CONFIG}
        | {(Resource.AUDIT, _R), (Resource.REPORT, _R), (Resource.GUARDRAIL, _R)}
        | {(Resource.DECISION, _R), (Resource.EVENT, _R)}
    ),
    # Reads configuration only.
    Role.VIEWER: frozenset({(r, _R) for r in _CONFIG}),
    # Services embedding an SDK: decide and send events, nothing else.
    Role.SDK: frozenset({(Resource.DECISION, _W), (Resource.EVENT, _W)}),
}


def allows(role: Role, resource: Resource, action: Action) -> bool:
    return (resource, action) in PERMISSIONS[role]


def authorize(key: ApiKey, resource: Resource, action: Action, *, project_id: str | None) -> None:
    """Raise unless ``key`` may perform ``action`` on ``resource`` in ``project_id``.

    ``project_id`` None means a resource outside any project (the project list itself,
    global keys). Denial of read, or of a project outside the key's scope, is NotFound.
    """
    in_scope = key.project_id is None or key.project_id == project_id
    # An SDK key has no read permission at all; its writes (decide, events) are
    # the only doors, so it must not fall into the read check below.
    readable = allows(key.role, resource, Action.READ) or (
        action is Action.WRITE and allows(key.role, resource, Action.WRITE)
    )
    if not in_scope or not readable:
        raise NotFound(f"{resource.value} not found")
    if not allows(key.role, resource, action):
        raise PermissionDenied(
            f"role {key.role.value} may not {action.value} {resource.value}",
            details={"role": key.role.value, "resource": resource.value},
        )
