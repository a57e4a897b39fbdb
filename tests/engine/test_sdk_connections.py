"""SDK connections on both stores: the store's contract (round trips, client keys unique,
revisions, rollback, change notification), the service (access, audit without the
decryption key, names, encryption keys, revocation) and an engine's read of its own writes.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import msgspec
import pytest
import trio

import assay
from assay.engine import (
    SYSTEM_KEY,
    ConfigService,
    Conflict,
    Engine,
    EngineConfig,
    NotFound,
    PermissionDenied,
    ProjectSpec,
    Role,
    SdkConnection,
    SdkConnectionSpec,
    Store,
    ValidationFailed,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
P = "shop"


def connection(cid: str, project_id: str = "prj_a", **kw: object) -> SdkConnection:
    fields: dict[str, object] = {"client_key": f"sdk-{cid}", "name": cid, **kw}
    return SdkConnection(id=cid, project_id=project_id, created_at=T0, updated_at=T0, **fields)  # type: ignore[arg-type]


# --- the store's contract ---------------------------------------------------------------


async def test_connections_round_trip_and_list_by_project_and_id(store: Store) -> None:
    c = connection("sdk_b", encrypt=True, decryption_key="k", evaluation="remote")
    async with store.transaction() as tx:
        await tx.insert_connection(c)
        await tx.insert_connection(connection("sdk_a"))
        await tx.insert_connection(connection("sdk_c", project_id="prj_other"))
    async with store.read() as tx:
        assert await tx.get_connection("sdk_b") == c
        assert await tx.get_connection("missing") is None
        listed = await tx.list_connections("prj_a", after=None, limit=10)
        assert [x.id for x in listed] == ["sdk_a", "sdk_b"]
        assert [x.id for x in await tx.list_connections("prj_a", after="sdk_a", limit=10)] == [
            "sdk_b"
        ]
        assert [x.id for x in await tx.list_connections("prj_a", after=None, limit=1)] == ["sdk_a"]


async def test_client_keys_and_ids_are_unique(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.insert_connection(connection("sdk_a"))
        with pytest.raises(Conflict) as same_key:
            await tx.insert_connection(connection("sdk_b", client_key="sdk-sdk_a"))
        assert same_key.value.code == "already_exists"
        with pytest.raises(Conflict):
            await tx.insert_connection(connection("sdk_a", client_key="sdk-other"))
        await tx.insert_connection(connection("sdk_b"))
        taken = msgspec.structs.replace(connection("sdk_b"), client_key="sdk-sdk_a", revision=2)
        with pytest.raises(Conflict) as moved:
            await tx.update_connection(taken, expected_revision=1)
        assert moved.value.code == "already_exists"
    async with store.read() as tx:
        assert [c.id for c in await tx.list_connections("prj_a", after=None, limit=9)] == [
            "sdk_a",
            "sdk_b",
        ]


async def test_updates_check_the_revision(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.insert_connection(connection("sdk_a"))
    changed = msgspec.structs.replace(connection("sdk_a"), allow_exposures=True, revision=2)
    async with store.transaction() as tx:
        with pytest.raises(Conflict) as stale:
            await tx.update_connection(changed, expected_revision=5)
        assert stale.value.code == "revision_mismatch"
        with pytest.raises(NotFound):
            await tx.update_connection(connection("nope"), expected_revision=1)
        await tx.update_connection(changed, expected_revision=1)
    async with store.read() as tx:
        assert await tx.get_connection("sdk_a") == changed


async def test_a_failed_transaction_keeps_no_connection(store: Store) -> None:
    async def fail() -> None:
        async with store.transaction() as tx:
            await tx.insert_connection(connection("sdk_a"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await fail()
    async with store.read() as tx:
        assert await tx.get_connection("sdk_a") is None
    assert (await store.load_config()).sdk_connections == []


async def test_load_config_carries_active_connections_and_changes_are_announced(
    store: Store, nursery: trio.Nursery
) -> None:
    calls = 0
    changed = trio.Event()

    def on_change(change: int | None) -> None:
        nonlocal calls, changed
        calls += 1
        changed.set()
        changed = trio.Event()

    nursery.start_soon(store.watch_config, on_change)
    with trio.fail_after(5):
        while calls < 1:
            await changed.wait()
    async with store.transaction() as tx:
        await tx.insert_connection(connection("sdk_a"))
        await tx.insert_connection(connection("sdk_b", revoked_at=T0))
    with trio.fail_after(5):
        while calls < 2:
            await changed.wait()
    state = await store.load_config()
    assert [c.id for c in state.sdk_connections] == ["sdk_a"]


# --- the service --------------------------------------------------------------------


@pytest.fixture
async def service(store: Store) -> ConfigService:
    service = ConfigService(store)
    await service.create_project(SYSTEM_KEY, ProjectSpec(key=P))
    await service.create_project(SYSTEM_KEY, ProjectSpec(key="other"))
    return service


async def test_create_makes_a_public_key_and_an_aes_key_when_encrypting(
    service: ConfigService,
) -> None:
    plain = await service.create_connection(SYSTEM_KEY, P, SdkConnectionSpec(name="web"))
    assert plain.client_key.startswith("sdk-")
    assert len(plain.client_key) >= 20
    assert plain.decryption_key is None
    assert plain.evaluation == "local"
    secret = await service.create_connection(
        SYSTEM_KEY, P, SdkConnectionSpec(name="app", encrypt=True)
    )
    assert secret.decryption_key is not None
    assert len(base64.b64decode(secret.decryption_key)) == 16
    assert secret.client_key != plain.client_key


async def test_changes_are_audited_without_the_decryption_key(service: ConfigService) -> None:
    c = await service.create_connection(SYSTEM_KEY, P, SdkConnectionSpec(encrypt=True))
    updated = await service.update_connection(
        SYSTEM_KEY, P, c.id, {"allow_exposures": True, "evaluation": "remote"}
    )
    assert updated.revision == 2
    assert updated.decryption_key == c.decryption_key
    unchanged = await service.update_connection(SYSTEM_KEY, P, c.id, {"allow_exposures": True})
    assert unchanged.revision == 2
    revoked = await service.revoke_connection(SYSTEM_KEY, P, c.id)
    assert not revoked.active
    assert (await service.revoke_connection(SYSTEM_KEY, P, c.id)).revision == revoked.revision
    page = await service.list_audit(SYSTEM_KEY, P, resource_kind="sdk_connection")
    assert [e.action for e in page.items] == [
        "sdk_connection.revoke",
        "sdk_connection.update",
        "sdk_connection.create",
    ]
    encoded = msgspec.json.encode(page.items)
    assert c.decryption_key is not None
    assert c.decryption_key.encode() not in encoded
    assert page.items[1].before["allow_exposures"] is False
    assert page.items[1].after["allow_exposures"] is True
    with pytest.raises(Conflict) as exc:
        await service.update_connection(SYSTEM_KEY, P, c.id, {"name": "again"})
    assert exc.value.code == "connection_revoked"


async def test_encryption_on_makes_a_key_and_off_drops_it(service: ConfigService) -> None:
    c = await service.create_connection(SYSTEM_KEY, P, SdkConnectionSpec())
    on = await service.update_connection(SYSTEM_KEY, P, c.id, {"encrypt": True})
    assert on.decryption_key is not None
    assert on.client_key == c.client_key
    off = await service.update_connection(SYSTEM_KEY, P, c.id, {"encrypt": False})
    assert off.decryption_key is None


async def test_names_are_unique_among_active_connections(service: ConfigService) -> None:
    first = await service.create_connection(SYSTEM_KEY, P, SdkConnectionSpec(name="web"))
    with pytest.raises(Conflict) as exc:
        await service.create_connection(SYSTEM_KEY, P, SdkConnectionSpec(name="web"))
    assert exc.value.code == "already_exists"
    await service.create_connection(SYSTEM_KEY, "other", SdkConnectionSpec(name="web"))
    await service.revoke_connection(SYSTEM_KEY, P, first.id)
    await service.create_connection(SYSTEM_KEY, P, SdkConnectionSpec(name="web"))


async def test_bad_input_is_refused_with_a_code(service: ConfigService) -> None:
    c = await service.create_connection(SYSTEM_KEY, P, SdkConnectionSpec())
    for patch in ({"evaluation": "sometimes"}, {"name": ""}, {"client_key": "sdk-mine"}):
        with pytest.raises(ValidationFailed):
            await service.update_connection(SYSTEM_KEY, P, c.id, patch)
    with pytest.raises(ValidationFailed):
        await service.create_connection(SYSTEM_KEY, P, SdkConnectionSpec(name=""))
    with pytest.raises(NotFound):
        await service.get_connection(SYSTEM_KEY, "other", c.id)
    with pytest.raises(Conflict) as stale:
        await service.update_connection(SYSTEM_KEY, P, c.id, {"name": "x"}, expected_revision=7)
    assert stale.value.code == "revision_mismatch"


async def test_who_may_manage_and_who_may_read(service: ConfigService) -> None:
    c = await service.create_connection(SYSTEM_KEY, P, SdkConnectionSpec())
    keys = {}
    for role in Role:
        keys[role], _ = await service.create_key(SYSTEM_KEY, role=role, project=P)
    developer = keys[Role.DEVELOPER]
    made = await service.create_connection(developer, None, SdkConnectionSpec(name="dev"))
    await service.update_connection(developer, None, made.id, {"allow_exposures": True})
    for role in (Role.ANALYST, Role.VIEWER):
        assert (await service.get_connection(keys[role], None, c.id)).id == c.id
        with pytest.raises(PermissionDenied):
            await service.create_connection(keys[role], None, SdkConnectionSpec(name="x"))
        with pytest.raises(PermissionDenied):
            await service.revoke_connection(keys[role], None, c.id)
    with pytest.raises(NotFound):  # an SDK key reads nothing, so it is told nothing is there
        await service.list_connections(keys[Role.SDK], None)
    other_admin, _ = await service.create_key(SYSTEM_KEY, role=Role.ADMIN, project="other")
    with pytest.raises(NotFound):
        await service.get_connection(other_admin, P, c.id)


async def test_an_archived_project_refuses_new_connections(service: ConfigService) -> None:
    c = await service.create_connection(SYSTEM_KEY, P, SdkConnectionSpec())
    await service.set_project_archived(SYSTEM_KEY, P, True)
    with pytest.raises(Conflict) as exc:
        await service.create_connection(SYSTEM_KEY, P, SdkConnectionSpec(name="late"))
    assert exc.value.code == "project_archived"
    # Revoking stays possible: shutting a door is never refused.
    assert not (await service.revoke_connection(SYSTEM_KEY, P, c.id)).active


# --- read your writes -------------------------------------------------------------------


@pytest.fixture
async def engine(store_dsn: str | None) -> AsyncIterator[Engine]:
    config = (
        EngineConfig(store="memory") if store_dsn is None else EngineConfig(database_url=store_dsn)
    )
    async with assay.open_engine(config, load_entry_points=False) as engine:
        yield engine


async def test_the_engine_serves_its_own_changes_at_once(engine: Engine) -> None:
    service = engine.service
    await service.create_project(SYSTEM_KEY, ProjectSpec(key=P))
    c = await service.create_connection(SYSTEM_KEY, P, SdkConnectionSpec())
    assert engine.snapshot.sdk_connections[c.client_key] == c
    updated = await service.update_connection(SYSTEM_KEY, P, c.id, {"evaluation": "remote"})
    assert engine.snapshot.sdk_connections[c.client_key].evaluation == "remote"
    assert updated.revision == 2
    await service.revoke_connection(SYSTEM_KEY, P, c.id)
    assert c.client_key not in engine.snapshot.sdk_connections


async def test_another_process_sees_changes_through_the_change_feed(pg_dsn: str) -> None:
    config = EngineConfig(database_url=pg_dsn)
    async with (
        assay.open_engine(config, load_entry_points=False) as writer,
        assay.open_engine(config, load_entry_points=False) as reader,
    ):
        await writer.service.create_project(SYSTEM_KEY, ProjectSpec(key=P))
        c = await writer.service.create_connection(SYSTEM_KEY, P, SdkConnectionSpec())
        with trio.fail_after(5):
            while c.client_key not in reader.snapshot.sdk_connections:  # noqa: ASYNC110
                await trio.sleep(0.01)
        await writer.service.revoke_connection(SYSTEM_KEY, P, c.id)
        with trio.fail_after(5):
            while c.client_key in reader.snapshot.sdk_connections:  # noqa: ASYNC110
                await trio.sleep(0.01)
