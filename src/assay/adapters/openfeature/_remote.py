"""The remote OpenFeature provider: OpenFeature's API against ``assay serve`` over HTTP.

Rules it keeps:
- one ``POST /api/v1/decide`` per resolution, on one keep-alive connection pool (httpx);
  the sync methods use a sync client, the async ones an async client, so an async
  application never blocks its loop;
- an HTTP or transport failure resolves to the caller's default with OpenFeature's
  ``GENERAL`` error (the server's error code in the message), never an exception into the
  application; an unknown flag is ``FLAG_NOT_FOUND`` as in process;
- exposures (when the server answers that the subject is in an experiment, once per
  experiment, subject and variant) and ``track`` conversions are sent to
  ``POST /api/v1/events``, each with an id, so a retry is counted once; the subject's
  experiments for ``track`` are remembered as in process.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, FlagType
from openfeature.provider import Metadata
from openfeature.track import TrackingEventDetails

from assay.adapters.openfeature._resolution import (
    Assignments,
    Context,
    ContextError,
    TypedResolution,
    conversions_of,
    details_from_decision,
    error_details,
    exposure_event_id,
    subject_and_attributes,
)

log = logging.getLogger("assay.openfeature")


class RemoteAssayProvider(TypedResolution):
    """OpenFeature provider deciding with a running assay server.

    ``base_url`` is the server (``http://127.0.0.1:8000``), ``api_key`` a key that may
    decide and send events in ``project`` (an SDK key is enough)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        project: str | None = None,
        *,
        send_exposures: bool = True,
        timeout: float = 2.0,
        remembered_subjects: int = 100_000,
    ) -> None:
        super().__init__()
        headers = {"Authorization": f"Bearer {api_key}"}
        params = {"project": project} if project is not None else {}
        url = base_url.rstrip("/") + "/api/v1"
        self._client = httpx.Client(base_url=url, headers=headers, params=params, timeout=timeout)
        self._async_client = httpx.AsyncClient(
            base_url=url, headers=headers, params=params, timeout=timeout
        )
        self._send_exposures = send_exposures
        self._assignments = Assignments(remembered_subjects)

    def get_metadata(self) -> Metadata:
        return Metadata(name="assay-remote")

    def shutdown(self) -> None:
        self._client.close()

    async def aclose(self) -> None:
        """Close both connection pools (the async one needs an event loop to close)."""
        self._client.close()
        await self._async_client.aclose()

    # -- resolution ------------------------------------------------------------------

    def _request(self, flag: str, context: EvaluationContext | None) -> dict[str, Any]:
        subject, attributes = subject_and_attributes(context)
        return {"flag": flag, "subject": subject, "attributes": attributes}

    def _details(
        self, response: httpx.Response, flag_type: FlagType, default: Any
    ) -> FlagResolutionDetails[Any]:
        if response.status_code != 200:
            try:
                error = response.json()["error"]
                message = f"{error['code']}: {error['message']}"
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {response.status_code}"
            return error_details(default, ErrorCode.GENERAL, message)
        decision = response.json()
        details = details_from_decision(decision, flag_type, default)
        if decision.get("in_experiment") and decision.get("experiment") and decision.get("variant"):
            self._assigned_to(decision["subject"], decision["experiment"], decision["variant"])
        return details

    def _resolve(
        self, flag: str, default: Any, context: EvaluationContext | None, flag_type: FlagType
    ) -> FlagResolutionDetails[Any]:
        try:
            response = self._client.post("/decide", json=self._request(flag, context))
        except ContextError as error:
            return error_details(default, error.code, str(error))
        except httpx.HTTPError as error:
            return error_details(default, ErrorCode.GENERAL, f"assay unreachable: {error}")
        return self._details(response, flag_type, default)

    async def _resolve_async(
        self, flag: str, default: Any, context: EvaluationContext | None, flag_type: FlagType
    ) -> FlagResolutionDetails[Any]:
        try:
            response = await self._async_client.post("/decide", json=self._request(flag, context))
        except ContextError as error:
            return error_details(default, error.code, str(error))
        except httpx.HTTPError as error:
            return error_details(default, ErrorCode.GENERAL, f"assay unreachable: {error}")
        return self._details(response, flag_type, default)

    async def resolve_boolean_details_async(
        self, flag_key: str, default_value: bool, evaluation_context: Context = None
    ) -> FlagResolutionDetails[bool]:
        return await self._resolve_async(
            flag_key, default_value, evaluation_context, FlagType.BOOLEAN
        )

    async def resolve_string_details_async(
        self, flag_key: str, default_value: str, evaluation_context: Context = None
    ) -> FlagResolutionDetails[str]:
        return await self._resolve_async(
            flag_key, default_value, evaluation_context, FlagType.STRING
        )

    async def resolve_integer_details_async(
        self, flag_key: str, default_value: int, evaluation_context: Context = None
    ) -> FlagResolutionDetails[int]:
        return await self._resolve_async(
            flag_key, default_value, evaluation_context, FlagType.INTEGER
        )

    async def resolve_float_details_async(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: Context = None,
    ) -> FlagResolutionDetails[float]:
        return await self._resolve_async(
            flag_key, default_value, evaluation_context, FlagType.FLOAT
        )

    async def resolve_object_details_async(
        self,
        flag_key: str,
        default_value: Sequence[Any] | Mapping[str, Any],
        evaluation_context: Context = None,
    ) -> FlagResolutionDetails[Sequence[Any] | Mapping[str, Any]]:
        return await self._resolve_async(
            flag_key, default_value, evaluation_context, FlagType.OBJECT
        )

    # -- events ----------------------------------------------------------------------

    def track(
        self,
        tracking_event_name: str,
        evaluation_context: Context = None,
        tracking_event_details: TrackingEventDetails | None = None,
    ) -> None:
        """A conversion of metric ``tracking_event_name`` for the experiment named in
        ``details.attributes["experiment"]``, or every experiment the subject was seen in."""
        c = conversions_of(
            tracking_event_name, evaluation_context, tracking_event_details, self._assignments
        )
        key = {} if c.idempotency_key is None else {"idempotency_key": c.idempotency_key}
        self._post_events(
            [
                {
                    "type": "conversion",
                    "experiment": experiment,
                    "metric": c.metric,
                    "subject": c.subject,
                    "value": c.value,
                    **key,
                }
                for experiment in c.experiments
            ]
        )

    def _assigned_to(self, subject: str, experiment: str, variant: str) -> None:
        if self._assignments.note(subject, experiment) and self._send_exposures:
            self._post_events(
                [
                    {
                        "type": "exposure",
                        "experiment": experiment,
                        "subject": subject,
                        "variant": variant,
                        "event_id": exposure_event_id(experiment, subject, variant),
                    }
                ]
            )

    def _post_events(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        try:
            response = self._client.post("/events", json={"events": events})
        except httpx.HTTPError as error:
            log.warning("OpenFeature events not sent: %s", error)
            return
        if response.status_code != 200:
            status, text = response.status_code, response.text
            log.warning("OpenFeature events refused: HTTP %s %s", status, text)
            return
        for rejected in response.json().get("rejected", []):
            log.warning("OpenFeature event rejected: %s", rejected)
