"""The web console: people's view of assay, served by the same Quart-Trio app at ``/``.

Sign in with an API key; the console then acts with that key's role and project scope
through the engine's public API, exactly as the key would over HTTP. Pages are rendered
on the server (Jinja templates, autoescaped: nothing a user typed is ever rendered as
HTML) with charts as inline SVG; there is no script, and every asset (one stylesheet) is
served from this package, so the console works with no network and its
Content-Security-Policy forbids requests to any other origin.

Routes live under ``/console`` (``GET /`` leads there); see docs/console.md.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from quart import Blueprint, Response, redirect, request

from assay.adapters.http.console import _experiments, _flags
from assay.adapters.http.console._web import (
    ENDED_MESSAGES,
    PREFIX,
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    Console,
    SignInRequired,
    add_security_headers,
    error_page,
    secure_cookie,
)
from assay.engine import Unauthenticated

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from assay.engine import Engine


def register_console(app: QuartTrio, engine: Engine) -> None:
    """Serve the console from ``app`` (under ``/console``, with ``GET /`` leading there)."""
    console = Console(engine)
    bp = Blueprint(
        "console",
        __name__,
        url_prefix=PREFIX,
        template_folder="templates",
        static_folder="static",
        static_url_path="/static",
    )

    async def root() -> Response:
        return redirect(f"{PREFIX}/")  # type: ignore[return-value]

    async def index() -> Response:
        visit = await console.visit()
        if visit.key.project_id is None:
            return redirect(f"{PREFIX}/projects")  # type: ignore[return-value]
        project = await engine.service.resolve_project(visit.key, None)
        return redirect(f"{PREFIX}/projects/{project.key}/experiments")  # type: ignore[return-value]

    async def sign_in_form(message: str | None = None, status: int = 200) -> Response:
        try:
            await console.visit()
        except SignInRequired:
            pass
        else:
            if message is None:
                return redirect(f"{PREFIX}/")  # type: ignore[return-value]
        token = secrets.token_urlsafe(32)
        ended = ENDED_MESSAGES.get(request.args.get("ended", ""))
        response = await console.page(
            "sign_in.html", status=status, csrf=token, message=message, ended=ended
        )
        response.set_cookie(
            SIGNIN_COOKIE, token, httponly=True, samesite="Strict", secure=secure_cookie(),
            path=f"{PREFIX}/sign-in", max_age=3600,
        )  # fmt: skip
        return response

    async def sign_in() -> Response:
        form = await console.checked_form(None, request.cookies.get(SIGNIN_COOKIE))
        secret = (form.get("api_key") or "").strip()
        if not secret:
            return await sign_in_form("Enter an API key.", 400)
        try:
            key = await engine.service.authenticate(secret)
        except Unauthenticated:
            return await sign_in_form(
                "That API key is not valid: it is wrong, or it has been revoked.", 401
            )
        if key.role.value == "SDK":
            return await sign_in_form(
                "SDK keys may only decide and send events; sign in with a person's key.", 403
            )
        session_id, _ = await console.sessions.start(key)
        response: Response = redirect(f"{PREFIX}/", 303)  # type: ignore[assignment]
        response.set_cookie(
            SESSION_COOKIE, session_id, httponly=True, samesite="Strict",
            secure=secure_cookie(), path="/",
            max_age=int(engine.config.console_session_minutes * 60),
        )  # fmt: skip
        response.delete_cookie(SIGNIN_COOKIE, path=f"{PREFIX}/sign-in")
        return response

    async def sign_out() -> Response:
        visit = await console.visit()
        await console.checked_form(visit)
        await console.sessions.end(visit.session_id)
        response: Response = redirect(f"{PREFIX}/sign-in?ended=signed_out", 303)  # type: ignore[assignment]
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def not_found(path: str) -> Response:
        await console.visit()
        from werkzeug.exceptions import NotFound

        raise NotFound()

    async def handle(error: Exception) -> Response:
        return await error_page(console, error)

    bp.add_url_rule("/", view_func=index, endpoint="index")
    bp.add_url_rule("/sign-in", view_func=sign_in_form, endpoint="sign_in_form")
    bp.add_url_rule("/sign-in", view_func=sign_in, endpoint="sign_in", methods=["POST"])
    bp.add_url_rule("/sign-out", view_func=sign_out, endpoint="sign_out", methods=["POST"])
    _experiments.register(bp, console)
    _flags.register(bp, console)
    bp.add_url_rule("/<path:path>", view_func=not_found, endpoint="not_found")
    bp.after_request(add_security_headers)
    bp.register_error_handler(Exception, handle)
    app.register_blueprint(bp)
    app.add_url_rule("/", view_func=root, endpoint="console_root")


__all__ = ["register_console"]
