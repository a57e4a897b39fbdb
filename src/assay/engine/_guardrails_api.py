"""The engine's guardrail methods: check an experiment now, list its triggers and its
notifications. Mixed into ``Engine``; the work itself is the guardrail actor's.

Access (``Resource.GUARDRAIL``): ANALYST and above read triggers and the outbox;
DEVELOPER and above may ask for a check; VIEWER and SDK keys are told nothing exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from assay.engine._access import Action, Resource, authorize
from assay.engine._errors import Conflict
from assay.engine._guardrails import ExperimentCheck, GuardrailTrigger, NotificationStatus
from assay.engine._messages import CheckGuardrails, GuardrailsChecked
from assay.engine._model import ApiKey, Experiment, ExperimentStatus
from assay.engine._pagination import Page, check_limit, decode_cursor, encode_cursor
from assay.engine._service import SYSTEM_KEY

if TYPE_CHECKING:
    from assay.engine._actors._guardrail import GuardrailActor
    from assay.engine._messages import GuardrailMessage
    from assay.engine._ports import Store
    from assay.engine._runtime import Mailbox
    from assay.engine._service import ConfigService


class GuardrailAPI:
    """Guardrails, in process. ``project`` is a project key (omit it for a key scoped to
    one); embedded callers act as the system key unless they pass a ``principal``."""

    # Provided by Engine.
    store: Store
    service: ConfigService
    guardrail: Mailbox[GuardrailMessage]
    _guardrail_actor: GuardrailActor

    async def check_guardrails(
        self, project: str | None, experiment: str, *, principal: ApiKey = SYSTEM_KEY
    ) -> ExperimentCheck:
        """Check a running experiment's guardrails and health now, act on any breach, and
        return what every check found. Raises ``Conflict`` (``experiment_not_running``)
        for an experiment that is not running, ``NotFound`` for one the principal cannot
        see. The check is written to the audit log."""
        target = await self._guardrail_experiment(principal, project, experiment, Action.WRITE)
        if target.status is not ExperimentStatus.RUNNING:
            raise Conflict(
                f"experiment {experiment!r} is {target.status.value}; only a running "
                "experiment is checked",
                code="experiment_not_running",
                details={"status": target.status.value},
            )
        answer = await self.guardrail.request(
            CheckGuardrails(
                project_id=target.project_id, experiment=target.id, requested_by=principal.id
            )
        )
        assert isinstance(answer, GuardrailsChecked)
        assert answer.experiments, "the experiment vanished during its check"
        return answer.experiments[0]

    async def guardrail_triggers(
        self,
        project: str | None,
        experiment: str,
        *,
        cursor: str | None = None,
        limit: int | None = None,
        principal: ApiKey = SYSTEM_KEY,
    ) -> Page[GuardrailTrigger]:
        """An experiment's triggers, newest first."""
        limit = check_limit(limit)
        before = decode_cursor(cursor, str)
        assert before is None or isinstance(before, str)
        target = await self._guardrail_experiment(principal, project, experiment, Action.READ)
        items = await self.store.list_triggers(
            experiment_id=target.id, before=before, limit=limit + 1
        )
        return _page(items, limit)

    async def guardrail_outbox(
        self,
        project: str | None,
        experiment: str,
        *,
        cursor: str | None = None,
        limit: int | None = None,
        principal: ApiKey = SYSTEM_KEY,
    ) -> Page[NotificationStatus]:
        """An experiment's notifications and the delivery status of each, newest first.
        Channel settings (URLs, secrets) are not shown."""
        limit = check_limit(limit)
        before = decode_cursor(cursor, str)
        assert before is None or isinstance(before, str)
        target = await self._guardrail_experiment(principal, project, experiment, Action.READ)
        items = await self.store.list_notifications(
            experiment_id=target.id, before=before, limit=limit + 1
        )
        page = _page(items, limit)
        return Page(
            items=[NotificationStatus.of(n) for n in page.items], next_cursor=page.next_cursor
        )

    @property
    def guardrail_status(self) -> dict[str, Any]:
        """This process's guardrail actor: whether it leads, and what it has done."""
        actor = self._guardrail_actor
        return {
            "leading": actor.leading,
            "rounds": actor.rounds,
            "checks": actor.checks,
            "triggers_recorded": actor.checker.triggers_recorded,
            "actions_taken": actor.checker.actions_taken,
            "notifications_delivered": actor.outbox.delivered,
            "delivery_failures": actor.outbox.failed_attempts,
        }

    async def _guardrail_experiment(
        self, principal: ApiKey, project: str | None, key: str, action: Action
    ) -> Experiment:
        found = await self.service.resolve_project(principal, project)
        # Read before write: a key that may not see guardrails learns nothing, not even
        # whether the experiment exists.
        authorize(principal, Resource.GUARDRAIL, Action.READ, project_id=found.id)
        if action is Action.WRITE:
            authorize(principal, Resource.GUARDRAIL, Action.WRITE, project_id=found.id)
            if found.archived:
                raise Conflict(f"project {found.key!r} is archived", code="project_archived")
        return await self.service.get_object(principal, Experiment, found.key, key)


def _page(items: list[Any], limit: int) -> Page[Any]:
    if len(items) > limit:
        items = items[:limit]
        return Page(items=items, next_cursor=encode_cursor(items[-1].id))
    return Page(items=items)
