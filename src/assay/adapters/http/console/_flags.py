"""Flag pages (the list, a flag's rules in order, the decision playground), the audit log
and the project list.

The playground decides from the live snapshot with ``Engine.explain``: what ``decide``
would answer now, with nothing recorded and no exposure logged, so trying a subject out
never enters it into an experiment. What the user typed is checked exactly as
``POST /api/v1/decide`` checks its body, and a refusal shows that API error's message.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import msgspec
from quart import Blueprint, Response, request

from assay.adapters.http._errors import HttpError, describe
from assay.adapters.http._request import decode_body
from assay.adapters.http._routing import JsonBody
from assay.adapters.http.console._web import Console
from assay.adapters.http.routes.decisions import DecideRequest, decide_arguments
from assay.engine import (
    AssayError,
    AuditEntry,
    ExperimentRule,
    Flag,
    ForceRule,
    Project,
    RolloutRule,
    ValidationFailed,
)

if TYPE_CHECKING:
    from assay.engine import Rule

AUDIT_KINDS = ("project", "flag", "experiment", "layer", "metric", "key")
AUDIT_PAGES = 10
"""How many pages of the log the actor filter reads through (the store filters by
resource; the actor is matched here)."""


def show(value: Any) -> str:
    """A configuration value as compact JSON text (rendered escaped by the template)."""
    return json.dumps(value, separators=(", ", ": "), ensure_ascii=False, sort_keys=True)


def describe_rule(rule: Rule) -> dict[str, str]:
    condition = getattr(rule, "condition", None)
    targets = show(condition) if condition else "everyone"
    match rule:
        case ForceRule():
            return {"kind": "force", "targets": targets, "serves": show(rule.value)}
        case RolloutRule():
            return {
                "kind": "rollout",
                "targets": f"{targets}; {rule.coverage:.0%} by {rule.hash_attribute}",
                "serves": show(rule.value),
            }
        case ExperimentRule():
            return {
                "kind": "experiment",
                "targets": "the experiment's own targeting and coverage",
                "serves": f"variants of experiment {rule.experiment}",
            }
    return {"kind": "?", "targets": targets, "serves": ""}


def summary(flag: Flag) -> str:
    if not flag.rules:
        return "default only"
    kinds: dict[str, int] = {}
    for rule in flag.rules:
        kinds[describe_rule(rule)["kind"]] = kinds.get(describe_rule(rule)["kind"], 0) + 1
    return ", ".join(f"{n} {kind}" for kind, n in kinds.items())


def register(bp: Blueprint, console: Console) -> None:
    engine = console.engine

    async def projects() -> Response:
        visit = await console.visit()
        page = await engine.service.list_projects(visit.key, limit=500)
        return await console.page("projects.html", visit, projects=page.items)

    async def flags(project: str) -> Response:
        visit = await console.visit()
        found = await engine.service.resolve_project(visit.key, project)
        items: list[Flag] = []
        cursor = None
        while True:
            page = await engine.service.list_objects(
                visit.key, Flag, project, cursor=cursor, limit=500
            )
            items += page.items
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        rows = [{"flag": f, "summary": summary(f)} for f in items]
        return await console.page("flags.html", visit, project=found, rows=rows)

    async def flag(project: str, key: str) -> Response:
        visit = await console.visit()
        found: Project = await engine.service.resolve_project(visit.key, project)
        target = await engine.service.get_object(visit.key, Flag, project, key)
        subject = request.args.get("subject")
        attributes = request.args.get("attributes", "")
        decision = None
        error = None
        if subject is not None:
            try:
                decision = _playground(console, found, target, subject, attributes)
            except (AssayError, HttpError) as exc:
                error = describe(exc)[1]
        return await console.page(
            "flag.html",
            visit,
            project=found,
            flag=target,
            rules=[describe_rule(r) for r in target.rules],
            show=show,
            subject=subject or "",
            attributes=attributes,
            decision=decision,
            error=error,
        )

    async def audit(project: str) -> Response:
        visit = await console.visit()
        found = await engine.service.resolve_project(visit.key, project)
        kind = request.args.get("resource_kind") or None
        resource = request.args.get("resource_key") or None
        actor = (request.args.get("actor") or "").strip() or None
        cursor = request.args.get("cursor") or None
        entries: list[AuditEntry] = []
        next_cursor = None
        for _ in range(AUDIT_PAGES):
            page = await engine.service.list_audit(
                visit.key,
                project,
                resource_kind=kind,
                resource_key=resource,
                cursor=cursor,
                limit=100,
            )
            entries += [e for e in page.items if actor is None or e.actor == actor]
            cursor = next_cursor = page.next_cursor
            if cursor is None or len(entries) >= 100:
                break
        return await console.page(
            "audit.html",
            visit,
            project=found,
            entries=entries,
            kinds=AUDIT_KINDS,
            kind=kind,
            resource=resource or "",
            actor=actor or "",
            next_cursor=next_cursor,
            show=show,
        )

    bp.add_url_rule("/projects", view_func=projects, endpoint="projects")
    bp.add_url_rule("/projects/<project>/flags", view_func=flags, endpoint="flags")
    bp.add_url_rule("/projects/<project>/flags/<key>", view_func=flag, endpoint="flag")
    bp.add_url_rule("/projects/<project>/audit", view_func=audit, endpoint="audit")


def _playground(
    console: Console, project: Project, flag: Flag, subject: str, attributes: str
) -> Any:
    # Build the very body POST /api/v1/decide would receive and decode it the same way,
    # so a value the API refuses is refused here with the API's message.
    try:
        parsed = json.loads(attributes) if attributes.strip() else {}
    except ValueError:
        raw = (
            b'{"flag": ' + msgspec.json.encode(flag.key) + b', "subject": '
            + msgspec.json.encode(subject) + b', "attributes": ' + attributes.encode() + b"}"
        )  # fmt: skip
    else:
        raw = msgspec.json.encode({"flag": flag.key, "subject": subject, "attributes": parsed})
    body: DecideRequest = decode_body(JsonBody(DecideRequest), raw)
    if not isinstance(body.attributes, dict):
        raise ValidationFailed("attributes must be a JSON object", code="invalid_body")
    flag_key, subject_id, attrs = decide_arguments(body)
    return console.engine.explain(flag_key, subject_id, attrs, project_id=project.id)


__all__ = ["register"]
