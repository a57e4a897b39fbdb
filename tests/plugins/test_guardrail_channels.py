"""The built-in notification channels against a real HTTP receiver on 127.0.0.1: a webhook
arrives signed (HMAC-SHA256 of the body), a Slack payload is Slack's shape, and an
endpoint that fails is retried from the durable outbox until it delivers."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import trio

import assay
from assay.engine import (
    SYSTEM_KEY,
    Engine,
    EngineConfig,
    Experiment,
    ExperimentSpec,
    Metric,
    MetricSpec,
    ProjectSpec,
    Transition,
    Variant,
)
from assay.engine._events import Event, Exposure
from assay.engine._guardrails import ExperimentCheck
from assay.engine._model import Guardrail
from assay.plugins.guardrails import sign, slack_payload

P, E = "shop", "new-checkout"
SECRET = "whsec-test-secret"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A minimal HTTP/1.1 server: records each request, answers 503 to the first
    ``failures`` of them and 200 after, and closes every connection."""

    failures: int = 0
    calls: int = 0
    delivered: list[Received] = field(default_factory=list)
    attempts: list[Received] = field(default_factory=list)
    port: int = 0

    async def serve(self, nursery: trio.Nursery) -> None:
        listeners = await nursery.start(partial(trio.serve_tcp, host="127.0.0.1"), self._handle, 0)
        self.port = listeners[0].socket.getsockname()[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        request_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
        while len(body) < int(headers.get("content-length", "0")):
            body += await stream.receive_some(65536)
        received = Received(request_line.split(" ")[1], headers, body)
        self.calls += 1
        self.attempts.append(received)
        if self.calls <= self.failures:
            status = b"503 Service Unavailable"
        else:
            status = b"200 OK"
            self.delivered.append(received)
        await stream.send_all(
            b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        await stream.aclose()


def _config(dsn: str) -> EngineConfig:
    return EngineConfig(
        database_url=dsn,
        pool_size=4,
        guardrail_interval_seconds=3600,
        guardrail_outbox_poll_seconds=0.05,
        # Short backoff for the test: 0.05 s, 0.1 s, 0.2 s...
        guardrail_retry_base_seconds=0.05,
        guardrail_retry_max_seconds=0.2,
    )


async def _srm_breach(engine: Engine, channels: list[dict[str, Any]]) -> ExperimentCheck:
    """A running experiment whose traffic is 600 against 400 on equal weights: its SRM
    health check breaches and notifies the guardrails' channels."""
    service = engine.service
    await service.create_project(SYSTEM_KEY, ProjectSpec(key=P))
    await service.create_object(SYSTEM_KEY, Metric, P, MetricSpec(key="errors"))
    guardrail = Guardrail(
        metric="errors", harmful_direction="increase", action="pause", channels=channels
    )
    spec = ExperimentSpec(
        key=E,
        variants=[Variant(key="control", value=False), Variant(key="treatment", value=True)],
        guardrails=[guardrail],
    )
    await service.create_object(SYSTEM_KEY, Experiment, P, spec)
    await service.transition_experiment(SYSTEM_KEY, P, E, Transition.START)
    await engine.refresh()
    events: list[Event] = [
        Exposure(experiment=E, subject=f"u{i}", variant="control" if i < 600 else "treatment")
        for i in range(1000)
    ]
    await engine.record_events(P, events)
    result = await engine.check_guardrails(P, E)
    assert [t.kind for t in result.triggers] == ["srm"]
    return result


async def wait_until(predicate: Callable[[], Awaitable[bool] | bool], seconds: float = 10) -> None:
    with trio.fail_after(seconds):
        while True:
            answer = predicate()
            if answer if isinstance(answer, bool) else await answer:
                return
            await trio.sleep(0.02)


async def test_a_webhook_arrives_signed_and_a_slack_message_in_slacks_shape(
    pg_dsn: str, nursery: trio.Nursery
) -> None:
    receiver = Receiver()
    await receiver.serve(nursery)
    channels = [
        {"type": "webhook", "url": receiver.url("/hook"), "secret": SECRET},
        {"type": "slack", "url": receiver.url("/slack")},
    ]
    async with assay.open_engine(_config(pg_dsn), load_entry_points=False) as engine:
        result = await _srm_breach(engine, channels)
        await wait_until(lambda: len(receiver.delivered) == 2)

        # The receiver has answered; the engine records the delivery just after.
        async def recorded() -> bool:
            items = (await engine.guardrail_outbox(P, E)).items
            return all(n.status == "delivered" for n in items)

        await wait_until(recorded)
        outbox = (await engine.guardrail_outbox(P, E)).items
        assert {(n.channel_type, n.status, n.attempts) for n in outbox} == {
            ("webhook", "delivered", 1),
            ("slack", "delivered", 1),
        }

    (hook,) = [r for r in receiver.delivered if r.path == "/hook"]
    # What a receiver does: recompute the HMAC over the raw body and compare.
    expected = "sha256=" + hmac.new(SECRET.encode(), hook.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(hook.headers["x-assay-signature"], expected)
    assert sign(hook.body, SECRET) == expected
    assert hook.headers["content-type"] == "application/json"
    payload = json.loads(hook.body)
    assert payload["id"] == hook.headers["x-assay-notification-id"]
    assert payload["type"] == "guardrail.triggered"
    assert payload["experiment"]["key"] == E
    assert payload["project"]["key"] == P
    (trigger,) = result.triggers
    assert payload["trigger"]["id"] == trigger.id
    assert payload["trigger"]["kind"] == "srm"
    assert payload["trigger"]["action"] == "notify"
    assert "secret" not in hook.body.decode()

    (slack,) = [r for r in receiver.delivered if r.path == "/slack"]
    message = json.loads(slack.body)
    assert set(message) == {"text", "blocks"}
    assert E in message["text"]
    assert message["blocks"][0]["type"] == "header"
    assert any(trigger.id in json.dumps(block) for block in message["blocks"])
    assert "x-assay-signature" not in slack.headers


async def test_a_failing_endpoint_is_retried_until_it_delivers(
    pg_dsn: str, nursery: trio.Nursery
) -> None:
    receiver = Receiver(failures=3)
    await receiver.serve(nursery)
    channels = [{"type": "webhook", "url": receiver.url("/hook"), "secret": SECRET}]
    async with assay.open_engine(_config(pg_dsn), load_entry_points=False) as engine:
        await _srm_breach(engine, channels)

        async def delivered() -> bool:
            return (await engine.guardrail_outbox(P, E)).items[0].status == "delivered"

        await wait_until(delivered)
        (notification,) = (await engine.guardrail_outbox(P, E)).items
        assert notification.attempts == 4
        assert notification.last_error is None
        assert engine.guardrail_status["delivery_failures"] == 3

    assert receiver.calls == 4
    # Every attempt carried the same notification, byte for byte: one id to de-duplicate on.
    assert len({a.body for a in receiver.attempts}) == 1
    assert {a.headers["x-assay-notification-id"] for a in receiver.attempts} == {notification.id}


async def test_a_notification_outlives_its_engine(pg_dsn: str, nursery: trio.Nursery) -> None:
    """Recorded while the endpoint is down, the notification waits in the database; a
    later engine (another process, after a crash) delivers it."""
    receiver = Receiver(failures=1_000_000)
    await receiver.serve(nursery)
    channels = [{"type": "webhook", "url": receiver.url("/hook")}]
    async with assay.open_engine(_config(pg_dsn), load_entry_points=False) as engine:
        await _srm_breach(engine, channels)

        # Wait for the engine to have written down the failed attempt, not merely for the
        # receiver to have answered it: leaving in between cancels that write.
        async def retrying() -> bool:
            return (await engine.guardrail_outbox(P, E)).items[0].status == "retrying"

        await wait_until(retrying)
    assert receiver.calls >= 1
    (waiting,) = (await _outbox(pg_dsn)).items
    assert waiting.status == "retrying"
    assert "503" in (waiting.last_error or "")

    receiver.failures = 0
    async with assay.open_engine(_config(pg_dsn), load_entry_points=False) as engine:

        async def delivered() -> bool:
            return (await engine.guardrail_outbox(P, E)).items[0].status == "delivered"

        await wait_until(delivered)
    assert len(receiver.delivered) == 1
    assert json.loads(receiver.delivered[0].body)["id"] == waiting.id


async def _outbox(dsn: str) -> Any:
    async with assay.open_engine(_config(dsn), load_entry_points=False) as engine:
        # A follower would not deliver; this one leads, so look before it does anything:
        # the poll is 0.05 s, the read is immediate.
        return await engine.guardrail_outbox(P, E)


def test_the_slack_payload_names_everything_a_reader_needs() -> None:
    from datetime import UTC, datetime

    from assay.engine._guardrails import Notification

    now = datetime.now(UTC)
    notification = Notification(
        id="ntf_1",
        trigger_id="grt_1",
        project_id="prj_1",
        experiment_id="exp_1",
        channel={"type": "slack", "url": "https://hooks.example.com/x"},
        payload={
            "id": "ntf_1",
            "message": "experiment e (p): errors +10%; action: pause",
            "project": {"key": "p"},
            "experiment": {"key": "e"},
            "trigger": {
                "id": "grt_1",
                "check": "guardrail:0:errors",
                "action": "pause",
                "metric": "errors",
                "variant": "treatment",
                "message": "errors +10%",
            },
        },
        created_at=now,
        next_attempt_at=now,
    )
    message = slack_payload(notification)
    assert (
        message["text"] == "Guardrail breached: e (p): experiment e (p): errors +10%; action: pause"
    )
    fields = message["blocks"][2]["fields"]
    assert {f["text"] for f in fields} == {
        "*Check*\nguardrail:0:errors",
        "*Action*\npause",
        "*Metric*\nerrors",
        "*Variant*\ntreatment",
    }


@pytest.mark.parametrize("secret", ["", "k"])
def test_sign_is_hmac_sha256_hex(secret: str) -> None:
    body = b'{"id":"ntf_1"}'
    assert sign(body, secret) == "sha256=" + hmac.new(secret.encode(), body, "sha256").hexdigest()
