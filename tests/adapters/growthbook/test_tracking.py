"""The tracking callbacks for GrowthBook's SDKs, end to end and alone.

End to end: GrowthBook's Python SDK and its JavaScript SDK (run with Node) evaluate the
payload assay exports for an experiment (``sdk_payload``), each subject viewing it more
than once, with assay's callback reporting to a real server (hypercorn on an engine on
PostgreSQL); some requests
fail before reaching the server and some answers are lost after it handled them, so
batches are retried. The experiment's ingestion summary then counts exactly the subjects
that were evaluated, each in the variant the engine decides for it.

Alone (``ExposureTracker`` against ``httpx.MockTransport``): what is retried and what is
not, ``Retry-After``, the bounded queue, batch sizes, ``flush`` and ``close``, and the event
id, computed the same in Python and in JavaScript.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from functools import partial
from importlib.resources import files
from typing import Any

import httpx
import pytest
import trio
from growthbook import GrowthBook

import assay
from assay.adapters.growthbook import payload_document, sdk_payload
from assay.adapters.growthbook.tracking import ExposureTracker, exposure_event_id
from assay.adapters.http import serve
from assay.engine import (
    SYSTEM_KEY,
    Engine,
    Experiment,
    ExperimentRule,
    ExperimentSpec,
    Flag,
    FlagSpec,
    FlagType,
    Metric,
    MetricSpec,
    ProjectSpec,
    Role,
    SdkConnectionSpec,
    Transition,
    Variant,
)

from .conftest import GrowthBookJs

P = "shop"
EXPERIMENT = "button"
FLAG = "checkout"
MODULE = files("assay.adapters.growthbook") / "js" / "assay-tracking.mjs"


async def populate(engine: Engine) -> None:
    service = engine.service
    await service.create_project(SYSTEM_KEY, ProjectSpec(key=P))
    await service.create_object(SYSTEM_KEY, Metric, P, MetricSpec(key="purchases"))
    spec = ExperimentSpec(
        key=EXPERIMENT,
        variants=[
            Variant(key="control", value="blue"),
            Variant(key="green", value="green"),
            Variant(key="red", value="red", weight=2),
        ],
        coverage=0.8,
        primary_metrics=["purchases"],
    )
    await service.create_object(SYSTEM_KEY, Experiment, P, spec)
    flag = FlagSpec(
        key=FLAG,
        type=FlagType.STRING,
        default_value="blue",
        rules=[ExperimentRule(experiment=EXPERIMENT)],
    )
    await service.create_object(SYSTEM_KEY, Flag, P, flag)
    await service.transition_experiment(SYSTEM_KEY, P, EXPERIMENT, Transition.START)
    await engine.refresh()


def payload(engine: Engine) -> dict[str, Any]:
    """The project's GrowthBook payload, as ``GET /api/features/{clientKey}`` serves it."""
    document = payload_document(sdk_payload(engine, P))
    assert FLAG in document["features"]
    return document


@pytest.fixture
async def engine(pg_dsn: str) -> AsyncIterator[Engine]:
    config = assay.EngineConfig(database_url=pg_dsn, pool_size=4)
    async with assay.open_engine(config, load_entry_points=False) as engine:
        await populate(engine)
        yield engine


def expected_exposures(engine: Engine, subjects: list[str]) -> dict[str, int]:
    """Subjects per variant, as the engine decides them; those outside stay out."""
    counts: dict[str, int] = {}
    for subject in subjects:
        decision = engine.decide(FLAG, subject, {"id": subject}, project=P)
        if decision.in_experiment:
            assert decision.variant is not None
            counts[decision.variant] = counts.get(decision.variant, 0) + 1
    return counts


async def counted(engine: Engine) -> dict[str, int]:
    summary = await engine.ingestion_summary(P, EXPERIMENT)
    assert summary.crossovers == 0
    return {v.variant: v.exposures for v in summary.variants if v.exposures}


class LosesAnswers(httpx.BaseTransport):
    """Fails the first ``fail`` requests before they reach the server, then loses the
    answers of the next ``lose`` after the server handled them: both kinds are retried."""

    def __init__(self, fail: int, lose: int) -> None:
        self.inner = httpx.HTTPTransport()
        self.fail, self.lose = fail, lose
        self.requests = 0
        self.lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests += 1
            n = self.requests
        if n <= self.fail:
            raise httpx.ConnectError("refused (test)", request=request)
        response = self.inner.handle_request(request)
        response.read()
        if n <= self.fail + self.lose:
            response.close()
            raise httpx.ReadError("answer lost (test)", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


async def connection(engine: Engine, *, allow_exposures: bool = True) -> str:
    """A new SDK connection's client key."""
    spec = SdkConnectionSpec(name=f"web-{allow_exposures}", allow_exposures=allow_exposures)
    made = await engine.service.create_connection(SYSTEM_KEY, P, spec)
    await engine.refresh()
    return made.client_key


async def test_python_sdk_exposures_reach_the_report_once_each(engine: Engine) -> None:
    client_key = await connection(engine)
    _, secret = await engine.service.create_key(SYSTEM_KEY, role=Role.SDK, project=P)
    subjects = [f"py-{i}" for i in range(400)]
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve, engine, host="127.0.0.1", port=0))
        host = f"http://127.0.0.1:{port}"
        transport = LosesAnswers(fail=1, lose=2)
        tracker = ExposureTracker(
            host, client_key=client_key, batch_size=64, backoff=0.01, transport=transport
        )

        def evaluate() -> list[Any]:
            # The payload as the SDK downloads it (a service keeps it between requests).
            document = httpx.get(f"{host}/api/features/{client_key}", timeout=10).json()
            assert document == payload(engine) | {"dateUpdated": document["dateUpdated"]}
            values = []
            for view in range(3):
                for subject in subjects:
                    # A new SDK instance per view, as requests of a web service have: the
                    # SDK's own memory of tracked experiments does not hide the repeat.
                    gb = GrowthBook(
                        attributes={"id": subject},
                        features=document["features"],
                        saved_groups=document["savedGroups"],
                        on_experiment_viewed=tracker,
                    )
                    value = gb.get_feature_value(FLAG, None)
                    if view == 0:
                        values.append(value)
                    gb.destroy()
            assert tracker.flush(timeout=60)
            return values

        values = await trio.to_thread.run_sync(evaluate)
        for subject, value in zip(subjects, values, strict=True):
            assert value == engine.decide(FLAG, subject, {"id": subject}, project=P).value
        expected = expected_exposures(engine, subjects)
        assert await counted(engine) == expected
        stats = tracker.stats
        in_experiment = sum(expected.values())
        assert stats.queued == in_experiment
        assert stats.repeated == 2 * in_experiment
        assert stats.retries >= 3
        assert stats.failed == stats.dropped == stats.rejected == 0
        # A batch whose answer was lost had been stored: its retry was a duplicate.
        assert stats.recorded + stats.deduplicated == in_experiment
        assert stats.deduplicated > 0

        # A server-side service (an API key, the events API) reports the same views: the
        # event ids are the same, so nothing is stored twice.
        again = ExposureTracker(host, api_key=secret, project=P)
        features = payload(engine)["features"]
        for subject in subjects[:100]:
            gb = GrowthBook(
                attributes={"id": subject}, features=features, on_experiment_viewed=again
            )
            gb.get_feature_value(FLAG, None)
        assert await trio.to_thread.run_sync(again.close)
        assert again.stats.recorded == 0
        assert again.stats.deduplicated == again.stats.queued > 0
        assert await counted(engine) == expected
        await trio.to_thread.run_sync(tracker.close)
        nursery.cancel_scope.cancel()


async def test_a_connection_that_takes_no_exposures_is_not_retried(engine: Engine) -> None:
    client_key = await connection(engine, allow_exposures=False)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve, engine, host="127.0.0.1", port=0))
        tracker = ExposureTracker(f"http://127.0.0.1:{port}", client_key=client_key)
        result = Viewed("control", hash_value="u1")
        tracker(experiment=Viewed(EXPERIMENT), result=result, user_context=None)
        assert await trio.to_thread.run_sync(tracker.close)
        assert (tracker.stats.failed, tracker.stats.retries) == (1, 0)  # 403: final
        assert await counted(engine) == {}
        nursery.cancel_scope.cancel()


async def test_javascript_sdk_exposures_reach_the_report_once_each(
    engine: Engine, growthbook_js: GrowthBookJs
) -> None:
    client_key = await connection(engine)
    subjects = [f"js-{i}" for i in range(600)]
    triples = [[EXPERIMENT, "green", "js-1"], ["e", "v", "用户 😀"], ["e", "v", "a\0b"]]
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve, engine, host="127.0.0.1", port=0))
        batch = {
            "module": str(MODULE),
            # The SDK downloads the payload and the tracker reports with the client key.
            "options": {
                "apiHost": f"http://127.0.0.1:{port}",
                "clientKey": client_key,
                "batchSize": 100,
            },
            "flag": FLAG,
            "subjects": [{"id": s} for s in subjects],
            "views": 3,
            "fail_first": 1,
            "lose_answers": 2,
            "ids": triples,
        }
        out = await trio.to_thread.run_sync(growthbook_js.run, "track.mjs", batch)
        for subject, value in zip(subjects, out["values"], strict=True):
            assert value == engine.decide(FLAG, subject, {"id": subject}, project=P).value
        expected = expected_exposures(engine, subjects)
        assert await counted(engine) == expected
        stats = out["stats"]
        in_experiment = sum(expected.values())
        assert stats["queued"] == in_experiment
        assert stats["repeated"] == 2 * in_experiment
        assert stats["retries"] >= 3
        assert stats["recorded"] + stats["deduplicated"] == in_experiment
        assert stats["deduplicated"] > 0
        assert stats["failed"] == stats["dropped"] == stats["rejected"] == 0
        # Python and JavaScript give an exposure the same id: either may report it.
        assert out["ids"] == [exposure_event_id(*t) for t in triples]
        nursery.cancel_scope.cancel()


# --- the Python tracker alone ---------------------------------------------------------


class Viewed:
    """What GrowthBook's SDK hands the callback, reduced to what the tracker reads."""

    def __init__(self, key: str = "", hash_value: str = "") -> None:
        self.key = key
        self.hashValue = hash_value
        self.attributes: dict[str, Any] = {}


def view(tracker: ExposureTracker, subject: str, variant: str = "a", experiment: str = "e") -> None:
    result = Viewed(variant, hash_value=subject)
    tracker(experiment=Viewed(experiment), result=result, user_context=None)


class Recorder:
    """A mock server answering with ``statuses`` in turn (then 200), keeping every batch."""

    def __init__(self, *statuses: int, headers: dict[str, str] | None = None) -> None:
        self.statuses = list(statuses)
        self.headers = headers or {}
        self.batches: list[list[dict[str, Any]]] = []
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status = self.statuses.pop(0) if self.statuses else 200
        events = json.loads(request.content)["events"]
        if status != 200:
            return httpx.Response(status, headers=self.headers, json={"error": {"code": "x"}})
        self.batches.append(events)
        n = len(events)
        return httpx.Response(200, json={"received": n, "recorded": n, "deduplicated": 0})


@pytest.fixture
def make_tracker() -> Iterator[Any]:
    made: list[ExposureTracker] = []

    def make(recorder: Recorder, **options: Any) -> ExposureTracker:
        options = {"backoff": 0.001, "flush_interval": 60.0, **options}
        tracker = ExposureTracker(
            "http://assay.test/", transport=httpx.MockTransport(recorder), **options
        )
        made.append(tracker)
        return tracker

    yield make
    for tracker in made:
        tracker.close(timeout=5)


def test_client_key_and_api_key_requests(make_tracker: Any) -> None:
    by_client_key = Recorder()
    tracker = make_tracker(by_client_key, client_key="sdk-abc/1")
    view(tracker, "u1")
    assert tracker.flush(timeout=10)
    (request,) = by_client_key.requests
    assert request.url == "http://assay.test/api/events/sdk-abc%2F1"
    assert "authorization" not in request.headers
    (event,) = by_client_key.batches[0]
    assert event["event_id"] == exposure_event_id("e", "a", "u1")
    assert {k: event[k] for k in ("type", "experiment", "variant", "subject")} == {
        "type": "exposure",
        "experiment": "e",
        "variant": "a",
        "subject": "u1",
    }
    by_api_key = Recorder()
    tracker = make_tracker(by_api_key, api_key="assay_secret", project="shop")
    view(tracker, "u1")
    assert tracker.flush(timeout=10)
    (request,) = by_api_key.requests
    assert str(request.url) == "http://assay.test/api/v1/events?project=shop"
    assert request.headers["authorization"] == "Bearer assay_secret"
    with pytest.raises(ValueError, match="either"):
        ExposureTracker("http://x", client_key="k", api_key="a", project="p")
    with pytest.raises(ValueError, match="project"):
        ExposureTracker("http://x", api_key="a")


def test_batches_and_repeats(make_tracker: Any) -> None:
    recorder = Recorder()
    tracker = make_tracker(recorder, client_key="k", batch_size=10)
    for i in range(25):
        view(tracker, f"u{i}")
        view(tracker, f"u{i}")  # the same view again: not queued
    view(tracker, "u0", variant="b")  # another variant is another exposure
    assert tracker.flush(timeout=10)
    assert sorted(len(b) for b in recorder.batches) == [6, 10, 10]
    stats = tracker.stats
    assert (stats.queued, stats.repeated, stats.batches, stats.recorded) == (26, 25, 3, 26)


def test_retries_what_may_pass_and_honours_retry_after(make_tracker: Any) -> None:
    recorder = Recorder(503, 429, 500, headers={"Retry-After": "0"})
    tracker = make_tracker(recorder, client_key="k", backoff=60.0)  # Retry-After wins
    view(tracker, "u1")
    assert tracker.flush(timeout=10)
    assert len(recorder.requests) == 4
    assert len(recorder.batches) == 1
    assert (tracker.stats.retries, tracker.stats.recorded, tracker.stats.failed) == (3, 1, 0)


def test_gives_up_on_final_errors_and_after_max_attempts(make_tracker: Any) -> None:
    final = Recorder(404)
    tracker = make_tracker(final, client_key="revoked")
    view(tracker, "u1")
    assert tracker.flush(timeout=10)
    assert (len(final.requests), tracker.stats.failed, tracker.stats.retries) == (1, 1, 0)

    down = Recorder(*[503] * 10)
    tracker = make_tracker(down, client_key="k", max_attempts=3)
    view(tracker, "u1")
    view(tracker, "u2")
    assert tracker.flush(timeout=10)
    assert (len(down.requests), tracker.stats.failed, tracker.stats.retries) == (3, 2, 2)


def test_a_full_queue_drops_and_never_blocks(make_tracker: Any) -> None:
    gate = threading.Event()
    recorder = Recorder()

    def slow(request: httpx.Request) -> httpx.Response:
        gate.wait(10)
        return recorder(request)

    tracker = ExposureTracker(
        "http://assay.test", client_key="k", max_queue=5, batch_size=1,
        transport=httpx.MockTransport(slow),
    )  # fmt: skip
    try:
        for i in range(50):  # one in flight, five queued, the rest dropped
            view(tracker, f"u{i}")
        assert tracker.stats.dropped >= 44
        gate.set()
        assert tracker.flush(timeout=10)
        sent = sum(len(b) for b in recorder.batches)
        assert sent == tracker.stats.queued == 50 - tracker.stats.dropped
    finally:
        gate.set()
        tracker.close(timeout=5)


def test_close_sends_what_is_queued_and_then_takes_nothing(make_tracker: Any) -> None:
    recorder = Recorder()
    tracker = make_tracker(recorder, client_key="k", flush_interval=3600.0)
    for i in range(3):
        view(tracker, f"u{i}")
    assert recorder.batches == []  # the interval has not passed
    assert tracker.close(timeout=10)
    assert [len(b) for b in recorder.batches] == [3]
    view(tracker, "late")
    assert tracker.stats.dropped == 1


def test_the_subject_is_the_id_attribute_else_the_hashed_value(make_tracker: Any) -> None:
    recorder = Recorder()
    tracker = make_tracker(recorder, client_key="k")

    class User:
        attributes: dict[str, Any]

    user = User()
    user.attributes = {"id": 123.0, "deviceId": "d1"}
    result = Viewed("a", hash_value="d1")
    tracker(experiment=Viewed("e"), result=result, user_context=user)
    user.attributes = {"deviceId": "d2"}
    tracker(experiment=Viewed("e"), result=Viewed("a", hash_value="d2"), user_context=user)
    tracker(experiment=Viewed("e"), result=Viewed("a", hash_value=""), user_context=None)
    assert tracker.flush(timeout=10)
    assert [e["subject"] for e in recorder.batches[0]] == ["123", "d2"]
    assert tracker.stats.dropped == 1


# --- the JavaScript tracker alone -----------------------------------------------------


def test_javascript_tracker_batches_retries_bounds_and_beacons(growthbook_js: GrowthBookJs) -> None:
    out = growthbook_js.run("tracking-cases.mjs", {"module": str(MODULE)})

    def sizes(case: str) -> list[int]:
        return [len(r["events"]) for r in out[case]["requests"]]

    batches = out["batches"]
    assert sorted(sizes("batches")) == [6, 10, 10]
    assert {r["url"] for r in batches["requests"]} == {"http://assay.test/api/events/sdk-k%2F1"}
    first = batches["requests"][0]["events"][0]
    assert first["event_id"] == exposure_event_id("e", first["variant"], first["subject"])
    assert (batches["stats"]["queued"], batches["stats"]["repeated"]) == (26, 25)
    # 503, 429 and 500 are retried (Retry-After: 0 honoured), then recorded once.
    assert sizes("retried") == [1, 1, 1, 1]
    assert (out["retried"]["stats"]["retries"], out["retried"]["stats"]["recorded"]) == (3, 1)
    # A 404 (a revoked client key) is final; 503 stops after maxAttempts.
    assert (sizes("final"), out["final"]["stats"]["failed"]) == ([1], 1)
    assert (sizes("exhausted"), out["exhausted"]["stats"]["failed"]) == ([1, 1, 1], 1)
    assert (sizes("bounded"), out["bounded"]["stats"]["dropped"]) == ([5], 3)
    # A hidden page sends what is queued with a beacon, not a request.
    hidden = out["hidden"]
    assert hidden["requests"] == []
    (beacon,) = hidden["beacons"]
    assert beacon["type"] == "text/plain;charset=utf-8"
    assert sorted(e["subject"] for e in beacon["events"]) == ["u0", "u1", "u2"]
    # A refused beacon falls back to a (keepalive) request.
    refused = out["hidden, beacon refused"]
    assert len(refused["beacons"]) == 1
    assert [e["subject"] for r in refused["requests"] for e in r["events"]] == ["u1"]


def test_a_process_exiting_without_close_sends_what_is_queued(tmp_path: Any) -> None:
    import subprocess
    import sys

    script = tmp_path / "exits.py"
    script.write_text(
        "import json, httpx\n"
        "from assay.adapters.growthbook.tracking import ExposureTracker\n"
        "def answer(request):\n"
        "    print('sent', len(json.loads(request.content)['events']), flush=True)\n"
        "    return httpx.Response(200, json={'recorded': 1})\n"
        "tracker = ExposureTracker('http://assay.test', client_key='k', flush_interval=3600,\n"
        "                          transport=httpx.MockTransport(answer))\n"
        "class Seen: pass\n"
        "experiment, result = Seen(), Seen()\n"
        "experiment.key, result.key, result.hashValue = 'e', 'a', 'u1'\n"
        "tracker(experiment=experiment, result=result)\n"
        "print('exiting', flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split("\n")[:2] == ["exiting", "sent 1"]
