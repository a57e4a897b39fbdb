"""The experiment state machine, as data.

DRAFT -> RUNNING <-> PAUSED -> COMPLETED -> ARCHIVED, RUNNING -> COMPLETED too, and a
ROLLED_BACK state reachable from RUNNING or PAUSED (a rolled-back experiment serves every
subject the control value until it is archived).
"""

from __future__ import annotations

from assay.engine._model import ExperimentStatus as S
from assay.engine._model import Transition as T

TRANSITIONS: dict[T, tuple[frozenset[S], S]] = {
    T.START: (frozenset({S.DRAFT}), S.RUNNING),
    T.PAUSE: (frozenset({S.RUNNING}), S.PAUSED),
    T.RESUME: (frozenset({S.PAUSED}), S.RUNNING),
    T.COMPLETE: (frozenset({S.RUNNING, S.PAUSED}), S.COMPLETED),
    T.ARCHIVE: (frozenset({S.COMPLETED, S.ROLLED_BACK}), S.ARCHIVED),
    T.ROLLBACK: (frozenset({S.RUNNING, S.PAUSED}), S.ROLLED_BACK),
}

DELETABLE: frozenset[S] = frozenset({S.DRAFT})
EDITABLE: frozenset[S] = frozenset({S.DRAFT, S.RUNNING, S.PAUSED})


def next_status(current: S, transition: T) -> S | None:
    """The status after ``transition`` from ``current``, or None when it is not allowed."""
    allowed_from, target = TRANSITIONS[transition]
    return target if current in allowed_from else None
