"""TLS with hypercorn's own certificate support, and forwarded headers believed only
from trusted proxies."""

from __future__ import annotations

import re
import ssl
from functools import partial
from typing import Any

import httpx
import msgspec
import pytest
import trio
import trustme

import assay
from assay.adapters.http import serve
from assay.adapters.http._proxy import TrustedProxies, parse_networks
from assay.adapters.http._server import hypercorn_config
from assay.engine import SYSTEM_KEY, Role, ValidationFailed

from .conftest import engine_config


async def test_https_serves_and_marks_the_session_cookie_secure(module_dsn, tmp_path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    config = msgspec.structs.replace(
        engine_config(module_dsn), certfile=str(certfile), keyfile=str(keyfile)
    )
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    async with (
        assay.open_engine(config, load_entry_points=False) as engine,
        trio.open_nursery() as nursery,
    ):
        _, secret = await engine.service.create_key(SYSTEM_KEY, role=Role.ADMIN, project=None)
        port = await nursery.start(partial(serve, engine, host="127.0.0.1", port=0))
        base = f"https://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, verify=trusted) as client:
            assert (await client.get("/health")).status_code == 200
            form = await client.get("/console/sign-in")
            assert "Secure" in form.headers["set-cookie"]
            token = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert token
            signed = await client.post(
                "/console/sign-in", data={"csrf": token.group(1), "api_key": secret}
            )
            assert signed.status_code == 303
            cookie = signed.headers["set-cookie"]
            assert cookie.startswith("assay_console=")
            for flag in ("Secure", "HttpOnly", "SameSite=Strict"):
                assert flag in cookie
        async with httpx.AsyncClient() as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get(f"http://127.0.0.1:{port}/health")
        nursery.cancel_scope.cancel()


def test_tls_needs_both_files() -> None:
    with pytest.raises(ValidationFailed) as raised:
        hypercorn_config("127.0.0.1", 0, certfile="cert.pem")
    assert raised.value.code == "invalid_config"


def test_trusted_proxies_must_be_addresses() -> None:
    assert len(parse_networks(" 10.0.0.1, 192.168.0.0/16 ,::1,")) == 3
    with pytest.raises(ValidationFailed) as raised:
        parse_networks("10.0.0.1, proxy.example")
    assert raised.value.code == "invalid_config"


async def _seen(peer: str, headers: list[tuple[bytes, bytes]], trusted: str) -> tuple[Any, str]:
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.update(scope)

    scope = {"type": "http", "scheme": "http", "client": (peer, 5000), "headers": headers}
    await TrustedProxies(app, parse_networks(trusted))(scope, None, None)
    return seen["client"][0], seen["scheme"]


async def test_forwarded_headers_only_from_trusted_proxies() -> None:
    forwarded = [(b"x-forwarded-for", b"203.0.113.9, 10.0.0.2"), (b"x-forwarded-proto", b"https")]
    # From an untrusted peer, the headers are a claim, not a fact.
    assert await _seen("198.51.100.7", forwarded, "10.0.0.0/8") == ("198.51.100.7", "http")
    # From a trusted proxy: the first untrusted hop from the right, and the scheme.
    assert await _seen("10.0.0.1", forwarded, "10.0.0.0/8") == ("203.0.113.9", "https")
    # Only the proxy itself is trusted: the hop it appended is the client.
    assert await _seen("10.0.0.1", forwarded, "10.0.0.1") == ("10.0.0.2", "https")
    # A spoofed leftmost entry does not win over the address the proxy saw.
    spoofed = [(b"x-forwarded-for", b"1.2.3.4, 203.0.113.9")]
    assert await _seen("10.0.0.1", spoofed, "10.0.0.0/8") == ("203.0.113.9", "http")
    # Garbage keeps the proxy's address; an unknown scheme is ignored.
    junk = [(b"x-forwarded-for", b"not-an-ip"), (b"x-forwarded-proto", b"gopher")]
    assert await _seen("10.0.0.1", junk, "10.0.0.0/8") == ("10.0.0.1", "http")
