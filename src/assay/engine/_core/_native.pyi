"""Types of the compiled decide path (``_native.c``)."""

from collections.abc import Callable, Mapping
from typing import Any

from assay.engine._core._decide import Decision
from assay.engine._core._snapshot import Snapshot
from assay.engine._core._sticky import StickyDocs

ABI: int

def decide(
    snapshot: Snapshot,
    project_id: str,
    flag_key: str,
    subject: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    new_id: Callable[[], str] | None = None,
    sticky: StickyDocs | None = None,
) -> Decision: ...
def evaluate(
    plan: tuple[Any, ...], attrs: Mapping[str, Any], docs: StickyDocs
) -> tuple[Any, str | None, str | None, Any, str | None, Any, bool, str | None] | None: ...
def gb_hash(seed: str, value: str, version: int) -> float | None: ...
def condition(node: tuple[Any, ...], value: Any) -> bool: ...
def choose(n: float, ranges: tuple[tuple[float, float], ...]) -> int: ...
def engine_decider(
    engine: object,
    slow: Callable[..., Decision],
    core: Callable[..., Decision],
    enqueue: Callable[..., None] | None,
    note: Callable[..., None],
    sticky_docs: dict[str, Any],
    sample: int,
) -> Callable[..., Decision]: ...
def next_id() -> str: ...
def reseed(prefix: str) -> None: ...
def set_enabled(enabled: bool) -> bool: ...
def configure(
    python_decide: Callable[..., Decision],
    hashable: Callable[[Any], str],
    finish_sticky: Callable[..., Decision],
    decision: type[Decision],
    missing: object,
    reasons: tuple[Any, ...],
    fields: tuple[str, ...],
) -> None: ...
