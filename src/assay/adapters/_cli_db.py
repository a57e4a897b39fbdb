"""``assay db stats`` and ``assay db expire``: what the data lifecycle holds and removes.

``stats`` prints rows and bytes per kind of data and per partition, the oldest row per
kind, and what the next expiry run would remove, ended experiments' raw events included
(docs/retention.md). ``expire`` runs one
expiry now, as the leading server does every ``retention_interval_seconds``; it takes the
same lock, so it never runs beside the server's.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from assay.engine import EngineConfig
from assay.engine._retention import Expired, RetentionStats

if TYPE_CHECKING:
    from assay.engine._retention import Retention

EXIT_OK = 0


def add_db_commands(
    commands: Any,
    add_config_args: Callable[[argparse.ArgumentParser], None],
    load_config: Callable[[argparse.Namespace], EngineConfig],
) -> None:
    db = commands.add_parser("db", help="what the database holds, and expiring it")
    db_commands = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    stats = db_commands.add_parser(
        "stats",
        help="rows and bytes per kind and partition, oldest rows, what expiry will remove",
        description="Rows and bytes per kind of data (decision records, event ids, audit "
        "entries, raw events) and per partition, the oldest row per kind, and what the next "
        "expiry run would remove under the configured retention. Rows of big partitions are "
        "PostgreSQL's estimates.",
    )
    stats.add_argument("--json", action="store_true", help="print the result as JSON")
    add_config_args(stats)
    stats.set_defaults(handler=lambda args: _stats(args, load_config(args)))
    expire = db_commands.add_parser(
        "expire",
        help="create partitions ahead and remove what is past retention, now",
        description="One expiry run, as the leading server runs every "
        "retention_interval_seconds; it does nothing while another run holds the lock.",
    )
    expire.add_argument("--json", action="store_true", help="print the result as JSON")
    add_config_args(expire)
    expire.set_defaults(handler=lambda args: _expire(args, load_config(args)))


async def _with_retention(config: EngineConfig, action: Callable[[Retention], Any]) -> Any:
    """``action`` on the engine's data lifecycle: the engine knows which experiments are
    due for compaction (its configuration snapshot), the store alone does not."""
    import assay

    async with assay.open_engine(config) as engine:
        return await action(engine.retention)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = n / 1024
    for unit in ("kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            break
        size /= 1024
    return f"{size:.1f} {unit}"


def _stats(args: argparse.Namespace, config: EngineConfig) -> int:
    stats: RetentionStats = trio.run(
        _with_retention, config, lambda retention: retention.stats(trio.current_time())
    )
    if args.json:
        print(msgspec.json.encode(stats).decode())
        return EXIT_OK
    print(f"{'KIND':<18} {'ROWS':>12} {'SIZE':>10} {'KEPT':>10} {'OLDEST':<26} NEXT EXPIRY")
    for kind in stats.kinds:
        kept = "forever" if kind.retention_days is None else f"{kind.retention_days} days"
        oldest = "-" if kind.oldest is None else kind.oldest.isoformat(timespec="seconds")
        print(
            f"{kind.kind:<18} {kind.rows:>12,} {_size(kind.bytes):>10} {kept:>10} "
            f"{oldest:<26} {kind.next_expiry_rows:,} rows"
        )
    if stats.partitions:
        print()
        print(f"{'PARTITION':<36} {'ROWS':>12} {'SIZE':>10}  NEXT EXPIRY")
        for part in stats.partitions:
            print(
                f"{part.partition:<36} {part.rows:>12,} {_size(part.bytes):>10}  "
                f"{'removes it' if part.expires else '-'}"
            )
    return EXIT_OK


def _expire(args: argparse.Namespace, config: EngineConfig) -> int:
    expired: Expired = trio.run(_with_retention, config, lambda retention: retention.run())
    if args.json:
        print(msgspec.json.encode(expired).decode())
        return EXIT_OK
    if not expired.ran:
        print("another expiry run is in progress; nothing done")
        return EXIT_OK
    print(f"created {len(expired.partitions_created)} partitions ahead")
    print(f"dropped {', '.join(expired.partitions_dropped) or 'no partition'}")
    print(
        f"removed {expired.decision_records:,} decision records, {expired.event_ids:,} event "
        f"ids, {expired.audit_entries:,} audit entries"
    )
    print(
        f"marked {', '.join(expired.experiments_marked) or 'no experiment'} compacted; "
        f"removed {expired.raw_events:,} raw events of "
        f"{', '.join(expired.experiments_compacted) or 'no experiment'}"
    )
    return EXIT_OK
