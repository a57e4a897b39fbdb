"""Decision records on PostgreSQL: batches go in with one COPY, lookups by id."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from assay.engine._core import Decision, Reason

_COLUMNS = (
    "decision_id",
    "project_id",
    "flag",
    "subject",
    "value",
    "variant",
    "rule",
    "reason",
    "experiment",
    "experiment_reason",
    "in_experiment",
    "hash_value",
    "flag_revision",
    "snapshot_version",
    "decided_at",
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM assay_decisions WHERE decision_id = $1"
_encode = msgspec.json.Encoder().encode


def _row(d: Decision) -> tuple[Any, ...]:
    return (
        d.decision_id,
        d.project_id,
        d.flag,
        d.subject,
        _encode(d.value),
        d.variant,
        d.rule,
        d.reason.value,
        d.experiment,
        None if d.experiment_reason is None else d.experiment_reason.value,
        d.in_experiment,
        d.hash_value,
        d.flag_revision,
        d.snapshot_version,
        datetime.fromtimestamp(d.decided_at, UTC),
    )


async def aio_record_decisions(pool: Any, decisions: Sequence[Decision]) -> None:
    async with pool.acquire() as conn:
        # COPY is one round trip for the whole batch; decision ids are unique by
        # construction, so there is no conflict to handle.
        await conn.copy_records_to_table(
            "assay_decisions", records=[_row(d) for d in decisions], columns=_COLUMNS
        )


async def aio_get_decision(pool: Any, decision_id: str) -> Decision | None:
    row = await pool.fetchrow(_SELECT, decision_id)
    if row is None:
        return None
    return Decision(
        decision_id=row["decision_id"],
        project_id=row["project_id"],
        flag=row["flag"],
        subject=row["subject"],
        value=None if row["value"] is None else msgspec.json.decode(row["value"]),
        variant=row["variant"],
        rule=row["rule"],
        reason=Reason(row["reason"]),
        experiment=row["experiment"],
        experiment_reason=None
        if row["experiment_reason"] is None
        else Reason(row["experiment_reason"]),
        in_experiment=row["in_experiment"],
        hash_value=row["hash_value"],
        flag_revision=row["flag_revision"],
        snapshot_version=row["snapshot_version"],
        decided_at=row["decided_at"].timestamp(),
    )
