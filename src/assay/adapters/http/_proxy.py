"""Behind a reverse proxy: the client's address and scheme, believed only from proxies
we trust.

A request whose peer is one of ``trusted_proxies`` (addresses or networks) has its
``X-Forwarded-For`` read from the right: each hop that is itself a trusted proxy is
skipped, and the first that is not becomes the client. ``X-Forwarded-Proto`` (its last
value, set by the nearest proxy) becomes the scheme, so a console session cookie is
marked ``Secure`` when the browser spoke HTTPS to the proxy. From any other peer both
headers are ignored: a client cannot claim an address or TLS it does not have.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from assay.engine import ValidationFailed

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    Scope = dict[str, Any]
    ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"10.0.0.1, 192.168.0.0/16"``; raises ``invalid_config`` on a bad entry."""
    networks = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValidationFailed(
                f"trusted_proxies: {item!r} is not an address or network",
                code="invalid_config",
            ) from None
    return tuple(networks)


class TrustedProxies:
    """ASGI middleware applying forwarded headers from trusted peers only."""

    def __init__(self, app: Any, networks: tuple[Network, ...]) -> None:
        self._app = app
        self._networks = networks

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in network for network in self._networks)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            if client and self._trusted(client[0]):
                scope = self._forwarded(scope)
        await self._app(scope, receive, send)

    def _forwarded(self, scope: Scope) -> Scope:
        forwarded_for: list[str] = []
        proto: str | None = None
        for name, value in scope.get("headers", ()):
            if name == b"x-forwarded-for":
                forwarded_for += [p.strip() for p in value.decode("latin-1").split(",")]
            elif name == b"x-forwarded-proto":
                proto = value.decode("latin-1").split(",")[-1].strip().lower()
        scope = dict(scope)
        for hop in reversed(forwarded_for):
            if not self._trusted(hop):
                try:
                    ipaddress.ip_address(hop)
                except ValueError:
                    break  # garbage: keep the proxy's own address
                scope["client"] = (hop, 0)
                break
        if proto in ("http", "https"):
            scope["scheme"] = proto if scope["type"] == "http" else proto.replace("http", "ws")
        return scope
