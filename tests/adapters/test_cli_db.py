"""``assay db stats`` and ``assay db expire`` against a real database, and retention
settings that break a guarantee refused before anything runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from assay.adapters.cli import main


@pytest.mark.parametrize("command", [["db"], ["db", "stats"], ["db", "expire"]])
def test_db_commands_have_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    assert "usage: assay" in capsys.readouterr().out


def test_expire_then_stats(pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    db = ["--database-url", pg_dsn]
    assert main(["db", "expire", "--json", *db]) == 0
    expired = json.loads(capsys.readouterr().out)
    assert expired["ran"] is True
    assert expired["partitions_dropped"] == []
    # Today's partitions came with the migration; the days ahead come with expiry.
    assert len(expired["partitions_created"]) >= 7

    assert main(["db", "stats", "--json", *db]) == 0
    stats = json.loads(capsys.readouterr().out)
    kinds = ["decision_records", "event_ids", "audit_entries", "raw_events"]
    assert [k["kind"] for k in stats["kinds"]] == kinds
    retention = {k["kind"]: k["retention_days"] for k in stats["kinds"]}
    assert retention == {
        "decision_records": 30,
        "event_ids": 31,
        "audit_entries": None,
        "raw_events": 90,
    }
    tomorrow = f"assay_decisions_p{datetime.now(UTC) + timedelta(days=1):%Y%m%d}"
    names = {p["partition"] for p in stats["partitions"]}
    assert "assay_decisions_default" in names
    assert "assay_event_ids_legacy" in names
    assert tomorrow in names
    assert all(not p["expires"] for p in stats["partitions"])

    assert main(["db", "stats", *db]) == 0
    text = capsys.readouterr().out
    assert "decision_records" in text
    assert "forever" in text  # audit entries
    assert "raw_events" in text


def test_a_retention_breaking_a_guarantee_is_refused(
    pg_dsn: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASSAY_EVENT_ID_RETENTION_DAYS", "7")
    assert main(["db", "stats", "--database-url", pg_dsn]) == 1
    err = capsys.readouterr().err
    assert "invalid_config" in err
    assert "event_id_retention_days" in err


def test_a_raw_event_retention_shorter_than_events_are_accepted_is_refused(
    pg_dsn: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASSAY_RAW_EVENT_RETENTION_DAYS", "30")
    assert main(["db", "stats", "--database-url", pg_dsn]) == 1
    err = capsys.readouterr().err
    assert "invalid_config" in err
    assert "raw_event_retention_days (30) must be at least event_max_age_days" in err
