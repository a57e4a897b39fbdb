"""Fixtures for the HTTP API tests: a real PostgreSQL engine, the Quart test client, keys.

Each test module shares one migrated database (``module_dsn``), because pytest-trio runs
async fixtures per test: the engine is reopened per test (a few tens of milliseconds) on
the same database, and tests keep out of each other's way with unique project keys.
Tests that need a database to themselves use ``pg_dsn``.
"""

from __future__ import annotations

import itertools
import string
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

import assay
from assay.adapters.http import create_app
from assay.engine import (
    SYSTEM_KEY,
    ApiKey,
    AuditEntry,
    ConfigState,
    Engine,
    EngineConfig,
    Experiment,
    ExperimentRule,
    ExperimentSpec,
    Flag,
    FlagSpec,
    Layer,
    LayerSpec,
    Metric,
    MetricSpec,
    ProjectSpec,
    Role,
    SdkConnectionSpec,
    Segment,
    SegmentSpec,
    Transition,
    Variant,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from quart.typing import TestClientProtocol

    from assay.adapters.embedded import EmbeddedPostgres

BODY_LIMIT = 4096
"""The engines here refuse bodies over 4 KiB, so oversize bodies stay cheap to send."""

_counter = itertools.count()


def unique(prefix: str) -> str:
    """A key no other test in the session uses."""
    return f"{prefix}-{next(_counter)}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def module_dsn(embedded_pg: EmbeddedPostgres, pg_template: str) -> Iterator[str]:
    """A migrated database shared by the tests of one module."""
    name = f"http_{uuid.uuid4().hex[:16]}"
    embedded_pg.create_database(name, template=pg_template)
    yield embedded_pg.dsn_for(name)
    embedded_pg.drop_database(name)


def engine_config(dsn: str) -> EngineConfig:
    return EngineConfig(database_url=dsn, max_body_bytes=BODY_LIMIT, pool_size=4)


@pytest.fixture
async def engine(module_dsn: str) -> AsyncIterator[Engine]:
    async with assay.open_engine(engine_config(module_dsn), load_entry_points=False) as engine:
        yield engine


@pytest.fixture
def client(engine: Engine) -> TestClientProtocol:
    return create_app(engine).test_client()


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str]
    """Lower-cased names."""

    @property
    def code(self) -> str | None:
        """The error code of an error response."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            code = self.body["error"].get("code")
            return code if isinstance(code, str) else None
        return None


class Api:
    """The test client with a bearer key and JSON decoding of answers."""

    def __init__(self, client: TestClientProtocol, secret: str | None = None) -> None:
        self.client = client
        self.secret = secret

    def as_key(self, secret: str | None) -> Api:
        return Api(self.client, secret)

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        all_headers = dict(headers or {})
        if self.secret is not None:
            all_headers.setdefault("Authorization", f"Bearer {self.secret}")
        if json is not None:
            data = msgspec.json.encode(json)
        if data is not None:
            # Quart's test client sends none; a real client does, and the server's size
            # check starts from it.
            all_headers.setdefault("Content-Length", str(len(data)))
        response = await self.client.open(path, method=method, data=data, headers=all_headers)
        return await self.wrap(response)

    @staticmethod
    async def wrap(response: Any) -> Response:
        raw = await response.get_data()
        body: Any = raw
        if response.content_type == "application/json":
            body = msgspec.json.decode(raw) if raw else None
        elif raw and response.status_code != 204:
            body = raw.decode()
        headers = {name.lower(): value for name, value in response.headers.items()}
        return Response(response.status_code, body, headers)

    async def get(self, path: str, **kwargs: Any) -> Response:
        return await self.call("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Response:
        return await self.call("POST", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> Response:
        return await self.call("PATCH", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> Response:
        return await self.call("DELETE", path, **kwargs)


class World:
    """Builds state through the service as the system key: fast, and not what these
    tests test. Also reads everything the store holds, to prove a refused request wrote
    nothing."""

    def __init__(self, engine: Engine, client: TestClientProtocol) -> None:
        self.engine = engine
        self.client = client
        self.unique = unique
        self.system_key = SYSTEM_KEY

    def api(self, secret: str | None = None) -> Api:
        return Api(self.client, secret)

    async def key(self, role: Role, project: str | None = None) -> tuple[ApiKey, str]:
        return await self.engine.service.create_key(SYSTEM_KEY, role=role, project=project)

    async def api_as(self, role: Role, project: str | None = None) -> Api:
        _, secret = await self.key(role, project)
        return self.api(secret)

    async def project(self, key: str | None = None) -> str:
        key = key or unique("prj")
        await self.engine.service.create_project(SYSTEM_KEY, ProjectSpec(key=key))
        return key

    async def flag(self, project: str, key: str | None = None) -> str:
        key = key or unique("flag")
        await self.engine.service.create_object(SYSTEM_KEY, Flag, project, FlagSpec(key=key))
        return key

    async def layer(self, project: str) -> str:
        key = unique("layer")
        await self.engine.service.create_object(SYSTEM_KEY, Layer, project, LayerSpec(key=key))
        return key

    async def metric(self, project: str) -> str:
        key = unique("metric")
        await self.engine.service.create_object(SYSTEM_KEY, Metric, project, MetricSpec(key=key))
        return key

    async def segment(self, project: str) -> str:
        key = unique("segment")
        await self.engine.service.create_object(
            SYSTEM_KEY, Segment, project, SegmentSpec(key=key, values=["u1"])
        )
        return key

    async def experiment(self, project: str, *transitions: Transition) -> str:
        """A two-variant experiment, taken through ``transitions`` from DRAFT."""
        key = unique("exp")
        spec = ExperimentSpec(
            key=key,
            variants=[Variant(key="control", value=False), Variant(key="treatment", value=True)],
        )
        await self.engine.service.create_object(SYSTEM_KEY, Experiment, project, spec)
        for transition in transitions:
            await self.engine.service.transition_experiment(SYSTEM_KEY, project, key, transition)
        return key

    async def admin_create_flag(self, project: str, flag: str, experiment: str) -> None:
        """A boolean flag whose one rule is ``experiment``."""
        await self.engine.service.create_object(
            SYSTEM_KEY,
            Flag,
            project,
            FlagSpec(key=flag, rules=[ExperimentRule(experiment=experiment)]),
        )

    async def decision(self, project: str) -> str:
        """The id of a durably recorded decision (an assignment) in ``project``."""
        experiment = await self.experiment(project, Transition.START)
        flag = unique("flag")
        await self.engine.service.create_object(
            SYSTEM_KEY,
            Flag,
            project,
            FlagSpec(key=flag, rules=[ExperimentRule(experiment=experiment)]),
        )
        await self.engine.refresh()
        decision = await self.engine.adecide(flag, "subject-1", project=project)
        assert decision.reason == "experiment_assigned", decision
        return decision.decision_id

    async def stored_state(self) -> StoredState:
        return await stored_state(self.engine)

    def scene(self, project: str) -> Scene:
        return Scene(self, project)


class Scene:
    """Fills ``{placeholders}`` in a request template with objects made for it, in one
    project: {project}, {archived_project} (the project, archived), {fresh} (an unused
    key), {flag}, {layer}, {metric}, {segment}, {draft}, {running}, {paused}, {completed}
    (experiments in that status), {key_id} (a VIEWER key of the project) and
    {connection} (an SDK connection's id)."""

    def __init__(self, world: World, project: str) -> None:
        self.world = world
        self.project = project

    async def fill(self, template: Any) -> Any:
        if isinstance(template, dict):
            return {k: await self.fill(v) for k, v in template.items()}
        if not isinstance(template, str):
            return template
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
        values = {name: await self._value(name) for name in names}
        return template.format(**values)

    async def _value(self, name: str) -> str:
        world, project = self.world, self.project
        match name:
            case "project":
                return project
            case "archived_project":
                await world.engine.service.set_project_archived(SYSTEM_KEY, project, True)
                return project
            case "fresh":
                return unique("new")
            case "flag":
                return await world.flag(project)
            case "layer":
                return await world.layer(project)
            case "metric":
                return await world.metric(project)
            case "segment":
                return await world.segment(project)
            case "draft":
                return await world.experiment(project)
            case "running":
                return await world.experiment(project, Transition.START)
            case "paused":
                return await world.experiment(project, Transition.START, Transition.PAUSE)
            case "completed":
                return await world.experiment(project, Transition.START, Transition.COMPLETE)
            case "key_id":
                key, _ = await world.key(Role.VIEWER, project)
                return key.id
            case "decision":
                return await world.decision(project)
            case "connection":
                connection = await world.engine.service.create_connection(
                    SYSTEM_KEY, project, SdkConnectionSpec(name=unique("web"))
                )
                return connection.id
        raise AssertionError(f"unknown placeholder {{{name}}}")


@pytest.fixture
def world(engine: Engine, client: TestClientProtocol) -> World:
    return World(engine, client)


@pytest.fixture
async def admin(world: World) -> Api:
    """The API as an ADMIN key not scoped to a project."""
    return await world.api_as(Role.ADMIN)


@pytest.fixture
def anonymous(world: World) -> Api:
    return world.api()


# --- what the database holds, to prove a refused request wrote nothing -----------------


class StoredState(msgspec.Struct, frozen=True):
    audit: list[AuditEntry]
    config: ConfigState
    keys: list[ApiKey]


async def stored_state(engine: Engine) -> StoredState:
    """Everything the store holds: the full audit log, every project, flag, experiment,
    layer and metric, and every key."""
    config = await engine.store.load_config()
    async with engine.store.transaction() as tx:
        audit: list[AuditEntry] = []
        before: int | None = None
        while batch := await tx.list_audit(
            project_id=None, resource_kind=None, resource_key=None, before_id=before, limit=500
        ):
            audit += batch
            before = batch[-1].id
        keys: list[ApiKey] = []
        after: str | None = None
        while batch_keys := await tx.list_keys(None, after=after, limit=500):
            keys += batch_keys
            after = batch_keys[-1].id
    return StoredState(audit=audit, config=config, keys=keys)


@pytest.fixture
def open_test_engine() -> Any:
    """``open_test_engine(dsn)``: an engine on ``dsn`` configured like the others here."""

    def open_on(dsn: str) -> Any:
        return assay.open_engine(engine_config(dsn), load_entry_points=False)

    return open_on
