"""Definitions as code: parsing (JSON and TOML, strict), and loading into each store through
the configuration service: created/updated/unchanged, idempotent reloads that write nothing,
status transitions, errors that name the object, and dry runs."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

import assay
from assay.engine import (
    SYSTEM_KEY,
    ConfigService,
    Conflict,
    Experiment,
    ExperimentStatus,
    Flag,
    FlagSpec,
    Layer,
    Metric,
    NotFound,
    ProjectSpec,
    Store,
    Transition,
    ValidationFailed,
)
from assay.engine._core import Reason, decide
from assay.engine._definitions import (
    Definitions,
    ExperimentDefinition,
    LoadReport,
    load_definitions,
    parse_definitions,
)
from assay.engine._model import ExperimentRule, ForceRule, Prerequisite, RolloutRule, Variant

P = "shop"

DEFINITIONS: dict[str, Any] = {
    "layers": [{"key": "checkout", "name": "Checkout surface"}],
    "metrics": [
        # A ratio metric listed before the metrics it divides: loading orders them.
        {"key": "aov", "kind": "ratio", "numerator": "revenue", "denominator": "orders"},
        {"key": "revenue", "kind": "mean"},
        {"key": "orders", "kind": "count"},
    ],
    "experiments": [
        {
            "key": "button",
            "variants": [
                {"key": "control", "value": "blue"},
                {"key": "green", "value": "green", "weight": 2},
            ],
            "coverage": 0.9,
            "layer": {"layer": "checkout", "start": 0, "end": 0.5},
            "primary_metrics": ["aov"],
            "status": "RUNNING",
        },
        {"key": "draft-idea", "variants": [{"key": "a", "value": "a"}, {"key": "b", "value": "b"}]},
    ],
    "flags": [
        # Depends on a flag defined after it.
        {
            "key": "button-color",
            "type": "string",
            "default_value": "blue",
            "prerequisites": [{"flag": "checkout-enabled", "value": True}],
            "rules": [
                {"type": "force", "id": "staff", "condition": {"staff": True}, "value": "red"},
                {"type": "experiment", "experiment": "button"},
            ],
        },
        {
            "key": "checkout-enabled",
            "default_value": False,
            "rules": [{"type": "rollout", "coverage": 0.5, "value": True}],
        },
    ],
}

TOML = b"""
[[layers]]
key = "checkout"
name = "Checkout surface"

[[metrics]]
key = "aov"
kind = "ratio"
numerator = "revenue"
denominator = "orders"

[[metrics]]
key = "revenue"
kind = "mean"

[[metrics]]
key = "orders"
kind = "count"

[[experiments]]
key = "button"
coverage = 0.9
primary_metrics = ["aov"]
status = "RUNNING"
layer = { layer = "checkout", start = 0, end = 0.5 }
variants = [
  { key = "control", value = "blue" },
  { key = "green", value = "green", weight = 2 },
]

[[experiments]]
key = "draft-idea"
variants = [{ key = "a", value = "a" }, { key = "b", value = "b" }]

[[flags]]
key = "button-color"
type = "string"
default_value = "blue"
prerequisites = [{ flag = "checkout-enabled", value = true }]

[[flags.rules]]
type = "force"
id = "staff"
condition = { staff = true }
value = "red"

[[flags.rules]]
type = "experiment"
experiment = "button"

[[flags]]
key = "checkout-enabled"
default_value = false
rules = [{ type = "rollout", coverage = 0.5, value = true }]
"""


def definitions(**changes: Any) -> Definitions:
    data = msgspec.json.decode(msgspec.json.encode(DEFINITIONS))
    data.update(changes)
    return parse_definitions(msgspec.json.encode(data), "json")


@pytest.fixture
async def service(store: Store) -> ConfigService:
    service = ConfigService(store)
    await service.create_project(SYSTEM_KEY, ProjectSpec(key=P))
    return service


async def audit_ids(service: ConfigService) -> list[int]:
    page = await service.list_audit(SYSTEM_KEY, P, limit=500)
    return [e.id for e in page.items]


async def load(service: ConfigService, defs: Definitions, **kw: Any) -> LoadReport:
    return await load_definitions(service, SYSTEM_KEY, P, defs, **kw)


# --- parsing ----------------------------------------------------------------------------


def test_json_and_toml_parse_to_the_same_definitions() -> None:
    from_json = parse_definitions(msgspec.json.encode(DEFINITIONS), "json")
    from_toml = parse_definitions(TOML, "toml")
    assert from_json == from_toml
    assert from_json.experiments[0].status is ExperimentStatus.RUNNING
    assert from_json.experiments[1].status is None
    assert from_json.flags[0].rules == [
        ForceRule(id="staff", condition={"staff": True}, value="red"),
        ExperimentRule(experiment="button"),
    ]
    assert from_json.flags[1].rules == [RolloutRule(coverage=0.5, value=True)]
    assert parse_definitions(b"{}", "json") == Definitions()


@pytest.mark.parametrize(
    ("data", "fmt", "expected"),
    [
        (
            b'{"flags": [{"key": "f", "colour": "red"}]}',
            "json",
            "flag 'f' (flags[0]): Object contains unknown field `colour` - at `$.flags[0]`",
        ),
        (
            b'{"flags": [{"key": "f", "rules": [{"type": "force", "value": 1, "x": 2}]}]}',
            "json",
            "flag 'f' (flags[0]): Object contains unknown field `x` - at `$.flags[0].rules[0]`",
        ),
        (
            b'[[experiments]]\nkey = "e"\nstatus = "GOING"\n',
            "toml",
            "experiment 'e' (experiments[0]): Invalid enum value 'GOING' - at "
            "`$.experiments[0].status`",
        ),
        (
            b'{"layers": [{"key": "bad key"}]}',
            "json",
            "layer 'bad key' (layers[0]): Expected `str` matching regex",
        ),
        (b'{"widgets": []}', "json", "Object contains unknown field `widgets`"),
        (
            b'{"metrics": [{"key": "m", "kind": "mean", "pending_ttl_hours": 0}]}',
            "json",
            "metric 'm' (metrics[0]): Expected `int` >= 1 - at `$.metrics[0].pending_ttl_hours`",
        ),
    ],
)
def test_strict_decoding_names_object_and_path(data: bytes, fmt: Any, expected: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_definitions(data, fmt)
    assert info.value.code == "invalid_definitions"
    assert expected in info.value.message


def test_malformed_documents_and_duplicates() -> None:
    with pytest.raises(ValidationFailed, match="not a valid JSON document"):
        parse_definitions(b"{", "json")
    with pytest.raises(ValidationFailed, match="not a valid TOML document"):
        parse_definitions(b"flags = [", "toml")
    with pytest.raises(ValidationFailed, match=r"flag 'f' \(flags\[1\]\) is defined twice"):
        parse_definitions(b'{"flags": [{"key": "f"}, {"key": "f"}]}', "json")


# --- loading ----------------------------------------------------------------------------


async def test_load_creates_everything_in_dependency_order(service: ConfigService) -> None:
    report = await load(service, definitions())
    assert report.counts() == {
        "layer": {"created": 1, "updated": 0, "unchanged": 0},
        "metric": {"created": 3, "updated": 0, "unchanged": 0},
        "segment": {"created": 0, "updated": 0, "unchanged": 0},
        "experiment": {"created": 2, "updated": 0, "unchanged": 0},
        "flag": {"created": 2, "updated": 0, "unchanged": 0},
        "sdk_connection": {"created": 0, "updated": 0, "unchanged": 0},
    }
    button = await service.get_object(SYSTEM_KEY, Experiment, P, "button")
    assert button.status is ExperimentStatus.RUNNING
    assert button.started_at is not None
    assert [v.weight for v in button.variants] == [1.0, 2.0]
    draft = await service.get_object(SYSTEM_KEY, Experiment, P, "draft-idea")
    assert draft.status is ExperimentStatus.DRAFT
    flag = await service.get_object(SYSTEM_KEY, Flag, P, "button-color")
    assert flag.prerequisites == [Prerequisite(flag="checkout-enabled", value=True)]
    aov = await service.get_object(SYSTEM_KEY, Metric, P, "aov")
    assert (aov.numerator, aov.denominator) == ("revenue", "orders")
    change = next(c for c in report.changes if c.key == "button")
    assert change.transitions == [Transition.START]
    assert change.status is ExperimentStatus.RUNNING


async def test_segments_load_before_what_uses_them(service: ConfigService) -> None:
    data = {
        "flags": [{"key": "f", "rules": [{"type": "force", "condition": SEG_REF, "value": True}]}],
        "segments": [
            # Uses a segment defined after it.
            {"key": "eu-beta", "type": "condition", "condition": {"$savedGroup": {"id": "beta"}}},
            {"key": "beta", "values": ["u1", "u2"]},
        ],
    }
    report = await load(service, msgspec.convert(data, Definitions))
    assert report.counts()["segment"] == {"created": 2, "updated": 0, "unchanged": 0}
    again = await load(service, msgspec.convert(data, Definitions))
    assert not again.changed
    data["segments"][1]["values"] = ["u3"]
    changed = await load(service, msgspec.convert(data, Definitions))
    assert [(c.key, c.fields) for c in changed.changes if c.action == "updated"] == [
        ("beta", ["values"])
    ]
    # A reference to a segment neither stored nor in the file fails before writing.
    data["flags"][0]["rules"][0]["condition"] = {"id": {"$inGroup": "nope"}}
    data["flags"][0]["key"] = "g"
    with pytest.raises(ValidationFailed, match=r"flag 'g' \(rules\[0\].condition\)") as info:
        await load(service, msgspec.convert(data, Definitions))
    assert info.value.code == "segment_not_found"
    assert (await service.list_objects(SYSTEM_KEY, Flag, P)).items[-1].key == "f"


SEG_REF = {"$savedGroup": {"id": "eu-beta"}}


async def test_reload_is_idempotent(service: ConfigService) -> None:
    await load(service, definitions())
    before = await audit_ids(service)
    revisions = {f.key: f.revision for f in (await service.list_objects(SYSTEM_KEY, Flag, P)).items}
    report = await load(service, parse_definitions(TOML, "toml"))  # same content, other format
    assert not report.changed
    assert {c.action for c in report.changes} == {"unchanged"}
    assert all(c.transitions == [] for c in report.changes)
    assert await audit_ids(service) == before
    after = {f.key: f.revision for f in (await service.list_objects(SYSTEM_KEY, Flag, P)).items}
    assert after == revisions


async def test_changed_objects_are_updated_and_only_they(service: ConfigService) -> None:
    await load(service, definitions())
    before = await audit_ids(service)
    flags = DEFINITIONS["flags"]
    changed = definitions(
        flags=[
            {**flags[0], "description": "the colour of the buy button"},
            # true -> 1 is a change even though 1 == True in Python.
            {**flags[1], "type": "json", "default_value": 0},
        ]
    )
    report = await load(service, changed)
    actions = {(c.kind, c.key): (c.action, c.fields) for c in report.changes}
    assert actions[("flag", "button-color")] == ("updated", ["description"])
    assert actions[("flag", "checkout-enabled")] == ("updated", ["type", "default_value"])
    assert actions[("experiment", "button")] == ("unchanged", [])
    flag = await service.get_object(SYSTEM_KEY, Flag, P, "button-color")
    assert flag.revision == 2
    assert flag.description == "the colour of the buy button"
    new_entries = (await service.list_audit(SYSTEM_KEY, P, limit=500)).items
    assert sorted(e.resource_key for e in new_entries if e.id not in before) == [
        "button-color",
        "checkout-enabled",
    ]
    # Omitted fields return to their defaults: the file is the whole truth.
    report = await load(service, definitions())
    flag = await service.get_object(SYSTEM_KEY, Flag, P, "button-color")
    assert flag.description == ""
    assert flag.revision == 3


async def test_status_transitions_follow_the_lifecycle(service: ConfigService) -> None:
    await load(service, definitions())

    def with_status(button: str | None, draft: str | None) -> Definitions:
        exps = DEFINITIONS["experiments"]
        return definitions(
            experiments=[{**exps[0], "status": button}, {**exps[1], "status": draft}]
        )

    report = await load(service, with_status("PAUSED", "COMPLETED"))
    steps = {c.key: c.transitions for c in report.changes if c.kind == "experiment"}
    assert steps == {
        "button": [Transition.PAUSE],
        "draft-idea": [Transition.START, Transition.COMPLETE],
    }
    exp = await service.get_object(SYSTEM_KEY, Experiment, P, "draft-idea")
    assert exp.status is ExperimentStatus.COMPLETED

    report = await load(service, with_status("RUNNING", None))  # None: keep the status
    steps = {c.key: c.transitions for c in report.changes if c.kind == "experiment"}
    assert steps == {"button": [Transition.RESUME], "draft-idea": []}

    before = await audit_ids(service)
    with pytest.raises(Conflict) as info:
        await load(service, with_status("RUNNING", "RUNNING"))
    assert info.value.code == "illegal_transition"
    assert info.value.message.startswith("experiment 'draft-idea' (status): cannot go from")
    assert await audit_ids(service) == before


async def test_a_file_can_swap_the_running_experiment_of_a_flag(service: ConfigService) -> None:
    await load(service, definitions())
    exps = DEFINITIONS["experiments"]
    flags = DEFINITIONS["flags"]
    swapped = definitions(
        experiments=[
            {**exps[0], "status": "COMPLETED"},
            {
                **exps[1],
                "variants": [{"key": "a", "value": "x"}, {"key": "b", "value": "y"}],
                "status": "RUNNING",
            },
        ],
        flags=[
            {**flags[0], "rules": [{"type": "experiment", "experiment": "draft-idea"}]},
            flags[1],
        ],
    )
    await load(service, swapped)
    done = await service.get_object(SYSTEM_KEY, Experiment, P, "button")
    running = await service.get_object(SYSTEM_KEY, Experiment, P, "draft-idea")
    assert (done.status, running.status) == (ExperimentStatus.COMPLETED, ExperimentStatus.RUNNING)


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        (
            {"flags": [{"key": "f", "rules": [{"type": "experiment", "experiment": "nope"}]}]},
            ValidationFailed,
            "flag 'f' (rules[0].experiment): experiment 'nope' does not exist",
        ),
        (
            {"flags": [{"key": "f", "type": "boolean", "default_value": "yes"}]},
            ValidationFailed,
            "flag 'f' (default_value): default_value must be a boolean value",
        ),
        (
            {
                "flags": [
                    {
                        "key": "f",
                        "type": "number",
                        "default_value": 0,
                        "rules": [{"type": "experiment", "experiment": "button"}],
                    }
                ]
            },
            ValidationFailed,
            "flag 'f' (experiment button variant control): ",
        ),
        (
            {"experiments": [{"key": "e", "layer": {"layer": "nowhere", "start": 0, "end": 1}}]},
            ValidationFailed,
            "experiment 'e' (layer.layer): layer 'nowhere' does not exist",
        ),
        (
            {"metrics": [{"key": "r", "kind": "ratio", "numerator": "x", "denominator": "y"}]},
            ValidationFailed,
            "metric 'r' (numerator): numerator metric 'x' does not exist",
        ),
        (
            {
                "flags": [
                    {"key": "a", "prerequisites": [{"flag": "b"}]},
                    {"key": "b", "prerequisites": [{"flag": "a"}]},
                ]
            },
            ValidationFailed,
            "prerequisites form a cycle",
        ),
        (
            {
                "flags": [
                    {"key": "a", "prerequisites": [{"flag": "b"}]},
                    {
                        "key": "b",
                        "rules": [
                            {
                                "type": "force",
                                "value": True,
                                "parent_conditions": [{"flag": "a", "condition": {}}],
                            }
                        ],
                    },
                ]
            },
            ValidationFailed,
            "prerequisites form a cycle",
        ),
        (
            {
                "experiments": [
                    {
                        "key": "e",
                        "variants": [{"key": "a", "value": 1}, {"key": "b", "value": 2}],
                        "ranges": [[0, 0.6], [0.5, 1]],
                    }
                ]
            },
            ValidationFailed,
            "experiment 'e' (ranges): bucket ranges overlap",
        ),
    ],
)
async def test_invalid_files_name_the_object_and_write_nothing(
    service: ConfigService, changes: dict[str, Any], error: type[Exception], message: str
) -> None:
    await load(service, definitions())
    before = await audit_ids(service)
    with pytest.raises(error) as info:
        await load(service, definitions(**changes))
    assert message in str(info.value)
    assert await audit_ids(service) == before


async def test_running_experiment_assignment_is_locked(service: ConfigService) -> None:
    await load(service, definitions())
    exps = DEFINITIONS["experiments"]
    with pytest.raises(Conflict) as info:
        await load(
            service, definitions(experiments=[{**exps[0], "coverage": 1.0, "seed": "new"}, exps[1]])
        )
    assert info.value.code == "experiment_locked"
    assert info.value.message.startswith("experiment 'button': ")
    assert "seed" in info.value.message
    # Coverage alone (not an assignment field) may change while running.
    report = await load(service, definitions(experiments=[{**exps[0], "coverage": 1.0}, exps[1]]))
    assert [c.fields for c in report.changes if c.key == "button"] == [["coverage"]]


async def test_dry_run_writes_nothing(service: ConfigService) -> None:
    before = await audit_ids(service)
    report = await load(service, definitions(), dry_run=True)
    assert report.dry_run
    assert report.counts()["flag"]["created"] == 2
    assert "would create flag 'button-color'" in report.summary()
    assert "would start -> RUNNING" in report.summary()
    assert (await service.list_objects(SYSTEM_KEY, Flag, P)).items == []
    assert (await service.list_objects(SYSTEM_KEY, Layer, P)).items == []
    assert await audit_ids(service) == before

    await load(service, definitions())
    report = await load(
        service, definitions(flags=[{**DEFINITIONS["flags"][1], "enabled": False}]), dry_run=True
    )
    assert [c.action for c in report.changes if c.kind == "flag"] == ["updated"]
    flag = await service.get_object(SYSTEM_KEY, Flag, P, "checkout-enabled")
    assert flag.enabled is True


async def test_missing_project(service: ConfigService) -> None:
    with pytest.raises(NotFound, match="project 'other' not found"):
        await load_definitions(service, SYSTEM_KEY, "other", definitions())
    report = await load_definitions(
        service, SYSTEM_KEY, "other", definitions(), dry_run=True, create_project=True
    )
    assert report.project_created
    with pytest.raises(NotFound):
        await service.get_project(SYSTEM_KEY, "other")
    report = await load_definitions(
        service, SYSTEM_KEY, "other", definitions(), create_project=True
    )
    assert report.project_created
    assert (await service.get_object(SYSTEM_KEY, Flag, "other", "button-color")).revision == 1


async def test_python_built_definitions_are_checked_like_a_file(service: ConfigService) -> None:
    bad = Definitions(flags=[FlagSpec(key="not a key")])
    with pytest.raises(ValidationFailed, match=r"flag 'not a key' \(flags\[0\]\)"):
        await load(service, bad)
    good = Definitions(
        experiments=[
            ExperimentDefinition(
                key="e",
                variants=[Variant(key="a", value=1), Variant(key="b", value=2)],
                status=ExperimentStatus.RUNNING,
            )
        ],
        flags=[
            FlagSpec(
                key="n",
                type=assay.FlagType.NUMBER,
                default_value=0,
                rules=[ExperimentRule(experiment="e")],
            )
        ],
    )
    report = await load(service, good)
    assert report.changed


async def test_engine_service_checks_conditions_before_writing() -> None:
    config = assay.EngineConfig(store="memory")
    bad = definitions(
        flags=[
            {"key": "ok", "default_value": False},
            {
                "key": "f",
                "rules": [{"type": "force", "value": True, "condition": {"age": {"$nope": 1}}}],
            },
        ]
    )
    async with assay.open_engine(config, load_entry_points=False) as engine:
        await engine.service.create_project(SYSTEM_KEY, ProjectSpec(key=P))
        for dry_run in (True, False):
            with pytest.raises(ValidationFailed) as info:
                await load_definitions(engine.service, SYSTEM_KEY, P, bad, dry_run=dry_run)
            assert info.value.code == "unknown_operator"
            assert info.value.message.startswith("flag 'f' (rules[0].condition): ")
        assert (await engine.service.list_objects(SYSTEM_KEY, Flag, P)).items == []


async def test_embedded_engine_on_the_memory_store() -> None:
    config = assay.EngineConfig(store="memory")
    async with assay.open_engine(config, load_entry_points=False) as engine:
        await engine.service.create_project(SYSTEM_KEY, ProjectSpec(key=P))
        await load_definitions(engine.service, SYSTEM_KEY, P, definitions())
        await engine.refresh()
        project_id = engine.snapshot.project_ids[P]
        staff = decide(engine.snapshot, project_id, "button-color", "u1", {"staff": True})
        # checkout-enabled is a 50% rollout: find subjects on both sides.
        outcomes = {
            decide(engine.snapshot, project_id, "button-color", f"u{i}", {}).reason
            for i in range(200)
        }
    assert staff.reason in (Reason.FORCED, Reason.PREREQUISITE_FAILED)
    assert {Reason.PREREQUISITE_FAILED, Reason.EXPERIMENT_ASSIGNED} <= outcomes


async def test_starts_the_service_would_refuse_are_refused_before_writing(
    service: ConfigService,
) -> None:
    await load(service, definitions())
    before = await audit_ids(service)
    exps = DEFINITIONS["experiments"]
    flags = DEFINITIONS["flags"]
    # Two running experiments on one flag.
    two_on_a_flag = definitions(
        experiments=[exps[0], {**exps[1], "status": "RUNNING"}],
        flags=[
            {
                **flags[0],
                "rules": [*flags[0]["rules"], {"type": "experiment", "experiment": "draft-idea"}],
            },
            flags[1],
        ],
    )
    with pytest.raises(Conflict) as info:
        await load(service, two_on_a_flag)
    assert info.value.code == "flag_has_running_experiment"
    assert info.value.message.startswith("flag 'button-color': ")
    # A new experiment overlapping the running one's layer range.
    overlapping = definitions(
        experiments=[
            *exps,
            {
                "key": "other",
                "variants": [{"key": "a", "value": 1}, {"key": "b", "value": 2}],
                "layer": {"layer": "checkout", "start": 0.4, "end": 0.8},
                "status": "RUNNING",
            },
        ]
    )
    with pytest.raises(Conflict) as info:
        await load(service, overlapping)
    assert info.value.code == "layer_range_overlap"
    assert "'other'" in info.value.message
    assert await audit_ids(service) == before
    # Beside the range, it runs.
    beside = definitions(
        experiments=[
            *exps,
            {
                "key": "other",
                "variants": [{"key": "a", "value": 1}, {"key": "b", "value": 2}],
                "layer": {"layer": "checkout", "start": 0.5, "end": 0.8},
                "status": "RUNNING",
            },
        ]
    )
    await load(service, beside)
    other = await service.get_object(SYSTEM_KEY, Experiment, P, "other")
    assert other.status is ExperimentStatus.RUNNING


async def test_the_rule_language_loads_from_a_file_and_decides() -> None:
    """Parent conditions, filters, explicit ranges, passthrough and forced variations in a
    file (a child listed before its parent), loaded into an engine and decided."""
    data = b"""
    [[experiments]]
    key = "e"
    status = "RUNNING"
    ranges = [[0.0, 0.5], [0.5, 1.0]]
    filters = [{ attribute = "id", seed = "ns", ranges = [[0.0, 1.0]] }]
    forced_variations = [{ variant = "b", values = ["qa", 7] }]
    variants = [{ key = "a", value = "A" }, { key = "b", value = "B" }]

    [[flags]]
    key = "child"
    type = "string"
    default_value = "off"
    [[flags.rules]]
    type = "experiment"
    experiment = "e"
    parent_conditions = [{ flag = "parent", condition = { value = true }, gate = true }]

    [[flags]]
    key = "parent"
    default_value = false
    rules = [{ type = "force", condition = { beta = true }, value = true }]
    """
    config = assay.EngineConfig(store="memory")
    async with assay.open_engine(config, load_entry_points=False) as engine:
        await engine.service.create_project(SYSTEM_KEY, ProjectSpec(key=P))
        await load_definitions(engine.service, SYSTEM_KEY, P, parse_definitions(data, "toml"))
        await engine.refresh()
        pid = engine.snapshot.project_ids[P]
        gated = decide(engine.snapshot, pid, "child", "u1", {"beta": False})
        assert (gated.value, gated.reason) == (None, Reason.PREREQUISITE_GATE)
        pinned = decide(engine.snapshot, pid, "child", "u1", {"id": 7, "beta": True})
        assert (pinned.value, pinned.reason) == ("B", Reason.FORCED_VARIATION)
        assigned = decide(engine.snapshot, pid, "child", "u1", {"beta": True})
        assert assigned.reason is Reason.EXPERIMENT_ASSIGNED


# --- SDK connections --------------------------------------------------------------------


async def test_sdk_connections_are_matched_by_name_and_never_revoked(
    service: ConfigService,
) -> None:
    web = {"name": "web", "encrypt": True, "allow_exposures": True}
    app = {"name": "app", "evaluation": "remote"}
    first = await load(service, definitions(sdk_connections=[web, app]))
    assert first.counts()["sdk_connection"] == {"created": 2, "updated": 0, "unchanged": 0}
    made = {c.name: c for c in await service.all_connections(SYSTEM_KEY, P)}
    assert made["web"].decryption_key is not None
    assert made["app"].evaluation == "remote"

    before = await audit_ids(service)
    again = await load(service, definitions(sdk_connections=[web, app]))
    assert again.counts()["sdk_connection"] == {"created": 0, "updated": 0, "unchanged": 2}
    assert await audit_ids(service) == before

    changed = await load(service, definitions(sdk_connections=[{**web, "encrypt": False}]))
    [change] = [c for c in changed.changes if c.kind == "sdk_connection"]
    assert (change.action, change.fields) == ("updated", ["encrypt"])
    now = {c.name: c for c in await service.all_connections(SYSTEM_KEY, P)}
    assert now["web"].client_key == made["web"].client_key
    assert now["web"].decryption_key is None
    assert now["app"].active  # left out of the file, kept

    with pytest.raises(ValidationFailed) as twice:
        definitions(sdk_connections=[web, web])
    assert twice.value.code == "duplicate_key"
    with pytest.raises(ValidationFailed) as bad:
        definitions(sdk_connections=[{"name": "x", "evaluation": "edge"}])
    assert bad.value.code == "invalid_definitions"
    assert "sdk_connection 'x'" in bad.value.message
