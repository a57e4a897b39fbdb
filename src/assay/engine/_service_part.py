"""What ``ConfigService`` lends the parts it is assembled from (API keys, SDK connections):
the store, and the project resolution and auditing every change goes through. The parts
subclass ``ServicePart`` so each is checked against these, and none holds a copy of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from assay.engine._model import ApiKey, Project
    from assay.engine._ports import Store, StoreTransaction


class ServicePart:
    """A part of ``ConfigService``; the service provides what is declared here."""

    _store: Store

    if TYPE_CHECKING:

        async def _resolve_project(
            self, tx: StoreTransaction, principal: ApiKey, project: str | None
        ) -> Project: ...

        async def _audit_raw(
            self,
            tx: StoreTransaction,
            principal: ApiKey,
            action: str,
            subject: tuple[str | None, str, str, str],
            before: Any,
            after: Any,
        ) -> None: ...
