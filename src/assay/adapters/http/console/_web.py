"""The console's plumbing: sessions on requests, CSRF checks, security headers, errors
as pages, and rendering.

Rules kept: every console response carries a Content-Security-Policy that lets the page
reach nothing but its own origin (no script at all, styles and images from assay only);
pages are not cached and cannot be framed; a state-changing request passes the CSRF
check (and, when the browser names one, an ``Origin`` equal to ours) before anything
else is looked at; a missing, expired or revoked session leads back to sign-in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from quart import Response, redirect, render_template, request

from assay.adapters.http.console import _format
from assay.adapters.http.console._session import same_token
from assay.engine import (
    Action,
    ApiKey,
    Resource,
    Unauthenticated,
)
from assay.engine._access import allows
from assay.engine._console_sessions import ConsoleSession

if TYPE_CHECKING:
    from assay.engine import Engine

SESSION_COOKIE = "assay_console"
SIGNIN_COOKIE = "assay_console_signin"
PREFIX = "/console"

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

ENDED_MESSAGES = {
    "revoked": "Your session ended: its API key was revoked or is no longer valid.",
    "expired": "Your session ended. Sign in again.",
    "signed_out": "You have signed out.",
}


TITLES = {
    400: "Not understood",
    403: "Not allowed",
    404: "Not found",
    409: "Not possible now",
    413: "Too large",
    422: "Not accepted",
}


class SignInRequired(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FormRefused(Exception):
    """A state-changing request without our CSRF token (or from another origin)."""


@dataclass(frozen=True)
class Visit:
    """A signed-in request: the session and the key it acts with."""

    session_id: str
    session: ConsoleSession
    key: ApiKey

    def may(self, resource: Resource, action: Action = Action.READ) -> bool:
        return allows(self.key.role, resource, action)

    @property
    def may_act(self) -> bool:
        return self.may(Resource.EXPERIMENT, Action.WRITE)


class Console:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = engine.console_sessions

    async def visit(self) -> Visit:
        session_id = request.cookies.get(SESSION_COOKIE)
        if not session_id:
            raise SignInRequired("")
        try:
            found = await self.sessions.resume(session_id)
        except Unauthenticated:
            raise SignInRequired("revoked") from None
        if found is None:
            raise SignInRequired("expired")
        session, key = found
        return Visit(session_id=session_id, session=session, key=key)

    async def checked_form(
        self, visit: Visit | None, expected: str | None = None
    ) -> dict[str, str]:
        """The posted form, once it has proven it came from our page."""
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            raise FormRefused
        form = await request.form
        token = form.get("csrf")
        wanted = visit.session.csrf if visit is not None else expected
        if wanted is None or not same_token(token, wanted):
            raise FormRefused
        return dict(form.items())

    async def render(self, template: str, visit: Visit | None = None, **context: Any) -> str:
        return await render_template(
            f"console/{template}", fmt=_format, visit=visit, prefix=PREFIX, **context
        )

    async def page(
        self, template: str, visit: Visit | None = None, status: int = 200, **context: Any
    ) -> Response:
        return Response(await self.render(template, visit, **context), status=status)


async def gather(*calls: Callable[[], Awaitable[Any]]) -> list[Any]:
    """Run independent reads at once (a page's latency is then its slowest read, not
    their sum); the first error is raised as itself, so it becomes its usual page."""
    results: list[Any] = [None] * len(calls)

    async def run(index: int, call: Callable[[], Awaitable[Any]]) -> None:
        results[index] = await call()

    try:
        async with trio.open_nursery() as nursery:
            for index, call in enumerate(calls):
                nursery.start_soon(run, index, call)
    except BaseExceptionGroup as group:
        error: BaseException = group
        while isinstance(error, BaseExceptionGroup):
            error = error.exceptions[0]
        raise error from None
    return results


def secure_cookie() -> bool:
    return request.scheme == "https"


def add_security_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    if not request.path.startswith(f"{PREFIX}/static/"):
        response.headers["Cache-Control"] = "no-store"
    return response


async def error_page(console: Console, error: BaseException) -> Response:
    """Errors as pages people can read (the API's message), never a stack trace."""
    from assay.adapters.http._errors import describe, unexpected

    if isinstance(error, SignInRequired):
        target = f"{PREFIX}/sign-in"
        if error.reason:
            target += f"?ended={error.reason}"
        return redirect(target)  # type: ignore[return-value]
    if isinstance(error, FormRefused):
        return await console.page(
            "error.html",
            status=403,
            title="Request refused",
            message="This form did not come from this console session (or it has expired). "
            "Reload the page and try again.",
            code="csrf_failed",
        )
    status, body, _ = describe(error)
    if status >= 500 and body.code == "internal_error":
        unexpected(error)
    visit = None
    with contextlib.suppress(SignInRequired):
        visit = await console.visit()
    return await console.page(
        "error.html",
        visit,
        status=status,
        title=TITLES.get(status, "Error"),
        message=body.message,
        code=body.code,
    )
