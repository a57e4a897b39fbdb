"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from assay.adapters.http import create_app
from assay.engine._core._snapshot import EMPTY_SNAPSHOT


class EngineView:
    """The engine as the app sees it, with some attributes replaced."""

    def __init__(self, engine: Any, **replaced: Any) -> None:
        self._engine = engine
        self._replaced = replaced

    def __getattr__(self, name: str) -> Any:
        return self._replaced.get(name, getattr(self._engine, name))


class BrokenStore:
    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def get_key_by_hash(self, secret_hash: str) -> Any:
        raise ConnectionError("the database went away")


async def test_health_needs_no_key(anonymous) -> None:
    answer = await anonymous.get("/health")
    assert (answer.status, answer.body) == (200, {"status": "ok"})


async def test_ready_when_a_snapshot_is_published(anonymous, engine) -> None:
    answer = await anonymous.get("/ready")
    assert answer.status == 200
    assert answer.body["status"] == "ready"
    # The engine may publish again right after (its change feed starting up), never before.
    assert 0 < answer.body["snapshot_version"] <= engine.snapshot.version


async def test_not_ready_before_the_first_snapshot(engine) -> None:
    app = create_app(EngineView(engine, snapshot=EMPTY_SNAPSHOT))  # type: ignore[arg-type]
    response = await app.test_client().get("/ready")
    assert response.status_code == 503
    assert (await response.get_json())["error"]["code"] == "not_ready"
    # Liveness does not depend on readiness.
    assert (await app.test_client().get("/health")).status_code == 200


async def test_not_ready_when_the_store_fails(engine) -> None:
    app = create_app(EngineView(engine, store=BrokenStore(engine.store)))  # type: ignore[arg-type]
    response = await app.test_client().get("/ready")
    assert response.status_code == 503
    assert (await response.get_json())["error"]["code"] == "store_unavailable"
