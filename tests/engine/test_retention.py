"""The retention runner's schedule, on a virtual clock: the first run a little after
leading starts, then once per interval; a failed run is logged and retried, not raised."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from assay.adapters.memory import open_memory_store
from assay.engine._retention import FIRST_RUN_AFTER_SECONDS, Retention, RetentionPolicy

POLICY = RetentionPolicy(decision_days=30, event_id_days=31)
NOW = datetime(2026, 3, 1, tzinfo=UTC)


async def test_runs_once_per_interval_after_a_first_delay() -> None:
    async with open_memory_store() as store:
        retention = Retention(store, POLICY, 3600.0, clock=lambda: NOW)
        assert await retention.tick(0.0) is None
        assert await retention.tick(FIRST_RUN_AFTER_SECONDS - 1) is None
        assert await retention.tick(FIRST_RUN_AFTER_SECONDS) is not None
        assert await retention.tick(FIRST_RUN_AFTER_SECONDS + 3599) is None
        assert await retention.tick(FIRST_RUN_AFTER_SECONDS + 3600) is not None
        assert retention.runs == 2
        # A short interval comes first.
        quick = Retention(store, POLICY, 0.5, clock=lambda: NOW)
        assert await quick.tick(10.0) is None
        assert await quick.tick(10.5) is not None


async def test_a_failed_run_is_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    class Failing:
        calls = 0

        async def expire(self, now: datetime, policy: RetentionPolicy) -> Any:
            self.calls += 1
            raise ConnectionError("database away")

    store = Failing()
    retention = Retention(store, POLICY, 1.0, clock=lambda: NOW)  # type: ignore[arg-type]
    await retention.tick(0.0)
    assert await retention.tick(1.0) is None
    assert "data lifecycle run failed" in caplog.text
    assert await retention.tick(2.0) is None
    assert store.calls == 2
    assert retention.runs == 0
