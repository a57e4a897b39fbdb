"""The planned verdict: primary metrics of an experiment with a plan, judged by a
group-sequential test that stays valid however often the report is read.

The design (``_core._stats_group_sequential``): analyses ("looks") at information fractions
``t = analysed subjects / planned subjects`` (or elapsed days / planned days), boundaries
from the Lan-DeMets O'Brien-Fleming-like spending function, alpha split equally (Bonferroni)
over the primary metrics x treatments, of which the boundaries spend 95% (a margin for the
normal approximation on count data, ``SPENT_SHARE``).

The rules this module keeps, and why:

* **A look is taken, not every read.** Reading a report never spends alpha by itself. A
  new look is taken by a report only when the information fraction has grown by at least
  ``1 / DESIGN_LOOKS`` (5%) since the last one, and once more when it reaches 1 (the final
  look, which spends what is left). Between looks the report shows the last look's
  decision. Look times depend only on how many subjects arrived, never on the effects
  observed, which is what the spending function needs to keep its promise.
* **Looks are stored** (``Store.record_planned_look``), each at most once per index: two
  reports racing for the same look keep the first one's, and every later report (in any
  process) reads the same history, so the boundaries of later looks are computed from the
  looks actually taken.
* **A decision is final.** A comparison that crossed its boundary at a look keeps that
  decision at every later look; after the final look, no new look is taken.
* Only a report of the whole experiment (no ``start``/``end``) takes looks and shows the
  planned verdict; a report of a period falls back to the always-valid verdict and says so.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

import msgspec

from assay.engine._core._stats_group_sequential import DESIGN_LOOKS, planned_boundaries
from assay.engine._model import Experiment

__all__ = [
    "LOOK_STEP",
    "LookDecision",
    "PlannedLook",
    "information_fraction",
    "look_due",
    "take_look",
]

LOOK_STEP: Final = 1.0 / DESIGN_LOOKS

Decision = Literal["better", "worse"]


class LookDecision(msgspec.Struct, frozen=True, kw_only=True):
    """One comparison (``metric``/``variant``) at one look."""

    metric: str
    variant: str
    z: float | None
    """The lift's z statistic at the look (None: not computable then)."""
    boundary: float
    """Reject when ``|z| >= boundary`` (``inf`` at a look too early to spend anything)."""
    decision: Decision | None = None
    decided_at_look: int | None = None


class PlannedLook(msgspec.Struct, frozen=True, kw_only=True):
    experiment_id: str
    index: int
    """1, 2, ...: the order of the looks."""
    fraction: float
    """Information fraction the look was taken at (capped at 1: the final look)."""
    taken_at: datetime
    alpha: float
    """Alpha of each comparison (the plan's alpha over primary metrics x treatments)."""
    decisions: list[LookDecision] = []

    @property
    def final(self) -> bool:
        return self.fraction >= 1.0


def information_fraction(experiment: Experiment, analysed: int, now: datetime) -> float | None:
    """How far the experiment is through its plan (may exceed 1); None without a plan."""
    plan = experiment.plan
    if plan is None:
        return None
    if plan.subjects_per_variant is not None:
        return analysed / (plan.subjects_per_variant * max(len(experiment.variants), 1))
    assert plan.days is not None
    if experiment.started_at is None:
        return 0.0
    end = experiment.ended_at or now
    return max((end - experiment.started_at).total_seconds(), 0.0) / (plan.days * 86400.0)


def look_due(looks: list[PlannedLook], fraction: float) -> float | None:
    """The fraction of the next look if one is due now, else None."""
    last = looks[-1].fraction if looks else 0.0
    if looks and looks[-1].final:
        return None
    if fraction >= 1.0 and last < 1.0:
        return 1.0
    if fraction > 0 and fraction - last >= LOOK_STEP - 1e-12:
        return fraction
    return None


def take_look(
    experiment_id: str,
    looks: list[PlannedLook],
    fraction: float,
    z: dict[tuple[str, str], float | None],
    higher_is_better: dict[str, bool],
    alpha: float,
    now: datetime,
) -> PlannedLook:
    """The next look at ``fraction`` (from ``look_due``) over the comparisons in ``z``
    (``(metric, variant) -> z``), carrying forward every earlier decision."""
    fractions = [look.fraction for look in looks] + [fraction]
    boundary = planned_boundaries(fractions, alpha)[-1]
    index = len(looks) + 1
    earlier: dict[tuple[str, str], LookDecision] = {}
    if looks:
        earlier = {(d.metric, d.variant): d for d in looks[-1].decisions}
    decisions = []
    for (metric, variant), value in z.items():
        before = earlier.get((metric, variant))
        if before is not None and before.decision is not None:
            decisions.append(msgspec.structs.replace(before, z=value, boundary=boundary))
            continue
        decision: Decision | None = None
        if value is not None and abs(value) >= boundary:
            up = value > 0
            decision = "better" if up == higher_is_better.get(metric, True) else "worse"
        decisions.append(
            LookDecision(
                metric=metric,
                variant=variant,
                z=value,
                boundary=boundary,
                decision=decision,
                decided_at_look=index if decision is not None else None,
            )
        )
    return PlannedLook(
        experiment_id=experiment_id,
        index=index,
        fraction=fraction,
        taken_at=now,
        alpha=alpha,
        decisions=decisions,
    )
