"""The OpenFeature providers, driven through OpenFeature's own client API: in process on an
embedded engine, and remote against a real hypercorn server. Every value and variant is
the engine's own decision; errors are OpenFeature's codes; tracking feeds conversions."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import pytest
import trio
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from openfeature.track import TrackingEventDetails

import assay
from assay.adapters.http import serve
from assay.adapters.openfeature import AssayProvider, RemoteAssayProvider
from assay.engine import (
    SYSTEM_KEY,
    Engine,
    Experiment,
    ExperimentRule,
    ExperimentSpec,
    Flag,
    FlagSpec,
    FlagType,
    ForceRule,
    Metric,
    MetricSpec,
    ProjectSpec,
    Role,
    Transition,
    Variant,
)

P = "shop"
SUBJECTS = [f"user-{i}" for i in range(200)]

FLAGS: dict[str, tuple[FlagType, Any, list[Any]]] = {
    # key: (type, default value, rules)
    "dark-mode": (FlagType.BOOLEAN, False, [ForceRule(condition={"beta": True}, value=True)]),
    "greeting": (FlagType.STRING, "hello", [ForceRule(condition={"country": "FR"}, value="salut")]),
    "max-items": (FlagType.NUMBER, 10, [ForceRule(condition={"plan": "pro"}, value=50)]),
    "ratio": (FlagType.NUMBER, 0.5, []),
    "layout": (FlagType.JSON, {"columns": 2}, [ForceRule(condition={"wide": True}, value=[1, 2])]),
    "checkout": (FlagType.STRING, "blue", [ExperimentRule(experiment="button")]),
}


async def populate(engine: Engine) -> None:
    service = engine.service
    await service.create_project(SYSTEM_KEY, ProjectSpec(key=P))
    await service.create_object(SYSTEM_KEY, Metric, P, MetricSpec(key="purchases", kind="count"))
    await service.create_object(
        SYSTEM_KEY,
        Experiment,
        P,
        ExperimentSpec(
            key="button",
            variants=[Variant(key="control", value="blue"), Variant(key="green", value="green")],
            primary_metrics=["purchases"],
        ),
    )
    for key, (flag_type, default, rules) in FLAGS.items():
        spec = FlagSpec(key=key, type=flag_type, default_value=default, rules=rules)
        await service.create_object(SYSTEM_KEY, Flag, P, spec)
    await service.transition_experiment(SYSTEM_KEY, P, "button", Transition.START)
    await engine.refresh()


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    async with assay.open_engine(
        assay.EngineConfig(store="memory"), load_entry_points=False
    ) as engine:
        await populate(engine)
        yield engine


def client_for(provider: Any) -> OpenFeatureClient:
    # A domain of its own per test: OpenFeature's registry is global to the process.
    domain = f"assay-test-{uuid.uuid4().hex}"
    # Initialised in a background thread otherwise: evaluating at once could see NOT_READY.
    api.set_provider_and_wait(provider, domain=domain)
    return api.get_client(domain=domain)


CONTEXTS = [
    {"beta": True, "country": "FR", "plan": "pro", "wide": True},
    {"beta": False, "country": "DE", "plan": "free"},
    {},
]


def resolve_all(client: OpenFeatureClient, subject: str, attributes: dict[str, Any]) -> dict:
    context = EvaluationContext(targeting_key=subject, attributes=attributes)
    return {
        "dark-mode": client.get_boolean_details("dark-mode", True, context),
        "greeting": client.get_string_details("greeting", "?", context),
        "max-items": client.get_integer_details("max-items", -1, context),
        "ratio": client.get_float_details("ratio", -1.0, context),
        "layout": client.get_object_details("layout", {}, context),
        "checkout": client.get_string_details("checkout", "?", context),
    }


def assert_same_as_engine(engine: Engine, details: dict, subject: str, attributes: dict) -> None:
    for flag, got in details.items():
        decision = engine.decide(flag, subject, attributes, project=P)
        assert got.error_code is None, (flag, got.error_message)
        assert got.value == decision.value
        assert got.variant == decision.variant
        assert got.flag_metadata["assay_reason"] == decision.reason
        expected = {
            "default": Reason.DEFAULT,
            "forced": Reason.TARGETING_MATCH,
            "experiment_assigned": Reason.SPLIT,
        }[decision.reason]
        assert got.reason == expected


async def test_in_process_resolves_every_type_as_the_engine_decides(engine: Engine) -> None:
    async with AssayProvider.open(engine, P) as provider:
        client = client_for(provider)
        for subject in SUBJECTS[:50]:
            for attributes in CONTEXTS:
                details = resolve_all(client, subject, attributes)
                assert_same_as_engine(engine, details, subject, attributes)
        # The async API answers the same.
        context = EvaluationContext(targeting_key="user-1", attributes=CONTEXTS[0])
        async_details = await client.get_object_details_async("layout", {}, context)
        assert async_details.value == [1, 2]
        assert isinstance(client.get_float_value("max-items", 0.0, context), float)


async def test_errors_are_openfeature_codes_with_the_callers_default(engine: Engine) -> None:
    async with AssayProvider.open(engine, P) as provider:
        client = client_for(provider)
        context = EvaluationContext(targeting_key="user-1")
        missing = client.get_boolean_details("no-such-flag", True, context)
        assert (missing.value, missing.error_code) == (True, ErrorCode.FLAG_NOT_FOUND)
        assert missing.reason == Reason.ERROR
        wrong = client.get_integer_details("greeting", 7, context)
        assert (wrong.value, wrong.error_code) == (7, ErrorCode.TYPE_MISMATCH)
        # A boolean is never an integer, a float is never an integer.
        assert client.get_integer_details("dark-mode", 3, context).value == 3
        assert client.get_integer_details("ratio", 3, context).value == 3
        anonymous = client.get_string_details("greeting", "x", EvaluationContext())
        assert anonymous.error_code == ErrorCode.TARGETING_KEY_MISSING
        assert anonymous.value == "x"


async def test_exposures_once_and_tracking_feeds_conversions(engine: Engine) -> None:
    async with AssayProvider.open(engine, P) as provider:
        client = client_for(provider)
        variants = {}
        for subject in SUBJECTS:
            context = EvaluationContext(targeting_key=subject)
            for _ in range(3):  # evaluated again and again: one exposure each
                variants[subject] = client.get_string_details("checkout", "?", context).variant
        buyers = SUBJECTS[:40]
        for subject in buyers:
            client.track(
                "purchases",
                EvaluationContext(targeting_key=subject),
                TrackingEventDetails(value=2.0),
            )
        # A subject never evaluated here names its experiment explicitly.
        await provider.flush()
        summary = await engine.ingestion_summary(P, "button")
    assert provider.dropped == 0
    assert summary.exposures == len(SUBJECTS)
    by_variant = {v.variant: v.exposures for v in summary.variants}
    expected: dict[str, int] = {}
    for variant in variants.values():
        expected[variant] = expected.get(variant, 0) + 1
    assert by_variant == expected
    (purchases,) = [m for m in summary.metrics if m.metric == "purchases"]
    assert (purchases.conversions, purchases.value_sum) == (len(buyers), 2.0 * len(buyers))


async def test_leaving_open_records_what_is_queued(engine: Engine) -> None:
    async with AssayProvider.open(engine, P) as provider:
        client = client_for(provider)
        for subject in SUBJECTS[:30]:
            client.get_string_value("checkout", "?", EvaluationContext(targeting_key=subject))
    summary = await engine.ingestion_summary(P, "button")
    assert summary.exposures == 30


async def test_remote_provider_answers_as_the_server_decides(engine: Engine) -> None:
    _, secret = await engine.service.create_key(SYSTEM_KEY, role=Role.SDK, project=P)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve, engine, host="127.0.0.1", port=0))
        provider = RemoteAssayProvider(f"http://127.0.0.1:{port}", secret, P)
        client = client_for(provider)

        def resolve_in_thread() -> list[tuple[str, dict, dict]]:
            # The sync client blocks: it runs in a thread while the server runs here.
            out = []
            for subject in SUBJECTS[:20]:
                for attributes in CONTEXTS:
                    out.append((subject, attributes, resolve_all(client, subject, attributes)))
            context = EvaluationContext(targeting_key=SUBJECTS[0])
            client.track("purchases", context, TrackingEventDetails(value=5.0))
            missing = client.get_boolean_details("no-such-flag", False, context)
            assert missing.error_code == ErrorCode.FLAG_NOT_FOUND
            anonymous = client.get_boolean_details("dark-mode", False, EvaluationContext())
            assert anonymous.error_code == ErrorCode.TARGETING_KEY_MISSING
            return out

        results = await trio.to_thread.run_sync(resolve_in_thread)
        for subject, attributes, details in results:
            assert_same_as_engine(engine, details, subject, attributes)
        # The async methods use the async client, on this (Trio) loop.
        context = EvaluationContext(targeting_key="user-3", attributes={"country": "FR"})
        greeting = await client.get_string_details_async("greeting", "?", context)
        assert (greeting.value, greeting.reason) == ("salut", Reason.TARGETING_MATCH)
        summary = await engine.ingestion_summary(P, "button")
        assert summary.exposures == 20
        (purchases,) = [m for m in summary.metrics if m.metric == "purchases"]
        assert (purchases.conversions, purchases.value_sum) == (1, 5.0)
        await provider.aclose()
        nursery.cancel_scope.cancel()


async def test_remote_provider_turns_transport_and_auth_failures_into_defaults(
    engine: Engine,
) -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve, engine, host="127.0.0.1", port=0))
        wrong_key = RemoteAssayProvider(f"http://127.0.0.1:{port}", "assay_wrong", P)
        client = client_for(wrong_key)
        context = EvaluationContext(targeting_key="user-1")
        refused = await client.get_boolean_details_async("dark-mode", True, context)
        assert (refused.value, refused.error_code) == (True, ErrorCode.GENERAL)
        assert "unauthenticated" in (refused.error_message or "")
        await wrong_key.aclose()
        nursery.cancel_scope.cancel()
    gone = RemoteAssayProvider(f"http://127.0.0.1:{port}", "assay_x", P, timeout=0.5)
    unreachable = await client_for(gone).get_string_details_async("greeting", "d", context)
    assert (unreachable.value, unreachable.error_code) == ("d", ErrorCode.GENERAL)
    await gone.aclose()
