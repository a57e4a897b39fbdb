"""The Store contract: every test here runs against each adapter (memory, postgres), so
the two cannot drift apart."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import trio

from assay.adapters.postgres._decisions import UNNEST_MAX
from assay.engine._core import StickyAssignment
from assay.engine._errors import Conflict, NotFound
from assay.engine._model import (
    ApiKey,
    AuditEntry,
    Experiment,
    ExperimentRule,
    ExperimentStatus,
    Flag,
    FlagType,
    ForceRule,
    Layer,
    LayerRange,
    Metric,
    Prerequisite,
    Project,
    Role,
    RolloutRule,
    Segment,
    Variant,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from assay.engine._ports import Store, StoreTransaction

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class Boom(Exception):
    """Raised inside a transaction to make it roll back."""


def project(key: str, **kw: Any) -> Project:
    return Project(id=f"prj_{key}", key=key, created_at=T0, updated_at=T0, **kw)


def flag(project_id: str, key: str, **kw: Any) -> Flag:
    return Flag(
        id=f"flg_{project_id}_{key}",
        project_id=project_id,
        key=key,
        created_at=T0,
        updated_at=T0,
        **kw,
    )


def metric(project_id: str, key: str) -> Metric:
    return Metric(
        id=f"met_{project_id}_{key}", project_id=project_id, key=key, created_at=T0, updated_at=T0
    )


def api_key(key_id: str, project_id: str | None = None, role: Role = Role.DEVELOPER) -> ApiKey:
    return ApiKey(
        id=key_id,
        name=f"key {key_id}",
        role=role,
        project_id=project_id,
        prefix=f"ak_{key_id[-4:]}",
        secret_hash=f"hash-of-{key_id}",
        created_at=T0,
        created_by="key_admin",
    )


def audit(
    project_id: str | None, kind: str, key: str, action: str = "x.update", **kw: Any
) -> AuditEntry:
    return AuditEntry(
        project_id=project_id,
        actor="key_admin",
        at=T0,
        action=action,
        resource_kind=kind,
        resource_id=f"id_{key}",
        resource_key=key,
        **kw,
    )


async def keys_of(store: Store, kind: type[Any], project_id: str | None) -> list[str]:
    async with store.transaction() as tx:
        return [o.key for o in await tx.list(kind, project_id, after=None, limit=1000)]


async def write_then_fail(
    store: Store, work: Callable[[StoreTransaction], Awaitable[None]]
) -> None:
    async with store.transaction() as tx:
        await work(tx)
        raise Boom


class Calls:
    """Counts ``on_change`` calls, keeps the changes they name and lets a test wait for
    a given count."""

    def __init__(self) -> None:
        self.count = 0
        self.changes: list[int | None] = []
        self._changed = trio.Event()

    def __call__(self, change: int | None) -> None:
        self.count += 1
        self.changes.append(change)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, count: int) -> None:
        with trio.fail_after(5):
            while self.count < count:
                await self._changed.wait()


# --- configuration objects ------------------------------------------------------------


async def test_insert_then_get_round_trips_every_kind(store: Store) -> None:
    p = project("shop", name="Shop", description="the web shop")
    f = flag(
        p.id,
        "checkout",
        type=FlagType.JSON,
        default_value={"layout": "classic", "sizes": [1, 2.5, None], "ünï": "cødé"},
        prerequisites=[Prerequisite(flag="login", value="on")],
        rules=[
            ForceRule(condition={"country": {"$in": ["FR", "DE"]}}, value={"layout": "eu"}),
            RolloutRule(coverage=0.25, value={"layout": "new"}, seed="s1", hash_version=1),
            ExperimentRule(experiment="exp1"),
        ],
    )
    e = Experiment(
        id="exp_1",
        project_id=p.id,
        key="exp1",
        variants=[Variant(key="a", value=1), Variant(key="b", value=2, weight=3.0)],
        layer=LayerRange(layer="main", start=0.0, end=0.5),
        status=ExperimentStatus.RUNNING,
        started_at=T0 + timedelta(hours=1),
        revision=4,
        created_at=T0,
        updated_at=T0 + timedelta(hours=1),
    )
    layer = Layer(id="lay_1", project_id=p.id, key="main", created_at=T0, updated_at=T0)
    m = metric(p.id, "revenue")
    ids = Segment(
        id="seg_1",
        project_id=p.id,
        key="beta",
        attribute="email",
        values=["a@x", 7, 2.5, True, None],
        created_at=T0,
        updated_at=T0,
    )
    cond = Segment(
        id="seg_2",
        project_id=p.id,
        key="eu",
        type="condition",
        condition={"country": {"$in": ["FR"]}, "$savedGroup": {"id": "beta"}},
        created_at=T0,
        updated_at=T0,
    )

    async with store.transaction() as tx:
        for obj in (p, f, e, layer, m, ids, cond):
            await tx.insert(obj)

    async with store.transaction() as tx:
        assert await tx.get(Project, None, "shop") == p
        assert await tx.get(Flag, p.id, "checkout") == f
        assert await tx.get(Experiment, p.id, "exp1") == e
        assert await tx.get(Layer, p.id, "main") == layer
        assert await tx.get(Metric, p.id, "revenue") == m
        assert await tx.get(Segment, p.id, "beta") == ids
        assert await tx.get(Segment, p.id, "eu") == cond
        # Lookups are by kind and project as well as key.
        assert await tx.get(Flag, p.id, "nope") is None
        assert await tx.get(Flag, "prj_other", "checkout") is None
        assert await tx.get(Metric, p.id, "checkout") is None


async def test_same_key_may_exist_per_project_and_per_kind(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.insert(project("a"))
        await tx.insert(project("b"))
        await tx.insert(flag("prj_a", "same"))
        await tx.insert(flag("prj_b", "same"))
        await tx.insert(metric("prj_a", "same"))

    assert await keys_of(store, Flag, "prj_a") == ["same"]
    assert await keys_of(store, Flag, "prj_b") == ["same"]
    assert await keys_of(store, Metric, "prj_a") == ["same"]
    assert await keys_of(store, Metric, "prj_b") == []


async def test_list_orders_by_key_bytewise_and_paginates(store: Store) -> None:
    # Upper case, digits and punctuation: the order must be the same in Python and SQL.
    keys = ["b", "B", "a", "a-1", "a.1", "a_1", "A9", "0", "z", "Z", "aa", "a1"]
    shuffled = random.Random(7).sample(keys, len(keys))
    async with store.transaction() as tx:
        await tx.insert(project("p"))
        await tx.insert(project("q"))
        for key in shuffled:
            await tx.insert(flag("prj_p", key))
        await tx.insert(flag("prj_q", "other"))
        await tx.insert(metric("prj_p", "m"))

    assert await keys_of(store, Flag, "prj_p") == sorted(keys)

    pages: list[list[str]] = []
    after: str | None = None
    async with store.transaction() as tx:
        while True:
            page = await tx.list(Flag, "prj_p", after=after, limit=5)
            pages.append([f.key for f in page])
            if len(page) < 5:
                break
            after = page[-1].key
    assert pages == [sorted(keys)[:5], sorted(keys)[5:10], sorted(keys)[10:]]

    async with store.transaction() as tx:
        assert [f.key for f in await tx.list(Flag, "prj_p", after="a_1", limit=2)] == ["aa", "b"]
        assert await tx.list(Flag, "prj_p", after="z", limit=10) == []
        assert [p.key for p in await tx.list(Project, None, after=None, limit=10)] == ["p", "q"]
        assert [p.key for p in await tx.list(Project, None, after="p", limit=10)] == ["q"]


async def test_duplicate_insert_conflicts_and_the_transaction_goes_on(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.insert(project("p"))
        await tx.insert(flag("prj_p", "f"))

    async with store.transaction() as tx:
        same_key = msgspec.structs.replace(flag("prj_p", "f"), id="flg_other")
        with pytest.raises(Conflict) as caught:
            await tx.insert(same_key)
        assert caught.value.code == "already_exists"
        same_id = msgspec.structs.replace(flag("prj_p", "f"), key="g")
        with pytest.raises(Conflict) as caught:
            await tx.insert(same_id)
        assert caught.value.code == "already_exists"
        # A conflict is an answer, not a broken transaction: later writes still commit.
        await tx.insert(flag("prj_p", "h"))

    assert await keys_of(store, Flag, "prj_p") == ["f", "h"]
    async with store.transaction() as tx:
        stored = await tx.get(Flag, "prj_p", "f")
    assert stored is not None
    assert stored.id == "flg_prj_p_f"


async def test_update_with_the_expected_revision_replaces_the_object(store: Store) -> None:
    original = flag("prj_p", "f", description="v1")
    async with store.transaction() as tx:
        await tx.insert(original)
    changed = msgspec.structs.replace(
        original, description="v2", enabled=False, revision=2, updated_at=T0 + timedelta(1)
    )
    async with store.transaction() as tx:
        await tx.update(changed, expected_revision=1)
    async with store.transaction() as tx:
        assert await tx.get(Flag, "prj_p", "f") == changed


async def test_update_with_a_stale_revision_conflicts_and_changes_nothing(store: Store) -> None:
    original = flag("prj_p", "f", description="v1", revision=3)
    async with store.transaction() as tx:
        await tx.insert(original)
    async with store.transaction() as tx:
        with pytest.raises(Conflict) as caught:
            await tx.update(
                msgspec.structs.replace(original, description="lost", revision=3),
                expected_revision=2,
            )
        assert caught.value.code == "revision_mismatch"
        assert await tx.get(Flag, "prj_p", "f") == original
    async with store.transaction() as tx:
        assert await tx.get(Flag, "prj_p", "f") == original


async def test_update_onto_another_objects_key_conflicts(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.insert(flag("prj_p", "a"))
        await tx.insert(flag("prj_p", "b"))
    async with store.transaction() as tx:
        moved = msgspec.structs.replace(flag("prj_p", "a"), key="b", revision=2)
        with pytest.raises(Conflict) as caught:
            await tx.update(moved, expected_revision=1)
        assert caught.value.code == "already_exists"
    assert await keys_of(store, Flag, "prj_p") == ["a", "b"]


async def test_update_or_delete_of_a_missing_object_is_not_found(store: Store) -> None:
    ghost = flag("prj_p", "ghost")
    async with store.transaction() as tx:
        with pytest.raises(NotFound):
            await tx.update(ghost, expected_revision=1)
        with pytest.raises(NotFound):
            await tx.delete(ghost, expected_revision=1)


async def test_delete_checks_the_revision_then_frees_the_key(store: Store) -> None:
    f = flag("prj_p", "f", revision=2)
    async with store.transaction() as tx:
        await tx.insert(f)
    async with store.transaction() as tx:
        with pytest.raises(Conflict) as caught:
            await tx.delete(f, expected_revision=1)
        assert caught.value.code == "revision_mismatch"
    assert await keys_of(store, Flag, "prj_p") == ["f"]

    async with store.transaction() as tx:
        await tx.delete(f, expected_revision=2)
        assert await tx.get(Flag, "prj_p", "f") is None
    async with store.transaction() as tx:
        assert await tx.get(Flag, "prj_p", "f") is None
        await tx.insert(msgspec.structs.replace(f, id="flg_new", revision=1))
    assert await keys_of(store, Flag, "prj_p") == ["f"]


async def test_a_transaction_reads_its_own_writes(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.insert(project("p"))
        assert await tx.get(Project, None, "p") == project("p")
        await tx.append_audit(audit("prj_p", "project", "p"))
        entries = await tx.list_audit(
            project_id="prj_p", resource_kind=None, resource_key=None, before_id=None, limit=5
        )
        assert [e.resource_key for e in entries] == ["p"]
        await tx.insert_key(api_key("key_1"))
        assert await tx.count_keys() == 1


async def test_an_exception_rolls_back_everything(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.insert(project("kept"))
        await tx.insert(flag("prj_kept", "doomed"))
        await tx.append_audit(audit("prj_kept", "project", "kept"))
        await tx.insert_key(api_key("key_kept"))
    before = await store.load_config()

    async def work(tx: StoreTransaction) -> None:
        await tx.insert(project("new"))
        await tx.update(
            msgspec.structs.replace(project("kept"), name="renamed", revision=2),
            expected_revision=1,
        )
        await tx.delete(flag("prj_kept", "doomed"), expected_revision=1)
        await tx.append_audit(audit("prj_new", "project", "new"))
        await tx.insert_key(api_key("key_new"))
        await tx.update_key(msgspec.structs.replace(api_key("key_kept"), revoked_at=T0))

    with pytest.raises(Boom):
        await write_then_fail(store, work)

    assert (await store.load_config()).content() == before.content()
    async with store.transaction() as tx:
        entries = await tx.list_audit(
            project_id=None, resource_kind=None, resource_key=None, before_id=None, limit=10
        )
        assert [e.resource_key for e in entries] == ["kept"]
        assert await tx.get_key("key_new") is None
        assert await tx.count_keys() == 1
        kept = await tx.get_key("key_kept")
    assert kept is not None
    assert kept.active
    assert await store.get_key_by_hash("hash-of-key_new") is None


async def test_a_cancelled_transaction_rolls_back(store: Store) -> None:
    with trio.move_on_after(0.05):
        async with store.transaction() as tx:
            await tx.insert(project("p"))
            await trio.sleep_forever()
    async with store.transaction() as tx:
        assert await tx.get(Project, None, "p") is None
        await tx.insert(project("p"))
    assert await keys_of(store, Project, None) == ["p"]


async def test_transactions_are_serialised(store: Store) -> None:
    order: list[str] = []
    first_inside = trio.Event()

    async def first() -> None:
        async with store.transaction() as tx:
            first_inside.set()
            await tx.insert(project("p"))
            await trio.sleep(0.2)
            order.append("first commits")

    async def second() -> None:
        await first_inside.wait()
        async with store.transaction() as tx:
            order.append("second enters")
            # It sees the first one's commit, so a check-then-write cannot race it.
            assert await tx.get(Project, None, "p") is not None

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first)
        nursery.start_soon(second)
    assert order == ["first commits", "second enters"]


# --- audit log ------------------------------------------------------------------------


async def test_audit_lists_newest_first_with_filters_and_pages(store: Store) -> None:
    entries = [
        audit("prj_a", "flag", "f1", action="flag.create", after={"key": "f1", "n": [1, 2]}),
        audit("prj_a", "flag", "f2"),
        audit("prj_b", "flag", "f1"),
        audit("prj_a", "experiment", "f1"),
        audit(None, "key", "key_1"),
        audit("prj_a", "flag", "f1", action="flag.update", before={"v": 1}, after={"v": 2}),
    ]
    async with store.transaction() as tx:
        for entry in entries[:3]:
            await tx.append_audit(entry)
    async with store.transaction() as tx:
        for entry in entries[3:]:
            await tx.append_audit(entry)

    async def listed(**filters: Any) -> list[AuditEntry]:
        args: dict[str, Any] = {
            "project_id": None,
            "resource_kind": None,
            "resource_key": None,
            "before_id": None,
            "limit": 100,
        }
        args.update(filters)
        async with store.transaction() as tx:
            return await tx.list_audit(**args)

    everything = await listed()
    ids = [e.id for e in everything]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == 6
    # Stored as given, with the id the store assigned.
    assert [msgspec.structs.replace(e, id=0) for e in everything] == entries[::-1]

    def keys(found: list[AuditEntry]) -> list[tuple[str | None, str, str]]:
        return [(e.project_id, e.resource_kind, e.resource_key) for e in found]

    assert keys(await listed(project_id="prj_a")) == [
        ("prj_a", "flag", "f1"),
        ("prj_a", "experiment", "f1"),
        ("prj_a", "flag", "f2"),
        ("prj_a", "flag", "f1"),
    ]
    assert keys(await listed(project_id="prj_a", resource_kind="flag", resource_key="f1")) == [
        ("prj_a", "flag", "f1"),
        ("prj_a", "flag", "f1"),
    ]
    assert keys(await listed(resource_kind="flag", resource_key="f1")) == [
        ("prj_a", "flag", "f1"),
        ("prj_b", "flag", "f1"),
        ("prj_a", "flag", "f1"),
    ]
    assert keys(await listed(resource_key="f1", resource_kind="experiment")) == [
        ("prj_a", "experiment", "f1")
    ]

    newest, older = await listed(project_id="prj_a", resource_key="f1", limit=2)
    assert newest.before == {"v": 1}
    assert newest.after == {"v": 2}
    assert older.resource_kind == "experiment"
    page = await listed(project_id="prj_a", resource_key="f1", before_id=older.id)
    assert len(page) == 1
    assert page[0].after == {"key": "f1", "n": [1, 2]}
    assert await listed(before_id=min(ids)) == []
    assert [e.id for e in await listed(before_id=ids[1], limit=2)] == ids[2:4]


# --- API keys -------------------------------------------------------------------------


async def test_api_keys_insert_get_list_and_count(store: Store) -> None:
    keys = [
        api_key("key_03", "prj_a"),
        api_key("key_01", None, Role.ADMIN),
        api_key("key_02", "prj_b", Role.SDK),
        api_key("key_04", "prj_a", Role.VIEWER),
    ]
    async with store.transaction() as tx:
        assert await tx.count_keys() == 0
        for key in keys:
            await tx.insert_key(key)

    async with store.transaction() as tx:
        assert await tx.count_keys() == 4
        assert await tx.get_key("key_02") == keys[2]
        assert await tx.get_key("key_99") is None
        all_ids = [k.id for k in await tx.list_keys(None, after=None, limit=10)]
        assert all_ids == ["key_01", "key_02", "key_03", "key_04"]
        assert [k.id for k in await tx.list_keys(None, after="key_01", limit=2)] == [
            "key_02",
            "key_03",
        ]
        assert await tx.list_keys("prj_a", after=None, limit=10) == [keys[0], keys[3]]
        assert await tx.list_keys("prj_a", after="key_03", limit=10) == [keys[3]]
        assert await tx.list_keys("prj_c", after=None, limit=10) == []

    assert await store.get_key_by_hash("hash-of-key_04") == keys[3]
    assert await store.get_key_by_hash("hash-of-nothing") is None


async def test_api_key_duplicates_conflict(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.insert_key(api_key("key_1"))
        with pytest.raises(Conflict) as caught:
            await tx.insert_key(msgspec.structs.replace(api_key("key_1"), secret_hash="other"))
        assert caught.value.code == "already_exists"
        with pytest.raises(Conflict) as caught:
            await tx.insert_key(
                msgspec.structs.replace(api_key("key_2"), secret_hash="hash-of-key_1")
            )
        assert caught.value.code == "already_exists"
        assert await tx.count_keys() == 1


async def test_api_key_revocation_is_stored(store: Store) -> None:
    key = api_key("key_1", "prj_a")
    async with store.transaction() as tx:
        await tx.insert_key(key)
    revoked = msgspec.structs.replace(key, revoked_at=T0 + timedelta(days=2))
    async with store.transaction() as tx:
        await tx.update_key(revoked)
        with pytest.raises(NotFound):
            await tx.update_key(api_key("key_missing"))

    found = await store.get_key_by_hash(key.secret_hash)
    assert found == revoked
    assert found is not None
    assert not found.active
    async with store.transaction() as tx:
        assert await tx.get_key("key_1") == revoked
        assert await tx.count_keys() == 1


# --- load_config and watch_config -----------------------------------------------------


async def test_load_config_returns_every_object_by_kind(store: Store) -> None:
    empty = await store.load_config()
    assert (empty.projects, empty.flags, empty.experiments, empty.layers, empty.metrics) == (
        [],
        [],
        [],
        [],
        [],
    )
    objects = [
        project("b"),
        project("a"),
        flag("prj_b", "f2"),
        flag("prj_a", "f1"),
        flag("prj_b", "f1"),
        metric("prj_a", "m"),
        Layer(id="lay_1", project_id="prj_a", key="l", created_at=T0, updated_at=T0),
        Experiment(id="exp_1", project_id="prj_b", key="e", created_at=T0, updated_at=T0),
        Segment(id="seg_1", project_id="prj_a", key="s", created_at=T0, updated_at=T0),
    ]
    async with store.transaction() as tx:
        for obj in objects:
            await tx.insert(obj)
        await tx.insert_key(api_key("key_1"))

    state = await store.load_config()
    assert state.projects == [project("a"), project("b")]
    assert sorted(state.flags, key=lambda f: (f.project_id, f.key)) == [
        flag("prj_a", "f1"),
        flag("prj_b", "f1"),
        flag("prj_b", "f2"),
    ]
    assert list(state.metrics) == [metric("prj_a", "m")]
    assert [layer.id for layer in state.layers] == ["lay_1"]
    assert [e.id for e in state.experiments] == ["exp_1"]
    assert [s.id for s in state.segments] == ["seg_1"]


async def test_watch_config_fires_after_commits_only(store: Store, nursery: trio.Nursery) -> None:
    calls = Calls()
    nursery.start_soon(store.watch_config, calls)
    # One call once the watch is established: whatever was committed before is reloaded.
    await calls.wait_for(1)

    async with store.transaction() as tx:
        await tx.insert(project("p"))
    await calls.wait_for(2)

    async def insert_q(tx: StoreTransaction) -> None:
        await tx.insert(project("q"))

    with pytest.raises(Boom):
        await write_then_fail(store, insert_q)
    # Neither a rolled-back change nor a commit without configuration changes fires.
    async with store.transaction() as tx:
        await tx.insert_key(api_key("key_1"))
        await tx.get(Project, None, "p")
    await trio.sleep(0.3)
    assert calls.count == 2

    async with store.transaction() as tx:
        await tx.update(
            msgspec.structs.replace(project("p"), name="P", revision=2), expected_revision=1
        )
    await calls.wait_for(3)
    async with store.transaction() as tx:
        await tx.delete(msgspec.structs.replace(project("p"), revision=2), expected_revision=2)
    await calls.wait_for(4)


async def test_a_load_holds_the_announced_changes_it_read_and_no_other(
    store: Store, nursery: trio.Nursery
) -> None:
    """What lets an engine skip reloading for a change it has (its own write): a load's
    horizon holds exactly the announced changes it read. A change still uncommitted while
    the load read is not held, though it commits before it is announced."""
    calls = Calls()
    nursery.start_soon(store.watch_config, calls)
    await calls.wait_for(1)
    assert calls.changes == [None]  # the watch began: nothing named, reload

    before = await store.load_config()
    async with store.transaction() as tx:
        await tx.insert(project("p"))
        during = await store.load_config()  # the insert is not committed yet
    await calls.wait_for(2)
    after = await store.load_config()
    change = calls.changes[1]
    assert change is not None
    assert before.horizon is not None
    assert not before.horizon.holds(change)
    assert during.horizon is not None
    assert not during.horizon.holds(change)
    assert [p.key for p in during.projects] == []
    assert after.horizon is not None
    assert after.horizon.holds(change)
    assert [p.key for p in after.projects] == ["p"]

    # A later change is another number, held only by loads after it.
    async with store.transaction() as tx:
        await tx.update(
            msgspec.structs.replace(project("p"), name="P", revision=2), expected_revision=1
        )
    await calls.wait_for(3)
    later = calls.changes[2]
    assert later is not None
    assert later != change
    assert not after.horizon.holds(later)
    assert (await store.load_config()).horizon.holds(later)  # type: ignore[union-attr]


async def test_reads_do_not_wait_for_a_writer_and_see_only_commits(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.insert(project("committed"))
    writer_inside = trio.Event()
    release_writer = trio.Event()

    async def slow_writer() -> None:
        async with store.transaction() as tx:
            await tx.insert(project("uncommitted"))
            writer_inside.set()
            await release_writer.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_writer)
        await writer_inside.wait()
        with trio.fail_after(5):  # functional: a read queued behind the writer would hang
            async with store.read() as tx:
                keys = [p.key for p in await tx.list(Project, None, after=None, limit=10)]
        assert keys == ["committed"]
        release_writer.set()
    async with store.read() as tx:
        keys = [p.key for p in await tx.list(Project, None, after=None, limit=10)]
    assert keys == ["committed", "uncommitted"]


# --- decision records ------------------------------------------------------------------


def _decision(i: int, **kw: Any) -> Any:
    from assay.engine._core import Decision, Reason

    values: list[Any] = [None, "blue", 3, 2.5, True, {"a": [1, "é"]}, ["x", None], "日本"]
    fields: dict[str, Any] = {
        "decision_id": f"dec_{i:06d}",
        "project_id": "prj_p",
        "flag": "color",
        "subject": f"user-{i}",
        "value": values[i % len(values)],
        "reason": Reason.DEFAULT,
        "snapshot_version": 7,
        "decided_at": 1_714_564_800.25 + i,
    }
    if i % 2:
        # Every optional field set on odd records, left at its default on even ones.
        fields |= {
            "variant": "treatment",
            "rule": "rules[0]",
            "reason": Reason.EXPERIMENT_ASSIGNED,
            "experiment": "exp",
            "experiment_reason": Reason.TARGETING_MISMATCH,
            "in_experiment": True,
            "hash_value": f"user-{i}",
            "flag_revision": 4,
        }
    return Decision(**(fields | kw))


# Sizes on both sides of the PostgreSQL adapter's switch from INSERT to COPY.
@pytest.mark.parametrize("size", [1, UNNEST_MAX, UNNEST_MAX + 1, 300])
async def test_decision_records_read_back_as_written(store: Store, size: int) -> None:
    decisions = [_decision(i) for i in range(size)]
    await store.record_decisions(decisions)
    for d in decisions:
        assert await store.get_decision(d.decision_id) == d
    assert await store.get_decision("dec_missing") is None


async def test_console_sessions_live_until_expiry_revocation_or_deletion(store: Store) -> None:
    from assay.engine._console_sessions import ConsoleSession

    suffix = random.getrandbits(48)
    live_key = api_key(f"key_sess_{suffix}", None, Role.ANALYST)
    other_key = api_key(f"key_sess2_{suffix}", None, Role.VIEWER)
    async with store.transaction() as tx:
        await tx.insert_key(live_key)
        await tx.insert_key(other_key)

    def session(name: str, key: ApiKey, expires_at: datetime) -> ConsoleSession:
        return ConsoleSession(
            token_hash=f"{name}-{suffix}",
            key_id=key.id,
            csrf=f"csrf-{name}",
            created_at=T0,
            expires_at=expires_at,
        )

    now = T0 + timedelta(minutes=10)
    soon = session("soon", live_key, now + timedelta(minutes=1))
    await store.create_console_session(soon, now=now)
    assert await store.get_console_session(soon.token_hash, now=now) == (soon, live_key)
    assert await store.get_console_session("nobody", now=now) is None
    # An expired session is never returned; the next sign-in purges its row.
    later = now + timedelta(minutes=1)
    assert await store.get_console_session(soon.token_hash, now=later) is None
    fresh = session("fresh", other_key, later + timedelta(hours=8))
    await store.create_console_session(fresh, now=later)
    assert await store.get_console_session(soon.token_hash, now=now) is None  # purged
    # The key comes back as now stored: revoked, the caller sees it.
    revoked = msgspec.structs.replace(other_key, revoked_at=later)
    async with store.transaction() as tx:
        await tx.update_key(revoked)
    assert await store.get_console_session(fresh.token_hash, now=later) == (fresh, revoked)
    await store.delete_console_session(fresh.token_hash)
    assert await store.get_console_session(fresh.token_hash, now=later) is None
    await store.delete_console_session(fresh.token_hash)  # twice is harmless


async def test_sticky_buckets_merge_first_write_wins_per_key_and_project(store: Store) -> None:
    assert await store.load_sticky_buckets("prj_a", [("id", "u1")]) == {}
    stored = await store.save_sticky_buckets(
        "prj_a",
        [
            StickyAssignment(attribute="id", value="u1", key="exp__0", variant="b"),
            StickyAssignment(attribute="id", value="u1", key="other__0", variant="a"),
            StickyAssignment(attribute="deviceId", value="d1", key="exp__0", variant="a"),
        ],
    )
    assert stored == {
        ("id", "u1"): {"exp__0": "b", "other__0": "a"},
        ("deviceId", "d1"): {"exp__0": "a"},
    }
    # A second writer of the same key loses; a new key (a new bucket version) merges in.
    again = await store.save_sticky_buckets(
        "prj_a",
        [
            StickyAssignment(attribute="id", value="u1", key="exp__0", variant="a"),
            StickyAssignment(attribute="id", value="u1", key="exp__1", variant="a"),
        ],
    )
    assert again == {("id", "u1"): {"exp__0": "b", "exp__1": "a", "other__0": "a"}}
    loaded = await store.load_sticky_buckets(
        "prj_a", [("id", "u1"), ("deviceId", "d1"), ("id", "u2"), ("id", "u1")]
    )
    assert loaded == {
        ("id", "u1"): {"exp__0": "b", "exp__1": "a", "other__0": "a"},
        ("deviceId", "d1"): {"exp__0": "a"},
    }
    # Documents are per project.
    assert await store.load_sticky_buckets("prj_b", [("id", "u1")]) == {}
    assert await store.save_sticky_buckets("prj_a", []) == {}
