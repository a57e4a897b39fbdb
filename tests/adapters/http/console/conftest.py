"""Fixtures for the console tests: a project with experiments, flags and keys of every
role (``seed``), the Quart test client signed in or not, and, for the browser tests, a
real server on a free port in a thread of its own (``live``)."""

from __future__ import annotations

import queue
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import trio

import assay
from assay.adapters.http import create_app, serve
from assay.engine import (
    SYSTEM_KEY,
    Conversion,
    Engine,
    EngineConfig,
    Experiment,
    ExperimentRule,
    ExperimentSpec,
    Exposure,
    Flag,
    FlagSpec,
    ForceRule,
    Guardrail,
    Metric,
    MetricSpec,
    Project,
    ProjectSpec,
    Role,
    Transition,
    Variant,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def engine_config(dsn: str) -> EngineConfig:
    return EngineConfig(database_url=dsn, pool_size=4)


HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
"""Typed into names and the playground: must come back as text, never as markup."""


@dataclass
class Seeded:
    project: str
    keys: dict[Role, str]
    """A secret per role, scoped to the project."""
    key_ids: dict[Role, str]
    experiment: str
    """RUNNING, with data and a clear lift."""
    srm_experiment: str
    """RUNNING, with a sample ratio mismatch."""
    draft: str
    flag: str
    global_admin: str
    """An ADMIN key for every project: the console starts at the project list."""


RAN = timedelta(days=3, hours=5)
"""How long the main experiment has run when the tests look at it."""


async def seed(engine: Engine) -> Seeded:
    service = engine.service
    project = unique("shop")
    await service.create_project(SYSTEM_KEY, ProjectSpec(key=project, name="Shop"))
    for spec in (
        MetricSpec(key="bought", name="Purchase", kind="proportion"),
        MetricSpec(key="revenue", name="Revenue", kind="mean"),
        MetricSpec(key="errors", name="Errors", kind="proportion", higher_is_better=False),
    ):
        await service.create_object(SYSTEM_KEY, Metric, project, spec)
    variants = [
        Variant(key="control", value=False, name="Control"),
        Variant(key="treatment", value=True, name="One-page checkout"),
    ]
    experiment, srm, draft = "checkout", "banner", "draft-test"
    await service.create_object(
        SYSTEM_KEY,
        Experiment,
        project,
        ExperimentSpec(
            key=experiment,
            name="Checkout in one page",
            hypothesis=f"Fewer steps sell more. {HOSTILE}",
            variants=variants,
            primary_metrics=["bought"],
            secondary_metrics=["revenue"],
            guardrail_metrics=["errors"],
            guardrails=[Guardrail(metric="errors", harmful_direction="increase", action="notify")],
        ),
    )
    await service.create_object(
        SYSTEM_KEY,
        Experiment,
        project,
        ExperimentSpec(key=srm, name="Banner", variants=variants, primary_metrics=["bought"]),
    )
    await service.create_object(
        SYSTEM_KEY, Experiment, project, ExperimentSpec(key=draft, variants=variants)
    )
    for key in (experiment, srm):
        await service.transition_experiment(SYSTEM_KEY, project, key, Transition.START)
    flag = "new-checkout"
    await service.create_object(
        SYSTEM_KEY,
        Flag,
        project,
        FlagSpec(
            key=flag,
            description="Serves the one-page checkout",
            rules=[
                ForceRule(condition={"country": "NZ"}, value=True),
                ExperimentRule(experiment=experiment),
            ],
        ),
    )
    await service.create_object(SYSTEM_KEY, Flag, project, FlagSpec(key="dark-mode"))
    now = datetime.now(UTC) - timedelta(minutes=1)
    # The main experiment has run for RAN (its start moved back in the store, as only the
    # clock could), its subjects exposed evenly since: its charts over time have points.
    async with engine.store.transaction() as tx:
        found = await tx.get(Project, None, project)
        assert found is not None
        started = await tx.get(Experiment, found.id, experiment)
        assert started is not None
        await tx.update(
            msgspec.structs.replace(started, started_at=now - RAN),
            expected_revision=started.revision,
        )
    await engine.refresh()
    events: list[Any] = []
    for i in range(1200):
        variant = "treatment" if i % 2 else "control"
        subject = f"u{i}"
        at = now - RAN * (1 - i / 1200)
        events.append(
            Exposure(experiment=experiment, subject=subject, variant=variant, timestamp=at)
        )
        if i % 5 in (0, 1) or (variant == "treatment" and i % 9 == 0):
            events.append(
                Conversion(experiment=experiment, metric="bought", subject=subject, timestamp=at)
            )
            events.append(
                Conversion(
                    experiment=experiment, metric="revenue", subject=subject,
                    value=float(10 + i % 90), timestamp=at,
                )
            )  # fmt: skip
        if i % 50 == 0:
            events.append(
                Conversion(experiment=experiment, metric="errors", subject=subject, timestamp=at)
            )
    for i in range(450):
        variant = "control" if i % 3 else "treatment"  # 2:1 against 1:1 weights
        events.append(Exposure(experiment=srm, subject=f"s{i}", variant=variant, timestamp=now))
    for start in range(0, len(events), 1000):
        recorded = await engine.record_events(project, events[start : start + 1000])
        assert not recorded.rejected, recorded.rejected
    keys, ids = {}, {}
    for role in (Role.ADMIN, Role.DEVELOPER, Role.ANALYST, Role.VIEWER):
        key, secret = await service.create_key(
            SYSTEM_KEY, role=role, project=project, name=f"{role.value.lower()} person"
        )
        keys[role], ids[role] = secret, key.id
    _, global_admin = await service.create_key(
        SYSTEM_KEY, role=Role.ADMIN, project=None, name="global admin"
    )
    return Seeded(project, keys, ids, experiment, srm, draft, flag, global_admin)


# --- the Quart test client ------------------------------------------------------------


@pytest.fixture
async def console_engine(module_dsn: str) -> AsyncIterator[Engine]:
    async with assay.open_engine(engine_config(module_dsn), load_entry_points=False) as engine:
        yield engine


@pytest.fixture
async def seeded(console_engine: Engine) -> Seeded:
    return await seed(console_engine)


@pytest.fixture
def app_client(console_engine: Engine) -> Any:
    return create_app(console_engine).test_client()


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF field in the page"
    return match.group(1)


async def sign_in(client: Any, secret: str) -> Any:
    form = await client.get("/console/sign-in")
    token = csrf_of(await form.get_data(as_text=True))
    return await client.post("/console/sign-in", form={"csrf": token, "api_key": secret})


# --- a real server, for the browser ---------------------------------------------------


@dataclass
class Live:
    base: str
    seeded: Seeded


def _run_server(dsn: str, ready: queue.Queue[Any], stop: threading.Event) -> None:
    async def main() -> None:
        config = engine_config(dsn)
        async with assay.open_engine(config, load_entry_points=False) as engine:
            seeded = await seed(engine)
            async with trio.open_nursery() as nursery:
                port = await nursery.start(lambda task_status: serve(
                    engine, host="127.0.0.1", port=0, task_status=task_status
                ))  # fmt: skip
                ready.put((port, seeded))
                while not stop.is_set():  # noqa: ASYNC110
                    await trio.sleep(0.05)
                nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    except BaseException as exc:
        ready.put(exc)
        raise


@pytest.fixture(scope="module")
def live(module_dsn: str) -> Iterator[Live]:
    ready: queue.Queue[Any] = queue.Queue()
    stop = threading.Event()
    thread = threading.Thread(target=_run_server, args=(module_dsn, ready, stop), daemon=True)
    thread.start()
    answer = ready.get(timeout=120)
    if isinstance(answer, BaseException):
        raise answer
    port, seeded = answer
    try:
        yield Live(base=f"http://127.0.0.1:{port}", seeded=seeded)
    finally:
        stop.set()
        thread.join(30)
