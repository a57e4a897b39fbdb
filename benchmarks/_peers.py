"""The decide benchmark's scenario for the peer SDKs that have no GrowthBook hashing.

Each builder configures one SDK offline (no network: a local file or an in-memory copy of
the configuration it would download), with its closest equivalent of the scenario in
``decide.py`` (a string flag, two targeting conditions, 90% coverage, three equally weighted
variants), and returns the ways of deciding it for every user. Inputs are built before
timing in each SDK's own shape, as ``decide.py`` does for GrowthBook and Unleash.

Every peer hashes differently (Eppo and Flagsmith MD5, LaunchDarkly SHA-1, Statsig
SHA-256), so a different ~90% of the targeted users is in the experiment: ``decide.py``
checks the targeting, the share and the split of each, never the users.

The peers are imported lazily: each lives in the ``bench`` extra.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

Users = list[dict[str, str]]
Run = Callable[[], list[str | None]]


@dataclass
class Peer:
    """One way a peer SDK decides the scenario: ``run`` returns each user's variant."""

    name: str
    sdk: str
    """The distribution name, for the version table."""
    how: str
    run: Run


@dataclass
class Scenario:
    flag: str
    experiment: str
    variants: tuple[str, ...]
    coverage: float
    target_countries: tuple[str, ...]
    min_version: str
    default: str


@dataclass
class Peers:
    peers: list[Peer] = field(default_factory=list)
    closers: list[Callable[[], None]] = field(default_factory=list)
    configurations: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        for close in self.closers:
            close()


def _split_bounds(total: int, parts: int) -> list[int]:
    return [round(i * total / parts) for i in range(parts + 1)]


# --------------------------------------------------------------------------------------
# Eppo: the universal flag configuration, evaluated by its Rust core through PyO3.
# --------------------------------------------------------------------------------------


def eppo_configuration(s: Scenario, *, log: bool) -> dict[str, Any]:
    """One allocation with the two conditions; each split takes a traffic shard (0-90%)
    and its third of a variant shard, as Eppo's own experiments are laid out."""
    shards = 10_000
    bounds = _split_bounds(shards, len(s.variants))
    return {
        "format": "SERVER",
        "createdAt": "2026-01-01T00:00:00.000Z",
        "environment": {"name": "bench"},
        "flags": {
            s.flag: {
                "key": s.flag,
                "enabled": True,
                "variationType": "STRING",
                "totalShards": shards,
                "variations": {v: {"key": v, "value": v} for v in s.variants},
                "allocations": [
                    {
                        "key": s.experiment,
                        "doLog": log,
                        "rules": [
                            {
                                "conditions": [
                                    {
                                        "attribute": "country",
                                        "operator": "ONE_OF",
                                        "value": list(s.target_countries),
                                    },
                                    # GTE compares as semver when both sides parse as one.
                                    {
                                        "attribute": "app_version",
                                        "operator": "GTE",
                                        "value": s.min_version,
                                    },
                                ],
                            }
                        ],
                        "splits": [
                            {
                                "variationKey": v,
                                "shards": [
                                    {
                                        "salt": f"{s.experiment}-traffic",
                                        "ranges": [{"start": 0, "end": round(s.coverage * shards)}],
                                    },
                                    {
                                        "salt": f"{s.experiment}-split",
                                        "ranges": [{"start": bounds[i], "end": bounds[i + 1]}],
                                    },
                                ],
                            }
                            for i, v in enumerate(s.variants)
                        ],
                    }
                ],
            }
        },
    }


def add_eppo(peers: Peers, s: Scenario, users: Users) -> None:
    import eppo_client
    from eppo_client import AssignmentLogger, ClientConfig, Configuration

    class Discard(AssignmentLogger):  # type: ignore[misc]
        def log_assignment(self, event: dict[str, Any]) -> None:
            pass

        def log_bandit_action(self, event: dict[str, Any]) -> None:
            pass

    class Collect(AssignmentLogger):  # type: ignore[misc]
        """A Python logger that keeps each event, as an application queues them."""

        def __init__(self) -> None:
            super().__init__()
            self.events: list[dict[str, Any]] = []

        def log_assignment(self, event: dict[str, Any]) -> None:
            self.events.append(event)

        def log_bandit_action(self, event: dict[str, Any]) -> None:
            pass

    contexts = [
        (u["id"], {"country": u["country"], "app_version": u["app_version"]}) for u in users
    ]

    def build(log: bool, logger: Any) -> Any:
        config = eppo_configuration(s, log=log)
        peers.configurations.setdefault("eppo", config)
        return eppo_client.init(
            ClientConfig(
                api_key="offline-benchmark",
                # Never contacted: no polling, and the configuration is given up front.
                base_url="http://127.0.0.1:9",
                assignment_logger=logger,
                poll_interval_seconds=None,
                initial_configuration=Configuration(
                    flags_configuration=json.dumps(config).encode()
                ),
            )
        )

    def runner(eppo: Any, sink: Collect | None) -> Run:
        get = eppo.get_string_assignment
        flag, default = s.flag, s.default

        def run() -> list[str | None]:
            out: list[str | None] = []
            for key, attributes in contexts:
                value = get(flag, key, attributes, default)
                out.append(None if value == default else value)
            if sink is not None:
                sink.events.clear()
            return out

        return run

    # eppo_client.init replaces the global instance, but each returned client keeps its own
    # configuration and logger, so both stay usable side by side.
    quiet = build(False, Discard())
    sink = Collect()
    logged = build(True, sink)
    peers.peers.append(
        Peer(
            "eppo",
            "eppo-server-sdk",
            "get_string_assignment, Rust core; allocation doLog off (no assignment logging)",
            runner(quiet, None),
        )
    )
    peers.peers.append(
        Peer(
            "eppo_logged",
            "eppo-server-sdk",
            "get_string_assignment, Rust core; doLog on, a Python logger keeping each event",
            runner(logged, sink),
        )
    )
    peers.closers.append(quiet.shutdown)
    peers.closers.append(logged.shutdown)


# --------------------------------------------------------------------------------------
# Statsig: the server core (Rust) with the specs from a data store, network disabled.
# --------------------------------------------------------------------------------------


def statsig_specs(s: Scenario) -> dict[str, Any]:
    """An experiment laid out as Statsig's console compiles one: a targeting gate (the two
    conditions), then a rule that sends the 10% outside the allocation to the default,
    then one rule per group on a second bucket salt (first match wins)."""
    conditions: dict[str, dict[str, Any]] = {}

    def condition(**fields: Any) -> str:
        name = f"c{len(conditions)}"
        conditions[name] = {"idType": "userID", "isDeviceBased": False, **fields}
        conditions[name].setdefault("additionalValues", {})
        return name

    def rule(name: str, conds: list[str], value: str, *, group: bool) -> dict[str, Any]:
        extra = {"groupName": value} if group else {}
        return {
            "name": name,
            "id": name,
            "salt": name,
            "passPercentage": 100,
            "conditions": conds,
            "returnValue": {"variant": value},
            "idType": "userID",
            "isDeviceBased": False,
            "isExperimentGroup": group,
            **extra,
        }

    gate = f"{s.experiment}-targeting"
    bounds = _split_bounds(1000, len(s.variants))[1:]
    return {
        "has_updates": True,
        "time": 1,
        "layer_configs": {},
        "layers": {},
        "experiment_to_layer": {},
        "condition_map": conditions,
        "feature_gates": {
            gate: {
                "name": gate,
                "type": "feature_gate",
                "entity": "feature_gate",
                "salt": gate,
                "enabled": True,
                "defaultValue": False,
                "idType": "userID",
                "rules": [
                    {
                        "name": "targeted",
                        "id": "targeted",
                        "salt": "targeted",
                        "passPercentage": 100,
                        "returnValue": True,
                        "idType": "userID",
                        "isDeviceBased": False,
                        "conditions": [
                            condition(
                                type="user_field",
                                field="country",
                                operator="any",
                                targetValue=list(s.target_countries),
                            ),
                            condition(
                                type="user_field",
                                field="app_version",
                                operator="version_gte",
                                targetValue=s.min_version,
                            ),
                        ],
                    }
                ],
            }
        },
        "dynamic_configs": {
            s.flag: {
                "name": s.flag,
                "type": "dynamic_config",
                "entity": "experiment",
                "salt": s.experiment,
                "enabled": True,
                "isActive": True,
                "hasSharedParams": False,
                "idType": "userID",
                "defaultValue": {"variant": s.default},
                "rules": [
                    rule(
                        "targeting",
                        [condition(type="fail_gate", targetValue=gate)],
                        s.default,
                        group=False,
                    ),
                    rule(
                        "allocation",
                        [
                            condition(
                                type="user_bucket",
                                operator="gte",
                                targetValue=round(s.coverage * 1000),
                                additionalValues={"salt": s.experiment},
                            )
                        ],
                        s.default,
                        group=False,
                    ),
                    *(
                        rule(
                            v,
                            [
                                condition(
                                    type="user_bucket",
                                    operator="lt",
                                    targetValue=bound,
                                    additionalValues={"salt": f"{s.experiment}-groups"},
                                )
                            ],
                            v,
                            group=True,
                        )
                        for v, bound in zip(s.variants, bounds, strict=True)
                    ),
                ],
            }
        },
    }


def add_statsig(peers: Peers, s: Scenario, users: Users) -> None:
    from statsig_python_core import (
        ExperimentEvaluationOptions,
        Statsig,
        StatsigOptions,
        StatsigUser,
    )
    from statsig_python_core.data_store import DataStore, DataStoreResponse

    specs = statsig_specs(s)
    peers.configurations["statsig"] = specs
    encoded = json.dumps(specs)

    class LocalSpecs(DataStore):  # type: ignore[misc]
        """The specs a Statsig server would download, served from memory."""

        def get(self, key: str) -> DataStoreResponse:
            return DataStoreResponse(result=encoded, time=1)

    statsig = Statsig(
        "secret-offline-benchmark",
        StatsigOptions(
            disable_network=True,
            disable_all_logging=True,
            disable_country_lookup=True,
            data_store=LocalSpecs(),
            output_log_level="error",
        ),
    )
    details = statsig.initialize_with_details().result()
    if not details.init_success or "DataStore" not in str(details.source):
        raise SystemExit(f"Statsig did not load the local specs: {details.source}")
    statsig_users = [
        StatsigUser(
            user_id=u["id"], custom={"country": u["country"], "app_version": u["app_version"]}
        )
        for u in users
    ]
    options = ExperimentEvaluationOptions(disable_exposure_logging=True)
    flag, default = s.flag, s.default

    def run() -> list[str | None]:
        get = statsig.get_experiment
        out: list[str | None] = []
        for user in statsig_users:
            value = get(user, flag, options).get_string("variant", default)
            out.append(None if value == default else value)
        return out

    peers.peers.append(
        Peer(
            "statsig",
            "statsig-python-core",
            "Statsig.get_experiment, Rust core; exposure logging off",
            run,
        )
    )
    peers.closers.append(lambda: statsig.shutdown().wait())


# --------------------------------------------------------------------------------------
# LaunchDarkly: the server SDK with its file data source, events off.
# --------------------------------------------------------------------------------------


def launchdarkly_flag(s: Scenario) -> dict[str, Any]:
    """A rule with the two clauses (LaunchDarkly has no semVerGreaterThanOrEqual: a negated
    semVerLessThan) and an experiment rollout: three thirds of 90%, the rest untracked on
    the default variation."""
    total = 100_000
    each = round(s.coverage * total / len(s.variants))
    return {
        "key": s.flag,
        "on": True,
        "version": 1,
        "salt": s.experiment,
        "variations": [s.default, *s.variants],
        "offVariation": 0,
        "fallthrough": {"variation": 0},
        "rules": [
            {
                "id": s.experiment,
                "clauses": [
                    {
                        "attribute": "country",
                        "op": "in",
                        "values": list(s.target_countries),
                        "negate": False,
                    },
                    {
                        "attribute": "app_version",
                        "op": "semVerLessThan",
                        "values": [s.min_version],
                        "negate": True,
                    },
                ],
                "rollout": {
                    "kind": "experiment",
                    "bucketBy": "key",
                    "variations": [
                        *({"variation": i + 1, "weight": each} for i in range(len(s.variants))),
                        {
                            "variation": 0,
                            "weight": total - each * len(s.variants),
                            "untracked": True,
                        },
                    ],
                },
            }
        ],
    }


def add_launchdarkly(peers: Peers, s: Scenario, users: Users, workdir: Path) -> None:
    import ldclient
    from ldclient.config import Config
    from ldclient.context import Context
    from ldclient.integrations import Files

    flag = launchdarkly_flag(s)
    peers.configurations["launchdarkly"] = flag
    path = workdir / "launchdarkly-flags.json"
    path.write_text(json.dumps({"flags": {s.flag: flag}}))
    client = ldclient.LDClient(
        Config(
            sdk_key="offline-benchmark",
            update_processor_class=Files.new_data_source(paths=[str(path)]),
            send_events=False,
            diagnostic_opt_out=True,
        )
    )
    if not client.is_initialized():
        raise SystemExit("LaunchDarkly did not load its flag file")
    contexts = [
        Context.builder(u["id"]).set("country", u["country"]).set("app_version", u["app_version"])
        for u in users
    ]
    built = [c.build() for c in contexts]
    key, default = s.flag, s.default

    def run() -> list[str | None]:
        variation = client.variation
        out: list[str | None] = []
        for context in built:
            value = variation(key, context, default)
            out.append(None if value == default else value)
        return out

    peers.peers.append(
        Peer(
            "launchdarkly",
            "launchdarkly-server-sdk",
            "LDClient.variation, file data source, events off",
            run,
        )
    )
    peers.closers.append(client.close)


# --------------------------------------------------------------------------------------
# Flagsmith: offline mode on a local environment document.
# --------------------------------------------------------------------------------------


def flagsmith_environment(s: Scenario) -> dict[str, Any]:
    """A segment (the two conditions and a 90% percentage split) overriding the feature
    with a multivariate value: the first variant is the control value, the other two
    options take a third each."""
    share = 100 / len(s.variants)
    return {
        "api_key": "offline-benchmark",
        "name": "bench",
        "updated_at": "2026-01-01T00:00:00+00:00",
        "identity_overrides": [],
        "feature_states": [
            {
                "django_id": 1,
                "feature": {"id": 1, "name": s.flag, "type": "STANDARD"},
                "enabled": True,
                "feature_state_value": s.default,
                "multivariate_feature_state_values": [],
            }
        ],
        "project": {
            "id": 1,
            "name": "bench",
            "hide_disabled_flags": False,
            "organisation": {
                "id": 1,
                "name": "bench",
                "feature_analytics": False,
                "stop_serving_flags": False,
                "persist_trait_data": False,
            },
            "segments": [
                {
                    "id": 1,
                    "name": s.experiment,
                    "rules": [
                        {
                            "type": "ALL",
                            "conditions": [],
                            "rules": [
                                {
                                    "type": "ALL",
                                    "rules": [],
                                    "conditions": [
                                        {
                                            "operator": "IN",
                                            "property_": "country",
                                            "value": ",".join(s.target_countries),
                                        },
                                        {
                                            "operator": "GREATER_THAN_INCLUSIVE",
                                            "property_": "app_version",
                                            "value": f"{s.min_version}:semver",
                                        },
                                        {
                                            "operator": "PERCENTAGE_SPLIT",
                                            "property_": None,
                                            "value": str(round(s.coverage * 100)),
                                        },
                                    ],
                                }
                            ],
                        }
                    ],
                    "feature_states": [
                        {
                            "django_id": 2,
                            "feature": {"id": 1, "name": s.flag, "type": "MULTIVARIATE"},
                            "enabled": True,
                            "feature_state_value": s.variants[0],
                            "feature_segment": {"priority": 0},
                            "multivariate_feature_state_values": [
                                {
                                    "id": 10 + i,
                                    "percentage_allocation": share,
                                    "multivariate_feature_option": {"id": 20 + i, "value": v},
                                }
                                for i, v in enumerate(s.variants[1:], 1)
                            ],
                        }
                    ],
                }
            ],
        },
    }


def add_flagsmith(peers: Peers, s: Scenario, users: Users, workdir: Path) -> None:
    from flagsmith import Flagsmith
    from flagsmith.offline_handlers import LocalFileHandler

    environment = flagsmith_environment(s)
    peers.configurations["flagsmith"] = environment
    path = workdir / "flagsmith-environment.json"
    path.write_text(json.dumps(environment))
    flagsmith = Flagsmith(
        offline_mode=True, offline_handler=LocalFileHandler(str(path)), enable_analytics=False
    )
    identities = [
        (u["id"], {"country": u["country"], "app_version": u["app_version"]}) for u in users
    ]
    flag, default = s.flag, s.default

    def run() -> list[str | None]:
        get = flagsmith.get_identity_flags
        out: list[str | None] = []
        for identifier, traits in identities:
            value = get(identifier, traits=traits).get_feature_value(flag)
            out.append(None if value == default else value)
        return out

    peers.peers.append(
        Peer(
            "flagsmith",
            "flagsmith",
            "Flagsmith.get_identity_flags + get_feature_value, offline mode",
            run,
        )
    )


def build_peers(s: Scenario, users: Users) -> Peers:
    """Every peer above, configured and ready; close() releases their threads."""
    peers = Peers()
    workdir = Path(tempfile.mkdtemp(prefix="assay-bench-peers-"))
    # The peers' configuration files are read once, at start-up; close() removes them.
    peers.closers.append(partial(shutil.rmtree, workdir, ignore_errors=True))
    add_eppo(peers, s, users)
    add_statsig(peers, s, users)
    add_launchdarkly(peers, s, users, workdir)
    add_flagsmith(peers, s, users, workdir)
    return peers
