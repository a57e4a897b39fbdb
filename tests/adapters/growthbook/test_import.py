"""A GrowthBook SDK payload imported into assay serves every subject what GrowthBook's own
SDK serves for the same payload: the same value, and for experiments the same variant.

The payload (``growthbook_payloads.PAYLOAD``) mixes force, rollout and experiment rules
with conditions, namespaces, weights, coverage, hash versions 1 and 2, custom seeds, hash
and fallback attributes, saved groups, an experiment key assay cannot use as is and one
experiment key shared by two features. Rollout coverages sit exactly on hash-bucket
boundaries, where GrowthBook's ``n < coverage`` and assay's ``n <= coverage`` would differ
without the import's translation.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from growthbook import GrowthBook

import assay
from assay.adapters.growthbook._import import (
    convert_growthbook,
    import_growthbook,
    parse_growthbook_payload,
    rollout_coverage,
)
from assay.engine import SYSTEM_KEY, Engine, ExperimentStatus, ProjectSpec
from assay.engine._core import Reason, decide
from assay.engine._model import (
    ExperimentRule,
    FlagType,
    ForceRule,
    HashFilter,
    ParentCondition,
    RolloutRule,
)
from tests.adapters.growthbook.growthbook_payloads import PAYLOAD, subject

P = "shop"
SUBJECTS = 4000


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    config = assay.EngineConfig(store="memory")
    async with assay.open_engine(config, load_entry_points=False) as engine:
        await engine.service.create_project(SYSTEM_KEY, ProjectSpec(key=P))
        yield engine


async def test_every_subject_gets_what_growthbook_serves(engine: Engine) -> None:
    report = await import_growthbook(engine.service, SYSTEM_KEY, P, PAYLOAD)
    assert report.counts()["flag"]["created"] == len(PAYLOAD["features"])
    await engine.refresh()
    snapshot = engine.snapshot
    assert snapshot.errors == ()
    project_id = snapshot.project_ids[P]

    gb = GrowthBook(features=PAYLOAD["features"], saved_groups=PAYLOAD["savedGroups"])
    rng = random.Random(20250101)
    seen: dict[str, set[str]] = {key: set() for key in PAYLOAD["features"]}
    mismatches = []
    for i in range(SUBJECTS):
        sid, attrs = subject(rng, i)
        gb.set_attributes(attrs)
        for key in PAYLOAD["features"]:
            expected = gb.eval_feature(key)
            got = decide(snapshot, project_id, key, sid, attrs)
            ours = (got.value, got.variant if got.in_experiment else None)
            in_gb = expected.experimentResult is not None and expected.experimentResult.inExperiment
            theirs = (expected.value, expected.experimentResult.key if in_gb else None)
            if expected.source == "experiment" and got.reason is Reason.EXPERIMENT_ASSIGNED:
                seen[key].add(f"variant:{got.variant}")
            seen[key].add(f"reason:{got.reason}")
            if ours != theirs:
                mismatches.append((key, attrs, ours, theirs))
    assert mismatches == []
    # The comparison exercised every path, not just defaults.
    assert {"reason:forced", "reason:default"} <= seen["banner"]
    assert "reason:rollout" in seen["new-checkout"]
    assert "reason:rollout" in seen["price"]
    assert {"variant:control", "variant:g", "variant:r"} <= seen["button-color"]
    assert {"variant:0", "variant:1"} <= seen["layout"]
    assert {"variant:0", "variant:1", "variant:2"} <= seen["shared-b"]
    assert {"reason:rollout", "reason:experiment_assigned"} <= seen["company-plan"]


async def test_import_is_idempotent_and_writes_nothing_the_second_time(engine: Engine) -> None:
    first = await import_growthbook(engine.service, SYSTEM_KEY, P, PAYLOAD)
    assert first.changed
    audit = await engine.service.list_audit(SYSTEM_KEY, P, limit=500)
    second = await import_growthbook(engine.service, SYSTEM_KEY, P, PAYLOAD)
    assert not second.changed
    assert {c.action for c in second.changes} == {"unchanged"}
    again = await engine.service.list_audit(SYSTEM_KEY, P, limit=500)
    assert [e.id for e in again.items] == [e.id for e in audit.items]


async def test_dry_run_reports_and_writes_nothing(engine: Engine) -> None:
    report = await import_growthbook(engine.service, SYSTEM_KEY, P, PAYLOAD, dry_run=True)
    assert report.dry_run
    assert report.counts()["experiment"]["created"] == 5
    assert "would create flag 'banner'" in report.summary()
    flags = await engine.service.list_objects(SYSTEM_KEY, assay.Flag, P)
    assert flags.items == []


def test_mapping_of_each_rule_kind() -> None:
    result = convert_growthbook(PAYLOAD)
    defs = result.definitions
    flags = {f.key: f for f in defs.flags}
    experiments = {e.key: e for e in defs.experiments}

    banner = flags["banner"]
    assert banner.type is FlagType.BOOLEAN
    assert banner.default_value is False
    # The saved group stays a reference, to a segment of the same key.
    assert banner.rules[0] == ForceRule(
        id="fr_beta", condition={"id": {"$inGroup": "grp_beta"}}, value=True
    )
    assert [(s.key, s.type, s.values) for s in defs.segments] == [
        ("grp_beta", "list", ["u1", "u2", "u3", "u10", "u11", "u12", "u100"])
    ]

    roll_v1, roll_v2 = flags["new-checkout"].rules
    assert isinstance(roll_v1, RolloutRule)
    assert isinstance(roll_v2, RolloutRule)
    assert (roll_v1.hash_version, roll_v1.coverage, roll_v1.seed) == (1, 0.2995, None)
    assert (roll_v2.hash_version, roll_v2.coverage, roll_v2.seed) == (2, 0.49995, "checkout-2025")

    price = flags["price"]
    assert price.type is FlagType.NUMBER
    first = price.rules[0]
    assert isinstance(first, RolloutRule)
    assert (first.hash_attribute, first.fallback_attribute) == ("deviceId", "id")
    assert first.coverage == 0.24995
    assert first.condition == {"country": "US"}

    rule = flags["button-color"].rules[0]
    assert rule == ExperimentRule(id="fr_exp1", experiment="button-color-test")
    exp = experiments["button-color-test"]
    assert exp.status is ExperimentStatus.RUNNING
    assert exp.seed == "button color test"  # the GrowthBook key still seeds the hash
    assert exp.hash_version == 2
    assert exp.coverage == 0.8
    assert exp.name == "Button color"
    assert [(v.key, v.value, v.weight, v.name) for v in exp.variants] == [
        ("control", "blue", 0.2, "Blue"),
        ("g", "green", 0.3, ""),
        ("r", "red", 0.5, ""),
    ]
    assert exp.layer is not None
    assert (exp.layer.layer, exp.layer.start, exp.layer.end) == (
        "checkout-ns",
        0.1,
        0.7,
    )
    assert [layer.key for layer in defs.layers] == ["checkout-ns"]

    layout = experiments["layout-exp"]
    assert layout.hash_version == 1  # GrowthBook's default
    assert layout.seed == "layout-seed"
    assert layout.hash_attribute == "deviceId"
    # Kept, and used as GrowthBook uses it: by sticky bucketing only.
    assert (layout.fallback_attribute, layout.fallback_sticky_only) == ("id", True)
    assert flags["layout"].type is FlagType.JSON

    # One GrowthBook experiment on two features: two assay experiments, one seed.
    assert experiments["common"].seed is None
    shared_b = experiments["common.shared-b"]
    assert shared_b.seed == "common"
    assert [v.weight for v in shared_b.variants] == [1 / 3] * 3


@pytest.mark.parametrize(
    ("coverage", "version", "expected"),
    [
        (0.3, 1, 0.2995),
        (0.5, 2, 0.49995),
        (0.1234, 1, 0.1234),  # between two v1 hashes: kept
        (0.12345, 2, 0.12345),
        (0.001, 1, 0.0005),
        (0.0, 2, 0.0),
        (1.0, 1, 1.0),
        (1.5, 2, 1.0),
        (-0.1, 2, 0.0),
    ],
)
def test_rollout_coverage_translation(coverage: float, version: int, expected: float) -> None:
    assert rollout_coverage(coverage, version) == expected


@pytest.mark.parametrize("version", [1, 2])
def test_rollout_coverage_includes_exactly_growthbooks_buckets(version: int) -> None:
    steps = 1000 if version == 1 else 10000
    rng = random.Random(version)
    coverages = [k / steps for k in range(0, steps + 1, 7)] + [rng.random() for _ in range(50)]
    hashes = [k / steps for k in range(steps)]
    for coverage in coverages:
        ours = rollout_coverage(coverage, version)
        growthbook = [n < coverage for n in hashes] if coverage > 0 else [False] * steps
        # assay's rollout: coverage 0 excludes everyone, 1 includes everyone, else n <= c.
        if ours <= 0:
            assay_side = [False] * steps
        elif ours >= 1:
            assay_side = [True] * steps
        else:
            assay_side = [n <= ours for n in hashes]
        assert assay_side == growthbook, coverage


UNSUPPORTED: dict[str, Any] = {
    "status": 200,
    "encryptedSavedGroups": "abc",
    "experiments": [{"key": "visual", "variations": [{}, {}]}],
    "somethingNew": 1,
    "features": {
        "gated": {
            "defaultValue": 1,
            "rules": [
                {
                    "parentConditions": [
                        {"id": "parent", "condition": {"value": True}, "gate": True}
                    ]
                },
                {"force": 2, "filters": [{"seed": "s", "ranges": [[0, 0.5]]}]},
                {"force": 3, "tracks": [{"experiment": {}, "result": {}}], "colour": "red"},
                {"variations": [1, 2], "ranges": [[0, 0.5], [0.5, 1]]},
                {"force": 4, "coverage": 0.5, "hashVersion": 3},
                {"force": 5, "range": [0.2, 0.6]},
                {"force": 6, "condition": {"$savedGroups": ["grp"]}},
            ],
        },
        "sticky": {
            "defaultValue": "a",
            "rules": [
                {
                    "key": "sticky-exp",
                    "variations": ["a", "b"],
                    "meta": [{"key": "a"}, {"key": "b", "passthrough": False}],
                    "fallbackAttribute": "anonymousId",
                    "bucketVersion": 2,
                    "minBucketVersion": 1,
                    "disableStickyBucketing": False,
                },
                {"key": "second-exp", "variations": ["a", "b"]},
            ],
        },
        "held": {
            "defaultValue": "a",
            "rules": [
                {"key": "holdout", "variations": ["a", "b"], "meta": [{"passthrough": True}, {}]}
            ],
        },
        "bad key!": {"defaultValue": True},
        "bandit": {"defaultValue": 0, "rules": [{"contextualVariations": [0, 1]}]},
        "odd": {"defaultValue": 0, "project": "p1"},
    },
}


def test_only_what_a_server_cannot_honour_is_reported_with_its_location() -> None:
    result = convert_growthbook(UNSUPPORTED)
    warnings = [str(w) for w in result.warnings]

    def warned(location: str, *words: str) -> bool:
        return any(
            w.startswith(location + ":") and all(word in w for word in words) for w in warnings
        )

    assert warned("encryptedSavedGroups", "encrypted")
    assert warned("experiments", "auto experiments")
    assert warned("somethingNew", "unknown")
    assert warned("features.gated.rules[2]", "tracks", "colour")
    assert warned("features.gated.rules[6]", "$savedGroups", "skipped")
    # Sticky bucketing is imported (versions, and the fallback attribute with it).
    assert not warned("features.sticky.rules[0]")
    assert warned("features.sticky.rules[1]", "one running experiment per flag")
    assert warned("features.bad key!", "not imported")
    assert warned("features.bandit.rules[0]", "bandit")
    assert warned("features.odd.project", "unknown")
    # Everything else is imported as GrowthBook evaluates it, without a word.
    assert not any(w.startswith("features.held") for w in warnings)
    for i in (0, 1, 3, 4, 5):
        assert not warned(f"features.gated.rules[{i}]"), warnings
    assert not warned("features.sticky.rules[0].fallbackAttribute")

    flags = {f.key: f for f in result.definitions.flags}
    assert "bad key!" not in flags
    gated = flags["gated"].rules
    # rules[0] does nothing but its gate (on a parent that does not exist, so null, which
    # fails the condition): kept with a condition no one passes. rules[4] (hashVersion 3)
    # applies to no one and is left out.
    assert gated[0] == ForceRule(
        condition={"$not": {}},
        value=1,
        parent_conditions=[ParentCondition(flag="parent", condition={"value": True}, gate=True)],
    )
    assert gated[1] == ForceRule(value=2, filters=[HashFilter(seed="s", ranges=[(0.0, 0.5)])])
    assert gated[2] == ForceRule(value=3)
    assert isinstance(gated[3], ExperimentRule)
    assert gated[4] == RolloutRule(value=5, range=(0.2, 0.6), coverage=1.0, hash_version=1)
    assert len(gated) == 5
    experiments = {e.key: e for e in result.definitions.experiments}
    assert experiments[gated[3].experiment].ranges == [(0.0, 0.5), (0.5, 1.0)]
    assert [v.passthrough for v in experiments["holdout"].variants] == [True, False]
    assert [r.experiment for r in flags["sticky"].rules if isinstance(r, ExperimentRule)] == [
        "sticky-exp"
    ]
    sticky = experiments["sticky-exp"]
    assert (
        sticky.sticky_bucketing,
        sticky.bucket_version,
        sticky.min_bucket_version,
        sticky.fallback_attribute,
        sticky.fallback_sticky_only,
    ) == (True, 2, 1, "anonymousId", True)


def test_encrypted_features_are_reported_not_imported() -> None:
    result = convert_growthbook({"status": 200, "encryptedFeatures": "xyz=="})
    assert result.definitions.flags == []
    assert any("decrypt" in str(w) for w in result.warnings)


def test_bare_features_object_and_payload_file() -> None:
    bare = convert_growthbook(PAYLOAD["features"] | {"features": {"defaultValue": 1}})
    assert "features" in {f.key for f in bare.definitions.flags}
    parsed = parse_growthbook_payload(msgspec.json.encode(PAYLOAD))
    assert convert_growthbook(parsed) == convert_growthbook(PAYLOAD)
    with pytest.raises(assay.ValidationFailed, match="JSON object"):
        parse_growthbook_payload(b"[1, 2]")
    with pytest.raises(assay.ValidationFailed, match="not a valid JSON"):
        parse_growthbook_payload(b"{oops")


def test_overlapping_namespace_ranges_become_the_filter_they_are_equivalent_to() -> None:
    payload = {
        "features": {
            "a": {
                "defaultValue": 0,
                "rules": [{"variations": [0, 1], "namespace": ["ns", 0, 0.6]}],
            },
            "b": {
                "defaultValue": 0,
                "rules": [
                    {"variations": [0, 1], "namespace": ["ns", 0.5, 1], "hashAttribute": "dev"}
                ],
            },
        }
    }
    result = convert_growthbook(payload)
    a, b = result.definitions.experiments
    assert a.layer is not None
    assert a.filters == []
    # Two running experiments may not overlap in an assay layer, so the second one keeps
    # GrowthBook's namespace test as a filter (hash v1 of its hash value, seed "__ns").
    assert b.layer is None
    assert b.filters == [
        HashFilter(attribute="dev", seed="__ns", hash_version=1, ranges=[(0.5, 1.0)])
    ]
    assert result.warnings == []


def test_unusable_variation_keys_fall_back_to_unique_indexes() -> None:
    meta = [{"key": "Control Group"}, {"key": "0"}, {"key": "0"}]
    payload = {
        "features": {"f": {"defaultValue": 0, "rules": [{"variations": [0, 1, 2], "meta": meta}]}}
    }
    result = convert_growthbook(payload)
    assert [v.key for v in result.definitions.experiments[0].variants] == ["0_", "0", "2"]
    assert [w.location for w in result.warnings] == [
        "features.f.rules[0].meta[0].key",
        "features.f.rules[0].meta[2].key",
    ]


def test_a_growthbook_holdout_feature_is_imported_under_a_key_assay_takes() -> None:
    hold = {"key": "h1", "variations": ["holdoutcontrol", "holdouttreatment"], "coverage": 0.1}
    read = {"id": "$holdout:h1", "condition": {"value": "holdoutcontrol"}}
    payload = {
        "features": {
            "$holdout:h1": {"defaultValue": "genpop", "rules": [hold]},
            "banner": {
                "defaultValue": False,
                "rules": [
                    {"parentConditions": [read], "force": False},
                    {"force": True, "coverage": 0.5, "parentConditions": [{"id": "$gone:x"}]},
                ],
            },
        }
    }
    result = convert_growthbook(payload)
    assert result.warnings == []
    flags = {f.key: f for f in result.definitions.flags}
    assert set(flags) == {"holdout-h1", "banner"}
    first, second = flags["banner"].rules
    assert first.parent_conditions[0].flag == "holdout-h1"
    # A parent missing from the payload stays missing (reads null) under a key no flag has.
    assert second.parent_conditions[0].flag == "missing.-gone-x"
    assert isinstance(second, RolloutRule)
    assert second.seed is None  # the flag keeps GrowthBook's key, so its seed is unchanged
    holdout_rule = flags["holdout-h1"].rules[0]
    assert isinstance(holdout_rule, ExperimentRule)


RULES_PAYLOAD: dict[str, Any] = {
    "features": {
        "$holdout:h1": {
            "defaultValue": "genpop",
            "rules": [
                {
                    "key": "h1",
                    "variations": ["holdoutcontrol", "holdouttreatment"],
                    "meta": [{"key": "holdoutcontrol"}, {"key": "holdouttreatment"}],
                    "coverage": 0.2,
                    "hashVersion": 2,
                }
            ],
        },
        "gate": {
            "defaultValue": False,
            "rules": [{"force": True, "range": [0.1, 0.9], "hashVersion": 2, "seed": "g"}],
        },
        "checkout": {
            "defaultValue": "old",
            "rules": [
                {
                    "parentConditions": [
                        {"id": "$holdout:h1", "condition": {"value": "holdoutcontrol"}}
                    ],
                    "force": "old",
                },
                {
                    "key": "checkout-holdout",
                    "variations": ["old", "old"],
                    "meta": [{"key": "held"}, {"key": "rest", "passthrough": True}],
                    "coverage": 1,
                    "weights": [0.1, 0.9],
                    "hashVersion": 2,
                },
                {
                    "key": "checkout-exp",
                    "parentConditions": [
                        {"id": "gate", "condition": {"value": {"$eq": True}}, "gate": True}
                    ],
                    "variations": ["old", "new", "newer"],
                    "ranges": [[0.5, 0.7], [0.1, 0.3]],  # gaps, not from 0, one short
                    "filters": [
                        {"seed": "ns-a", "ranges": [[0, 0.7]]},
                        {"attribute": "company", "hashVersion": 1, "ranges": [[0.2, 1.0]]},
                    ],
                    "fallbackAttribute": "deviceId",
                    "hashVersion": 2,
                },
                {"force": "fallback", "filters": [{"seed": "x", "ranges": [[0, 0.5]]}]},
            ],
        },
    }
}


async def test_the_rule_language_imports_through_the_service_and_decides_as_growthbook(
    engine: Engine,
) -> None:
    """The import's output passes the service's validation as it is, and the engine then
    serves what GrowthBook's SDK serves (the differential test covers generated payloads
    on the pure path)."""
    report = await import_growthbook(engine.service, SYSTEM_KEY, P, RULES_PAYLOAD)
    assert report.warnings == []
    await engine.refresh()
    snapshot = engine.snapshot
    assert snapshot.errors == ()
    project_id = snapshot.project_ids[P]
    gb = GrowthBook(features=RULES_PAYLOAD["features"])
    rng = random.Random(7)
    reasons = set()
    for i in range(3000):
        sid, attrs = subject(rng, i)
        gb.set_attributes(attrs)
        for key in ("gate", "checkout"):
            expected = gb.eval_feature(key)
            er = expected.experimentResult
            in_gb = er is not None and er.inExperiment
            got = decide(snapshot, project_id, key, sid, attrs)
            reasons.add(got.reason)
            assert (got.value, got.in_experiment, got.variant if got.in_experiment else None) == (
                expected.value,
                in_gb,
                er.key if in_gb and er is not None else None,
            ), (key, attrs)
    assert {Reason.PREREQUISITE_GATE, Reason.EXPERIMENT_ASSIGNED, Reason.FORCED} <= reasons
