"""The charts over time on an experiment's results page, from its timeseries.

Two kinds of chart, both server-rendered SVG (``_charts.line_chart``) with a table of the
same numbers beside them: the cumulative analysed subjects per variant (one line each,
told apart by colour, dash and marker, labelled at its end), and per metric and treatment
the cumulative relative lift as a line with its 95% always-valid interval as a band
around it and a dark line at no difference. Pure: the page's view fetches the series.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from assay.adapters.http.console import _format
from assay.adapters.http.console._charts import Series, line_chart

if TYPE_CHECKING:
    from markupsafe import Markup

    from assay.engine import Experiment, Timeseries
    from assay.engine._report_timeseries import TimeseriesLift


@dataclass(frozen=True, kw_only=True)
class LiftOverTime:
    """One treatment's relative lift on one metric at each point where it is computable."""

    variant: str
    points: list[tuple[datetime, TimeseriesLift]]
    chart: Markup


@dataclass(frozen=True, kw_only=True)
class OverTime:
    interval: str
    times: list[datetime] = field(default_factory=list)
    subjects: dict[str, list[int]] = field(default_factory=dict)
    """Per variant (the experiment's order), analysed subjects at each of ``times``."""
    subjects_chart: Markup | None = None
    lifts: dict[str, list[LiftOverTime]] = field(default_factory=dict)
    """Per metric key, each treatment's lift over time."""
    note: str = ""
    """Why there is no series (too many points at this interval)."""


def over_time_charts(experiment: Experiment, series: Timeseries) -> OverTime:
    times = [p.at for p in series.points]
    subjects: dict[str, list[int]] = {}
    for i, v in enumerate(experiment.variants):
        subjects[v.key] = [
            p.variants[i].subjects if i < len(p.variants) else 0 for p in series.points
        ]
    chart = line_chart(
        [
            Series(key, [(t, float(n)) for t, n in zip(times, counts, strict=True)])
            for key, counts in subjects.items()
        ],
        title="Cumulative analysed subjects per variant",
        description="One line per variant, each with its own dash and marker, labelled at its end.",
        axis=lambda v: _format.count(round(v)),
    )
    lifts: dict[str, list[LiftOverTime]] = {}
    seen = list(dict.fromkeys((c.metric, c.variant) for p in series.points for c in p.comparisons))
    for metric, variant in seen:
        points = [
            (p.at, c.relative)
            for p in series.points
            for c in p.comparisons
            if (c.metric, c.variant) == (metric, variant) and c.relative.error is None
        ]
        lifts.setdefault(metric, []).append(
            LiftOverTime(
                variant=variant,
                points=points,
                chart=line_chart(
                    [Series(variant, [(t, r.estimate) for t, r in points])],
                    title=f"Relative lift of {variant} on {metric} over time",
                    description="The line is the cumulative relative lift; the shaded, "
                    "dashed-edged band its 95% always-valid interval; the dark line no "
                    "difference.",
                    axis=lambda v: _format.percent(v, signed=True),
                    band=[(t, r.ci_low, r.ci_high) for t, r in points],
                    zero_line=True,
                ),
            )
        )
    return OverTime(
        interval=series.interval,
        times=times,
        subjects=subjects,
        subjects_chart=chart,
        lifts=lifts,
    )


__all__ = ["LiftOverTime", "OverTime", "over_time_charts"]
