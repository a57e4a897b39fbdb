"""GrowthBook's SDK protocol through a real hypercorn server, with GrowthBook's own Python
SDK as the client: it downloads ``/api/features/{clientKey}`` (plain and encrypted) and
evaluates locally, and every flag of the payload, for thousands of subjects, must be what
``/api/v1/decide`` answers (value, enrolment, experiment and variant). The flags the
payload cannot carry (``remote_only``) are answered by ``/api/eval`` through the SDK's
remote evaluation, equal to ``/decide`` too. Then the protocol's edges over HTTP: ETag and
304, CORS, one 404 for every bad key, revocation, exposures, bad bodies.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import httpx
import msgspec
import pytest
import trio
from growthbook import GrowthBook

import assay
from assay.adapters.growthbook import sdk_payload
from assay.adapters.http import serve
from assay.engine import (
    SYSTEM_KEY,
    Engine,
    EngineConfig,
    Role,
    SdkConnectionSpec,
    load_definitions,
)
from assay.engine._definitions import Definitions

# GrowthBook's SDK logs a warning for every missing parent and cycle it meets.
pytestmark = pytest.mark.usefixtures("quiet_growthbook_sdk")

SUBJECTS = 2000
REMOTE_SUBJECTS = 40

DEFINITIONS: dict[str, Any] = {
    "layers": [{"key": "checkout"}],
    "segments": [{"key": "beta", "attribute": "id", "values": [f"u{i}" for i in range(0, 400, 7)]}],
    "experiments": [
        {
            "key": "button",
            "status": "RUNNING",
            "variants": [
                {"key": "control", "value": "blue"},
                {"key": "green", "value": "green", "weight": 2},
            ],
            "coverage": 0.8,
            "condition": {"country": {"$in": ["DE", "FR"]}},
        },
        {
            "key": "layered",
            "status": "RUNNING",
            "variants": [{"key": "a", "value": 1}, {"key": "b", "value": 2}],
            "layer": {"layer": "checkout", "start": 0, "end": 0.5},
            "hash_attribute": "company",
            "hash_version": 1,
        },
        {
            "key": "limited",
            "status": "RUNNING",
            "variants": [{"key": "x", "value": "x"}, {"key": "y", "value": "y"}],
            "participation_limit": 1,
        },
    ],
    "flags": [
        {"key": "kill", "type": "boolean", "default_value": True, "enabled": False},
        {
            "key": "forced",
            "type": "string",
            "default_value": "no",
            "rules": [{"type": "force", "condition": {"age": {"$gte": 30}}, "value": "yes"}],
        },
        {
            "key": "rollout",
            "default_value": False,
            "rules": [{"type": "rollout", "coverage": 0.3, "value": True}],
        },
        {
            "key": "ranged",
            "type": "number",
            "default_value": 0,
            "rules": [{"type": "rollout", "range": [0.2, 0.6], "value": 5, "seed": "s1"}],
        },
        {
            "key": "beta",
            "default_value": False,
            "rules": [{"type": "force", "condition": {"id": {"$inGroup": "beta"}}, "value": True}],
        },
        {
            "key": "button-color",
            "type": "string",
            "default_value": "blue",
            "rules": [{"type": "experiment", "experiment": "button"}],
        },
        {
            "key": "layered-flag",
            "type": "number",
            "default_value": 0,
            "rules": [{"type": "experiment", "experiment": "layered"}],
        },
        {
            "key": "prereq",
            "type": "string",
            "default_value": "off",
            "prerequisites": [{"flag": "rollout", "value": True}],
            "rules": [{"type": "force", "value": "on"}],
        },
        {
            "key": "limited-flag",
            "type": "string",
            "default_value": "none",
            "rules": [{"type": "experiment", "experiment": "limited"}],
        },
        {
            "key": "json",
            "type": "json",
            "default_value": {"a": 1},
            "rules": [{"type": "force", "condition": {"country": "US"}, "value": {"a": 2}}],
        },
    ],
}


BODY_LIMIT = 96 * 1024


@pytest.fixture
async def engine(module_dsn: str) -> AsyncIterator[Engine]:
    """Batches of /decide need more room than the other HTTP tests' 4 KiB."""
    config = EngineConfig(database_url=module_dsn, max_body_bytes=BODY_LIMIT, pool_size=4)
    async with assay.open_engine(config, load_entry_points=False) as engine:
        yield engine


@pytest.fixture
async def base_url(engine, nursery) -> str:
    port = await nursery.start(partial(serve, engine, host="127.0.0.1", port=0))
    return f"http://127.0.0.1:{port}"


@pytest.fixture
async def shop(world) -> str:
    project = await world.project()
    definitions = msgspec.convert(DEFINITIONS, Definitions)
    await load_definitions(world.engine.service, SYSTEM_KEY, project, definitions)
    return project


def subjects(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        attrs: dict[str, Any] = {"id": f"u{i}"}
        if rng.random() < 0.9:
            attrs["country"] = rng.choice(["DE", "FR", "US", "JP"])
        if rng.random() < 0.8:
            attrs["age"] = rng.randint(10, 80)
        if rng.random() < 0.7:
            attrs["company"] = f"c{rng.randint(0, 500)}"
        out.append(attrs)
    return out


Outcome = tuple[bytes, bool, str | None, str | None]


async def decided(
    base_url: str, secret: str, project: str, flags: list[str], people: list[dict[str, Any]]
) -> dict[tuple[str, str], Outcome]:
    """``/api/v1/decide/batch`` for every (flag, subject)."""
    requests = [
        {"flag": f, "subject": p["id"], "attributes": p} for p in people for f in sorted(flags)
    ]
    out: dict[tuple[str, str], Outcome] = {}
    headers = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as client:
        for start in range(0, len(requests), 400):
            batch = requests[start : start + 400]
            answer = await client.post(
                f"/api/v1/decide/batch?project={project}", json={"requests": batch}
            )
            assert answer.status_code == 200, answer.text
            for d in answer.json()["decisions"]:
                inside = d["in_experiment"]
                out[(d["flag"], d["subject"])] = (
                    msgspec.json.encode(d["value"]),
                    inside,
                    d["experiment"] if inside else None,
                    d["variant"] if inside else None,
                )
    return out


def sdk_outcome(gb: GrowthBook, key: str) -> Outcome:
    result = gb.eval_feature(key)
    er = result.experimentResult
    inside = er is not None and er.inExperiment
    return (
        msgspec.json.encode(result.value),
        inside,
        result.experiment.key if inside and result.experiment else None,
        er.key if inside and er else None,
    )


async def test_growthbooks_sdk_decides_every_flag_as_decide(world, shop, base_url) -> None:
    service = world.engine.service
    plain = await service.create_connection(SYSTEM_KEY, shop, SdkConnectionSpec(name="plain"))
    secret_conn = await service.create_connection(
        SYSTEM_KEY, shop, SdkConnectionSpec(name="encrypted", encrypt=True)
    )
    _, secret = await world.key(Role.ADMIN)
    payload = sdk_payload(world.engine, shop)
    flags = [f["key"] for f in DEFINITIONS["flags"]]
    assert set(payload.features) | set(payload.remote_only) == set(flags)
    assert payload.remote_only, "the participation limit makes a flag remote-only"
    assert len(payload.features) >= 8

    _, viewer = await world.key(Role.VIEWER)
    async with httpx.AsyncClient(base_url=base_url) as client:
        listed = await client.get(
            f"/api/v1/sdk-connections/{plain.id}/remote-only?project={shop}",
            headers={"Authorization": f"Bearer {viewer}"},
        )
    assert listed.status_code == 200
    assert listed.json()["flags"] == payload.remote_only
    assert set(listed.json()["flags"].values()) <= set(listed.json()["reasons"])

    people = subjects(SUBJECTS, 1)
    expected = await decided(base_url, secret, shop, flags, people)

    for connection, key in ((plain, ""), (secret_conn, secret_conn.decryption_key)):
        gb = GrowthBook(api_host=base_url, client_key=connection.client_key, decryption_key=key)
        await trio.to_thread.run_sync(gb.load_features)
        assert set(gb.get_features()) == set(payload.features)
        enrolled = 0
        for attrs in people:
            gb.set_attributes(attrs)
            for flag in payload.features:
                got = sdk_outcome(gb, flag)
                assert got == expected[(flag, attrs["id"])], (flag, attrs, got)
                enrolled += got[1]
        assert enrolled > SUBJECTS // 2  # experiments do enrol: not a vacuous comparison

    # What the payload cannot carry, remote evaluation answers, as /decide does.
    tracked: list[tuple[str, str | None]] = []

    def viewed(experiment: Any, result: Any, **_: Any) -> None:
        tracked.append((experiment.key, result.key))

    def remote(attrs: dict[str, Any]) -> dict[str, Outcome]:
        gb = GrowthBook(
            api_host=base_url,
            client_key=plain.client_key,
            remote_eval=True,
            attributes=attrs,
            cache_ttl=0,
            on_experiment_viewed=viewed,
        )
        gb.load_features()
        return {flag: sdk_outcome(gb, flag) for flag in flags}

    for attrs in people[:REMOTE_SUBJECTS]:
        answers = await trio.to_thread.run_sync(remote, attrs)
        for flag in flags:
            want = expected[(flag, attrs["id"])]
            # Remote evaluation reports the value (and, through tracks, the enrolment
            # to the tracking callback); the SDK sees a forced value.
            assert answers[flag][0] == want[0], (flag, attrs)
    limited = {p["id"] for p in people[:REMOTE_SUBJECTS] if expected[("limited-flag", p["id"])][1]}
    assert limited, "the remote-only experiment enrols some of these subjects"
    assert any(key == "limited" for key, _ in tracked), (tracked[:5], sorted(limited)[:5])
    assert all(variant is not None for _, variant in tracked)


async def test_etag_cors_and_one_404_for_every_bad_key(world, shop, base_url) -> None:
    service = world.engine.service
    c = await service.create_connection(SYSTEM_KEY, shop, SdkConnectionSpec(name="web"))
    revoked = await service.create_connection(SYSTEM_KEY, shop, SdkConnectionSpec(name="old"))
    await service.revoke_connection(SYSTEM_KEY, shop, revoked.id)
    _, secret = await world.key(Role.ADMIN)
    async with httpx.AsyncClient(base_url=base_url) as client:
        first = await client.get(f"/api/features/{c.client_key}")
        assert first.status_code == 200
        assert first.headers["access-control-allow-origin"] == "*"
        assert "must-revalidate" in first.headers["cache-control"]
        etag = first.headers["etag"]
        assert etag.startswith('"')
        body = first.json()
        assert body["status"] == 200
        assert set(body) >= {"features", "dateUpdated", "savedGroups"}
        again = await client.get(f"/api/features/{c.client_key}", headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["etag"] == etag
        weak = await client.get(
            f"/api/features/{c.client_key}", headers={"If-None-Match": f'"x", W/{etag}'}
        )
        assert weak.status_code == 304
        preflight = await client.options(
            f"/api/eval/{c.client_key}",
            headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 204
        assert "POST" in preflight.headers["access-control-allow-methods"]

        # A change makes a new payload: the old tag no longer matches.
        await world.engine.service.update_object(
            SYSTEM_KEY, *_flag(shop, "forced"), {"default_value": "maybe"}
        )
        changed = await client.get(f"/api/features/{c.client_key}", headers={"If-None-Match": etag})
        assert changed.status_code == 200
        assert changed.headers["etag"] != etag
        assert changed.json()["features"]["forced"]["defaultValue"] == "maybe"

        bad = [
            "sdk-doesnotexist000000000000",
            revoked.client_key,
            "",
            "x/y",
            "%00",
            "a" * 300,
            secret,
        ]
        answers = []
        for key in bad:
            for method, prefix in (("GET", "features"), ("POST", "eval"), ("POST", "events")):
                answer = await client.request(method, f"/api/{prefix}/{key}", json={})
                answers.append((answer.status_code, answer.content, _headers(answer)))
        assert len(set(answers)) == 1, answers
        status, content, _ = answers[0]
        assert status == 404
        assert msgspec.json.decode(content)["error"]["code"] == "client_key_not_found"
        # A client key is no API key anywhere else.
        as_bearer = await client.get(
            f"/api/v1/flags?project={shop}", headers={"Authorization": f"Bearer {c.client_key}"}
        )
        assert as_bearer.status_code == 401
        decide = await client.post(
            f"/api/v1/decide?project={shop}",
            json={"flag": "forced", "subject": "u"},
            headers={"Authorization": f"Bearer {c.client_key}"},
        )
        assert decide.status_code == 401

        # Revoking over HTTP closes the door at once.
        admin = {"Authorization": f"Bearer {secret}"}
        gone = await client.delete(f"/api/v1/sdk-connections/{c.id}?project={shop}", headers=admin)
        assert gone.status_code == 204
        after = await client.get(f"/api/features/{c.client_key}")
        assert (after.status_code, after.content) == (404, content)


def _flag(project: str, key: str) -> tuple[Any, str, str]:
    from assay.engine import Flag

    return (Flag, project, key)


def _headers(answer: httpx.Response) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in answer.headers.items() if k not in ("date", "server")))


async def test_remote_connections_keep_their_rules_and_eval_bodies_are_checked(
    world, shop, base_url
) -> None:
    service = world.engine.service
    c = await service.create_connection(
        SYSTEM_KEY, shop, SdkConnectionSpec(name="remote", evaluation="remote")
    )
    async with httpx.AsyncClient(base_url=base_url) as client:
        payload = (await client.get(f"/api/features/{c.client_key}")).json()
        assert payload["features"] == {}
        assert payload["savedGroups"] == {}
        url = f"/api/eval/{c.client_key}"
        evaluated = await client.post(
            url,
            json={
                "attributes": {"id": "u1", "country": "US"},
                "forcedFeatures": [["kill", "forced!"]],
            },
        )
        assert evaluated.status_code == 200
        features = evaluated.json()["features"]
        assert features["json"] == {"defaultValue": {"a": 2}}
        assert features["kill"] == {"defaultValue": "forced!"}
        assert evaluated.headers["access-control-allow-origin"] == "*"
        for body, status, code in (
            (b"{", 400, "malformed_json"),
            (b'{"attributes": []}', 422, "invalid_body"),
            (b'{"attributes": {"id": "u"}}' + b" " * BODY_LIMIT, 413, "body_too_large"),
            (b"[" * 100 + b"]" * 100, 422, "too_deep"),
            (b'{"attributes": {"id": "u\\u0000"}}', 422, "invalid_text"),
        ):
            answer = await client.post(
                url, content=body, headers={"Content-Type": "application/json"}
            )
            assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), body
            assert answer.headers["access-control-allow-origin"] == "*"
        wrong = await client.get(url)
        assert wrong.status_code == 405


async def test_exposures_from_sdks_only_when_the_connection_allows(world, shop, base_url) -> None:
    service = world.engine.service
    closed = await service.create_connection(SYSTEM_KEY, shop, SdkConnectionSpec(name="closed"))
    open_ = await service.create_connection(
        SYSTEM_KEY, shop, SdkConnectionSpec(name="open", allow_exposures=True)
    )
    event = {
        "type": "exposure",
        "experiment": "button",
        "subject": "u1",
        "variant": "green",
        "event_id": "gb-u1-button",
    }
    async with httpx.AsyncClient(base_url=base_url) as client:
        refused = await client.post(f"/api/events/{closed.client_key}", json={"events": [event]})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "exposures_not_allowed"
        sent = await client.post(f"/api/events/{open_.client_key}", json={"events": [event]})
        assert sent.status_code == 200, sent.text
        assert sent.json()["recorded"] == 1
        again = await client.post(f"/api/events/{open_.client_key}", json={"events": [event]})
        assert again.json()["deduplicated"] == 1
        conversion = {"type": "conversion", "experiment": "button", "metric": "m", "subject": "u"}
        only = await client.post(f"/api/events/{open_.client_key}", json={"events": [conversion]})
        assert (only.status_code, only.json()["error"]["code"]) == (422, "invalid_body")
        extra = await client.post(
            f"/api/events/{open_.client_key}", json={"events": [{**event, "bogus": 1}]}
        )
        assert (extra.status_code, extra.json()["error"]["code"]) == (422, "unknown_field")
        # A page's last exposures leave with sendBeacon as text/plain (a type needing no
        # CORS preflight): read as JSON here, and only here.
        beacon = {**event, "subject": "u2", "event_id": "gb-u2-button"}
        text = {"Content-Type": "text/plain;charset=UTF-8"}
        body = msgspec.json.encode({"events": [beacon]})
        beaconed = await client.post(f"/api/events/{open_.client_key}", content=body, headers=text)
        assert (beaconed.status_code, beaconed.json()["recorded"]) == (200, 1)
        eval_body = msgspec.json.encode({"attributes": {"id": "u2"}})
        as_text = await client.post(
            f"/api/eval/{open_.client_key}", content=eval_body, headers=text
        )
        assert (as_text.status_code, as_text.json()["error"]["code"]) == (
            415,
            "unsupported_media_type",
        )
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        other = await client.post(f"/api/events/{open_.client_key}", content=body, headers=form)
        assert other.status_code == 415
    before = await world.engine.store.load_config()
    assert [c for c in before.sdk_connections if c.id == open_.id] == [open_]


class _SseReader:
    """A raw-socket SSE client: httpx's streaming iterators leave async generators to the
    garbage collector when a test stops reading mid-stream."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = b""

    @classmethod
    async def open(cls, base_url: str, path: str) -> tuple[_SseReader, int, dict[str, str]]:
        host, port = base_url.removeprefix("http://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
        await stream.send_all(request.encode())
        reader = cls(stream)
        head = await reader._until(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v for k, _, v in (x.partition(": ") for x in lines)}
        return reader, int(status_line.split()[1]), headers

    async def _until(self, separator: bytes) -> bytes:
        while separator not in self._buffer:
            data = await self._stream.receive_some(65536)
            if not data:
                raise AssertionError("the stream ended")
            self._buffer += data
        block, _, self._buffer = self._buffer.partition(separator)
        return block

    async def next_event(self) -> dict[str, str]:
        """The next event's fields; heartbeats and a block of only ``retry:`` skipped.
        (The body is chunked on hypercorn's port: a chunk's size line is not a field.)"""
        while True:
            block = (await self._until(b"\n\n")).decode()
            event: dict[str, str] = {}
            for line in block.split("\n"):
                name, sep, value = line.strip("\r").partition(": ")
                if sep and name in {"event", "id", "data"}:
                    event[name] = event.get(name, "") + value
            if "event" in event:
                return event

    async def aclose(self) -> None:
        await self._stream.aclose()


@pytest.mark.parametrize("encrypt", [False, True])
async def test_streams_follow_the_features_route(world, shop, base_url, encrypt: bool) -> None:
    """``GET /sub/{clientKey}`` of a real connection sends what ``/api/features`` answers,
    then the new payload after a change, and nothing when a snapshot changes nothing the
    connection sees (an encrypted payload's bytes differ per encoding, its tag does not)."""
    service = world.engine.service
    spec = SdkConnectionSpec(name="stream", encrypt=encrypt)
    c = await service.create_connection(SYSTEM_KEY, shop, spec)
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        features = await client.get(f"/api/features/{c.client_key}")
        # GrowthBook's JavaScript SDK streams only when the features route says it may.
        assert features.headers["x-sse-support"] == "enabled"
        assert "X-SSE-Support" in features.headers["access-control-expose-headers"]
        reader, status, headers = await _SseReader.open(base_url, f"/sub/{c.client_key}")
        try:
            assert status == 200
            assert headers["content-type"].startswith("text/event-stream")
            first = await reader.next_event()
            assert first["event"] == "features"
            assert first["id"] == features.headers["etag"].strip('"')
            if not encrypt:
                assert msgspec.json.decode(first["data"]) == features.json()

            # A change elsewhere in the project's configuration that the payload does not
            # carry (a metric) makes a new snapshot but no event; the flag change does.
            await service.create_object(SYSTEM_KEY, *_metric(shop))
            await service.update_object(
                SYSTEM_KEY, *_flag(shop, "forced"), {"default_value": "streamed"}
            )
            with trio.fail_after(10):
                second = await reader.next_event()
            now = await client.get(f"/api/features/{c.client_key}")
            assert second["id"] == now.headers["etag"].strip('"') != first["id"]
            if encrypt:
                assert "encryptedFeatures" in msgspec.json.decode(second["data"])
            else:
                data = msgspec.json.decode(second["data"])
                assert data["features"]["forced"]["defaultValue"] == "streamed"
        finally:
            await reader.aclose()

        # Revoked, the key streams nothing: the same 404 as the features route.
        await service.revoke_connection(SYSTEM_KEY, shop, c.id)
        gone = await client.get(f"/sub/{c.client_key}")
        assert gone.status_code == 404
        assert gone.content == (await client.get(f"/api/features/{c.client_key}")).content


def _metric(project: str) -> tuple[Any, str, Any]:
    from assay.engine import Metric, MetricSpec

    return Metric, project, MetricSpec(key="streamed-metric")
