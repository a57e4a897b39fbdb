"""Reports on PostgreSQL at scale and from the command line: SRM fires on 52/48 at 100,000
subjects and stays quiet on 50/50 (rows COPYed straight into the event tables, so the
rollup triggers see one 100,000-row statement), and ``assay report`` prints the table, the
verdicts and the SRM warning, or the JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

import pytest
import trio

import assay
from assay.adapters.cli import main
from assay.adapters.embedded import EmbeddedPostgres
from assay.engine import (
    SYSTEM_KEY,
    EngineConfig,
    Experiment,
    ExperimentSpec,
    Metric,
    MetricSpec,
    ProjectSpec,
    Transition,
    Variant,
)

P = "shop"
N = 100_000
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)


async def _setup(dsn: str) -> dict[str, str]:
    """Two running 50/50 experiments with a proportion and a mean metric; their ids."""
    ids = {}
    async with assay.open_engine(EngineConfig(database_url=dsn), load_entry_points=False) as e:
        await e.service.create_project(SYSTEM_KEY, ProjectSpec(key=P))
        await e.service.create_object(SYSTEM_KEY, Metric, P, MetricSpec(key="bought"))
        await e.service.create_object(
            SYSTEM_KEY, Metric, P, MetricSpec(key="spent", kind="mean", higher_is_better=False)
        )
        for key in ("skewed", "fair"):
            created = await e.service.create_object(
                SYSTEM_KEY,
                Experiment,
                P,
                ExperimentSpec(
                    key=key,
                    variants=[Variant(key="control", value=0), Variant(key="treatment", value=1)],
                    primary_metrics=["bought"],
                    secondary_metrics=["spent"],
                ),
            )
            await e.service.transition_experiment(SYSTEM_KEY, P, key, Transition.START)
            ids[key] = created.id
            await e.report(P, key)  # rollups exist: the COPY below is rolled up incrementally
    return ids


def _copy(pg: EmbeddedPostgres, dsn: str, experiment_id: str, control_share: float) -> None:
    control = int(N * control_share)
    exposures = "\n".join(
        f"{experiment_id},s{i},{'control' if i < control else 'treatment'},"
        f"{(T0 + timedelta(seconds=i)).isoformat()}"
        for i in range(N)
    )
    # Treatment converts clearly more (every 4th subject against every 10th in control).
    conversions = "\n".join(
        f"{experiment_id},bought,s{i},1,{(T0 + timedelta(seconds=i + 60)).isoformat()}"
        for i in range(N)
        if i % (10 if i < control else 4) == 0
    )
    database = urlparse(dsn).path.lstrip("/")
    pg.psql(
        "COPY assay_exposures (experiment_id, subject, variant, exposed_at) "
        f"FROM STDIN WITH (FORMAT csv);\n{exposures}\n\\.\n"
        "COPY assay_conversions (experiment_id, metric_key, subject, value, converted_at) "
        f"FROM STDIN WITH (FORMAT csv);\n{conversions}\n\\.",
        database=database,
    )


@pytest.fixture
def loaded(embedded_pg: EmbeddedPostgres, pg_dsn: str) -> str:
    ids = trio.run(_setup, pg_dsn)
    _copy(embedded_pg, pg_dsn, ids["skewed"], 0.52)
    _copy(embedded_pg, pg_dsn, ids["fair"], 0.50)
    return pg_dsn


def test_srm_fires_on_52_48_and_not_on_50_50(loaded: str) -> None:
    async def reports() -> tuple[assay.engine._reports.Report, ...]:
        config = EngineConfig(database_url=loaded)
        async with assay.open_engine(config, load_entry_points=False) as engine:
            return await engine.report(P, "skewed"), await engine.report(P, "fair")

    skewed, fair = trio.run(reports)
    assert skewed.srm.observed == [52_000, 48_000]
    assert skewed.srm.flagged
    assert skewed.srm.p_value < 1e-30
    assert fair.srm.observed == [50_000, 50_000]
    assert not fair.srm.flagged
    bought = fair.metrics[0]
    assert [v.value for v in bought.values] == [pytest.approx(0.1), pytest.approx(0.25)]
    assert bought.comparisons[0].verdict == "better"


def test_cli_report_table_and_json(loaded: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "skewed", "--project", P, "--database-url", loaded]) == 0
    out = capsys.readouterr().out
    assert "Experiment skewed (RUNNING)" in out
    assert "WARNING: sample ratio mismatch" in out
    assert "control (control)" in out
    assert "Metric bought (proportion, primary, higher is better)" in out
    # A broken split justifies no verdict, however clear the lift looks.
    assert "treatment better" not in out
    assert "not computable (sample ratio mismatch" in out
    assert "Metric spent (mean, secondary, lower is better)" in out

    assert main(["report", "fair", "--project", P, "--database-url", loaded]) == 0
    out = capsys.readouterr().out
    assert "SRM check passed" in out
    assert "treatment better (significant)" in out
    # No conversions of "spent" at all: nothing to compare.
    assert "not computable (an arm has no variance" in out

    start = (T0 + timedelta(seconds=N // 2)).isoformat()
    args = ["report", "fair", "--project", P, "--database-url", loaded, "--json"]
    assert main([*args, "--start", start, "--correction", "none"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["correction"] == "none"
    assert [v["exposed"] for v in body["variants"]] == [0, 50_000]

    assert main(["report", "nope", "--project", P, "--database-url", loaded]) == 1
    assert "not_found" in capsys.readouterr().err


def test_assay_plan_prints_the_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["plan", "--baseline-rate", "0.1", "--mde", "0.05", "--daily-traffic", "10000"]) == 0
    )
    out = capsys.readouterr().out
    assert "fixed horizon          57,760      115,520       11.6" in out
    assert "sequential" in out
    assert main(["plan", "--baseline-rate", "0.1", "--mde", "0.05", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fixed_subjects_per_variant"] == 57760


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--baseline-rate", "0.1", "--mde", "0"], "invalid_plan"),
        (["--baseline-rate", "0.1", "--mde", "0.05", "--power", "1"], "invalid_plan"),
        (
            ["--baseline-mean", "3", "--baseline-variance", "0", "--mde", "0.1"],
            "zero_variance_baseline",
        ),
    ],
)
def test_assay_plan_refuses_a_plan_that_cannot_be_met(
    capsys: pytest.CaptureFixture[str], args: list[str], code: str
) -> None:
    assert main(["plan", *args]) != 0
    assert f"error ({code})" in capsys.readouterr().err
