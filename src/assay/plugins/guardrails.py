"""Built-in guardrail actions and notification channels.

Actions (``assay_guardrail_actions``):

- ``pause``: RUNNING -> PAUSED. Decide stops assigning (``experiment_not_running``) and the
  experiment can be resumed once the cause is understood.
- ``rollback``: RUNNING -> ROLLED_BACK. Every subject gets the control value
  (``rolled_back``) until the experiment is archived; there is no way back.
- ``notify``: changes nothing; the breach is recorded and notified only.

Channels (``assay_notification_channels``), each delivering one outbox notification and
raising on failure (the outbox retries with backoff):

- ``log``: ``{"type": "log"}``, a WARNING on the ``assay.guardrails`` logger.
- ``webhook``: ``{"type": "webhook", "url": ..., "secret": ...}`` (or ``"secret_env"``:
  the name of an environment variable holding it, read at delivery), POSTs the JSON
  payload with ``X-Assay-Signature: sha256=<hex HMAC-SHA256 of the body>`` and
  ``X-Assay-Notification-Id``; any 2xx answer is a delivery.
- ``slack``: ``{"type": "slack", "url": ...}``, a Slack incoming-webhook payload
  (``{"text": ..., "blocks": [...]}``); Slack-compatible receivers (Mattermost,
  Rocket.Chat) accept it too.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import msgspec

from assay.engine._guardrails import ActionContext, Channel, GuardrailAction, Notification
from assay.engine._model import Transition
from assay.engine.hookspecs import hookimpl

log = logging.getLogger("assay.guardrails")

SIGNATURE_HEADER: Final = "X-Assay-Signature"
ID_HEADER: Final = "X-Assay-Notification-Id"
DEFAULT_TIMEOUT: Final = 10.0
USER_AGENT: Final = "assay-guardrails"


def sign(body: bytes, secret: str) -> str:
    """The ``X-Assay-Signature`` value for ``body``: what receivers recompute and compare
    (with ``hmac.compare_digest``) before trusting a notification."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- actions --------------------------------------------------------------------------


def _reason(context: ActionContext) -> str:
    t = context.trigger
    return f"guardrail {t.check} breached (trigger {t.id}): {t.message}"


async def pause(context: ActionContext) -> str:
    updated = await context.transition(Transition.PAUSE, reason=_reason(context))
    return f"paused (revision {updated.revision})"


async def rollback(context: ActionContext) -> str:
    updated = await context.transition(Transition.ROLLBACK, reason=_reason(context))
    return f"rolled back (revision {updated.revision})"


async def notify(context: ActionContext) -> str:
    return "notified only"


@hookimpl
def assay_guardrail_actions() -> Mapping[str, GuardrailAction]:
    return {"pause": pause, "rollback": rollback, "notify": notify}


# --- channels -------------------------------------------------------------------------


def _check_keys(config: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(config) - allowed - {"type"})
    if unknown:
        raise ValueError(f"unknown settings {', '.join(unknown)}; accepted: {sorted(allowed)}")


def _check_url(config: Mapping[str, Any]) -> None:
    url = config.get("url")
    if not isinstance(url, str):
        raise ValueError('"url" (an http or https URL) is required')
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http or https URL")


def _check_timeout(config: Mapping[str, Any]) -> None:
    timeout = config.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError('"timeout" must be a positive number of seconds')


async def _post(url: str, body: bytes, headers: dict[str, str], seconds: float) -> None:
    """POST ``body``; raise on anything but a 2xx answer. Errors never name the URL: a
    Slack webhook's URL is its credential, and errors are shown in the outbox."""
    # httpx runs under Trio (through anyio). Redirects are not followed: a webhook that
    # moved should be reconfigured, not silently re-targeted.
    try:
        async with httpx.AsyncClient(timeout=seconds) as client:
            response = await client.post(url, content=body, headers=headers)
    except httpx.TimeoutException:
        raise RuntimeError(f"no answer within {seconds:g}s") from None
    except httpx.HTTPError as exc:
        raise RuntimeError(f"request failed ({type(exc).__name__})") from None
    if not response.is_success:
        raise RuntimeError(f"answered {response.status_code} {response.reason_phrase}")


class LogChannel:
    def validate(self, config: Mapping[str, Any]) -> None:
        _check_keys(config, set())

    async def deliver(self, notification: Notification) -> None:
        log.warning(
            "guardrail notification %s: %s", notification.id, notification.payload.get("message")
        )


class WebhookChannel:
    def validate(self, config: Mapping[str, Any]) -> None:
        _check_keys(config, {"url", "secret", "secret_env", "timeout"})
        _check_url(config)
        _check_timeout(config)
        secret, secret_env = config.get("secret"), config.get("secret_env")
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise ValueError('"secret" must be a non-empty string')
        if secret_env is not None and (not isinstance(secret_env, str) or not secret_env):
            raise ValueError('"secret_env" must name an environment variable')
        if secret is not None and secret_env is not None:
            raise ValueError('give "secret" or "secret_env", not both')

    async def deliver(self, notification: Notification) -> None:
        config = notification.channel
        body = msgspec.json.encode(notification.payload)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            ID_HEADER: notification.id,
        }
        secret = config.get("secret")
        if config.get("secret_env") is not None:
            secret = os.environ.get(config["secret_env"])
            if not secret:
                raise RuntimeError(f"environment variable {config['secret_env']} is not set")
        if secret:
            headers[SIGNATURE_HEADER] = sign(body, secret)
        await _post(config["url"], body, headers, float(config.get("timeout", DEFAULT_TIMEOUT)))


class SlackChannel:
    def validate(self, config: Mapping[str, Any]) -> None:
        _check_keys(config, {"url", "timeout"})
        _check_url(config)
        _check_timeout(config)

    async def deliver(self, notification: Notification) -> None:
        config = notification.channel
        body = msgspec.json.encode(slack_payload(notification))
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        await _post(config["url"], body, headers, float(config.get("timeout", DEFAULT_TIMEOUT)))


def slack_payload(notification: Notification) -> dict[str, Any]:
    """Slack's incoming-webhook message: ``text`` (the fallback for notifications and
    clients without blocks) and Block Kit ``blocks`` with the details."""
    payload = notification.payload
    trigger: dict[str, Any] = payload.get("trigger", {})
    experiment: dict[str, Any] = payload.get("experiment", {})
    project: dict[str, Any] = payload.get("project", {})
    title = f"Guardrail breached: {experiment.get('key')} ({project.get('key')})"
    fields = [
        ("Check", trigger.get("check")),
        ("Action", trigger.get("action")),
        ("Metric", trigger.get("metric")),
        ("Variant", trigger.get("variant")),
    ]
    return {
        "text": f"{title}: {payload.get('message')}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": str(trigger.get("message"))}},
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{name}*\n{value}"}
                    for name, value in fields
                    if value is not None
                ],
            },
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"notification {notification.id} · trigger {trigger.get('id')}",
                    }
                ],
            },
        ],
    }


@hookimpl
def assay_notification_channels() -> Mapping[str, Channel]:
    return {"log": LogChannel(), "webhook": WebhookChannel(), "slack": SlackChannel()}
