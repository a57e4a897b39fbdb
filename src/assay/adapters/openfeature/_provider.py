"""The in-process OpenFeature provider: OpenFeature's API on an embedded engine.

Rules it keeps:
- a resolution is ``engine.decide``: synchronous, no I/O, from the engine's snapshot, so
  the sync and async OpenFeature methods cost the same;
- exposures and conversions never block an evaluation: they go through a bounded queue to
  one background task that records them in batches (``engine.record_events``); a full
  queue drops the event with a warning rather than slowing the application, and closing
  the provider (leaving ``open``) records what is queued first;
- an evaluation that puts a subject in an experiment queues its exposure once per
  (experiment, subject, variant) id, so ingestion counts it once however often the flag is
  evaluated;
- ``track(name, context, details)`` records a conversion of metric ``name`` for the
  experiment named in ``details.attributes["experiment"]``, or else for every experiment
  this provider has seen the subject assigned to (remembered for the last
  ``remembered_subjects`` subjects).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import msgspec
import trio
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
from assay.engine import AssayError, Conversion, Exposure

if TYPE_CHECKING:
    from assay.engine import Engine

log = logging.getLogger("assay.openfeature")

_BATCH = 1_000


class _Flush(msgspec.Struct):
    done: trio.Event


class AssayProvider(TypedResolution):
    """OpenFeature provider deciding on an embedded assay engine. Build it with
    ``async with AssayProvider.open(engine, project="shop") as provider:``."""

    def __init__(
        self,
        engine: Engine,
        project: str | None,
        send: trio.MemorySendChannel[Exposure | Conversion | _Flush],
        *,
        send_exposures: bool,
        remembered_subjects: int,
    ) -> None:
        super().__init__()
        self._engine = engine
        self._project = project
        self._send = send
        self._send_exposures = send_exposures
        self._assignments = Assignments(remembered_subjects)
        self._token = trio.lowlevel.current_trio_token()
        self.dropped = 0
        """Events dropped because the queue was full or the provider closed."""

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        engine: Engine,
        project: str | None = None,
        *,
        send_exposures: bool = True,
        queue_size: int = 10_000,
        remembered_subjects: int = 100_000,
    ) -> AsyncIterator[AssayProvider]:
        """A provider for ``project`` (may be omitted when the engine has one project),
        recording its events until the block ends; then the queue is recorded and closed."""
        send, receive = trio.open_memory_channel[Exposure | Conversion | _Flush](queue_size)
        provider = cls(
            engine,
            project,
            send,
            send_exposures=send_exposures,
            remembered_subjects=remembered_subjects,
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(provider._record_forever, receive)
            try:
                yield provider
            finally:
                await send.aclose()

    def get_metadata(self) -> Metadata:
        return Metadata(name="assay")

    # -- resolution ------------------------------------------------------------------

    def _resolve(
        self, flag: str, default: Any, context: EvaluationContext | None, flag_type: FlagType
    ) -> FlagResolutionDetails[Any]:
        try:
            subject, attributes = subject_and_attributes(context)
            decision = self._engine.decide(flag, subject, attributes, project=self._project)
        except ContextError as error:
            return error_details(default, error.code, str(error))
        except AssayError as error:
            return error_details(default, ErrorCode.GENERAL, f"{error.code}: {error}")
        if decision.in_experiment and decision.experiment and decision.variant:
            self._assigned_to(subject, decision.experiment, decision.variant)
        return details_from_decision(msgspec.structs.asdict(decision), flag_type, default)

    # -- events ----------------------------------------------------------------------

    def track(
        self,
        tracking_event_name: str,
        evaluation_context: Context = None,
        tracking_event_details: TrackingEventDetails | None = None,
    ) -> None:
        """A conversion of metric ``tracking_event_name`` (see the module's rules)."""
        c = conversions_of(
            tracking_event_name, evaluation_context, tracking_event_details, self._assignments
        )
        for experiment in c.experiments:
            self._enqueue(
                Conversion(
                    experiment=experiment,
                    metric=c.metric,
                    subject=c.subject,
                    value=c.value,
                    idempotency_key=c.idempotency_key,
                )
            )

    async def flush(self) -> None:
        """Wait until every event queued before this call has been recorded (or failed)."""
        done = trio.Event()
        await self._send.send(_Flush(done=done))
        await done.wait()

    def _assigned_to(self, subject: str, experiment: str, variant: str) -> None:
        if self._assignments.note(subject, experiment) and self._send_exposures:
            self._enqueue(
                Exposure(
                    experiment=experiment,
                    subject=subject,
                    variant=variant,
                    event_id=exposure_event_id(experiment, subject, variant),
                )
            )

    def _enqueue(self, event: Exposure | Conversion) -> None:
        try:
            in_trio = trio.lowlevel.current_trio_token() is self._token
        except RuntimeError:
            in_trio = False
        try:
            if in_trio:
                self._send.send_nowait(event)
            else:
                trio.from_thread.run_sync(self._send.send_nowait, event, trio_token=self._token)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.RunFinishedError):
            self.dropped += 1
            log.warning("OpenFeature event dropped (queue full or provider closed): %r", event)

    async def _record_forever(
        self, receive: trio.MemoryReceiveChannel[Exposure | Conversion | _Flush]
    ) -> None:
        async with receive:
            async for first in receive:
                batch: list[Exposure | Conversion] = []
                flushes: list[trio.Event] = []
                item: Exposure | Conversion | _Flush = first
                while True:
                    match item:
                        case _Flush(done=done):
                            flushes.append(done)
                        case _:
                            batch.append(item)
                    if len(batch) >= _BATCH:
                        break
                    try:
                        item = receive.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                if batch:
                    await self._record(batch)
                for done in flushes:
                    done.set()

    async def _record(self, batch: list[Exposure | Conversion]) -> None:
        try:
            outcome = await self._engine.record_events(self._project, batch)
        except AssayError as error:
            log.warning("OpenFeature events not recorded (%s): %s", error.code, error)
            return
        for rejected in outcome.rejected:
            log.warning("OpenFeature event rejected: %s", rejected)
