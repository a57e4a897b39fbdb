"""The decide routes are answered by a plain-ASGI front in the real server. Whatever is
sent, it must answer exactly as the Quart app (the test client) does for the same request:
same status, same error code and details, same decision."""

from __future__ import annotations

from functools import partial
from typing import Any

import httpx
import msgspec
import trio

from assay.adapters.http import serve
from assay.engine import Role, Transition

VOLATILE = {"decision_id", "decided_at", "snapshot_version"}


def comparable(body: Any) -> Any:
    """A body without what differs between two decisions of the same question."""
    if isinstance(body, dict):
        return {k: comparable(v) for k, v in body.items() if k not in VOLATILE}
    if isinstance(body, list):
        return [comparable(v) for v in body]
    return body


async def test_the_fast_path_answers_exactly_as_the_app(world: Any) -> None:
    project = await world.project()
    experiment = await world.experiment(project, Transition.START)
    flag = world.unique("flag")
    await world.admin_create_flag(project, flag, experiment)
    await world.engine.refresh()
    _, sdk = await world.key(Role.SDK, project)
    _, viewer = await world.key(Role.VIEWER, project)
    good = {"flag": flag, "subject": "u1", "attributes": {"country": "DE"}}
    limit = world.engine.config.max_body_bytes
    cases: list[tuple[str, str, str | None, bytes]] = [
        ("decide", "/api/v1/decide", sdk, msgspec.json.encode(good)),
        ("unknown flag", "/api/v1/decide", sdk, b'{"flag": "nope", "subject": "u1"}'),
        (
            "batch",
            "/api/v1/decide/batch",
            sdk,
            msgspec.json.encode({"requests": [good, {**good, "subject": "u2"}]}),
        ),
        ("malformed", "/api/v1/decide", sdk, b'{"flag": '),
        ("empty", "/api/v1/decide", sdk, b""),
        ("unknown field", "/api/v1/decide", sdk, msgspec.json.encode({**good, "x": 1})),
        ("wrong type", "/api/v1/decide", sdk, b'{"flag": "f", "subject": true}'),
        ("oversize", "/api/v1/decide", sdk, msgspec.json.encode(good) + b" " * limit),
        ("no key", "/api/v1/decide", None, msgspec.json.encode(good)),
        ("bad key", "/api/v1/decide", "assay_nope", msgspec.json.encode(good)),
        ("may not decide", "/api/v1/decide", viewer, msgspec.json.encode(good)),
        ("unknown parameter", "/api/v1/decide?flag=x", sdk, msgspec.json.encode(good)),
        (
            "batch too large",
            "/api/v1/decide/batch",
            sdk,
            msgspec.json.encode({"requests": [{"flag": "f", "subject": "u"}] * 101}),
        ),
    ]
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve, world.engine, host="127.0.0.1", port=0))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for name, path, secret, body in cases:
                headers = {"Authorization": f"Bearer {secret}"} if secret else {}
                served = await http.post(path, content=body, headers=headers)
                via_app = await world.api(secret).call("POST", path, data=body)
                assert served.status_code == via_app.status, (name, served.text, via_app.body)
                assert comparable(served.json()) == comparable(via_app.body), name
                if served.status_code == 401:
                    assert served.headers["www-authenticate"] == "Bearer"

            async def chunks() -> Any:
                for _ in range(limit // 1024 + 2):
                    yield b" " * 1024

            # No Content-Length: refused while the body streams in.
            chunked = await http.post(
                "/api/v1/decide", content=chunks(), headers={"Authorization": f"Bearer {sdk}"}
            )
            assert chunked.status_code == 413
            assert chunked.json()["error"]["code"] == "body_too_large"
        nursery.cancel_scope.cancel()
