"""Sticky-bucketing benchmark: what sticky bucketing costs on decide, in process.

    python benchmarks/sticky.py [--quick] [--json PATH]

The decide benchmark's experiment (three variants, 90% coverage, no condition here, so
every user is bucketed) is decided for pre-generated users, median CPU microseconds per
decision over interleaved rounds, by

- ``assay_plain``: ``engine.decide`` on the experiment without sticky bucketing (the
  baseline of this run);
- ``assay_sticky_cached``: the same experiment with sticky bucketing, every user's
  assignment in the engine's document cache (the ``sticky_bucket`` path);
- ``assay_sticky_passed``: the same, each user's documents passed by the caller;
- ``assay_sticky_first``: users never seen, so each decision makes an assignment that is
  cached and queued for writing behind (the write itself is not timed: it happens after);
- GrowthBook's SDK, one ``GrowthBook`` with ``set_attributes`` + ``eval_feature`` per
  user, without and with an ``InMemoryStickyBucketService`` holding every assignment.

Both engines decide with the decision cache off and records disabled. Outcomes are checked
first: the sticky paths must answer each user's first variant after the weights changed.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import trio
from _machine import machine_busy_seconds  # benchmarks/ is this script's directory

PROJECT = "bench"
VARIANTS = ("control", "compact", "express")
COVERAGE = 0.9


def features(sticky: bool, weights: list[float]) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "key": "exp",
        "variations": list(VARIANTS),
        "weights": weights,
        "coverage": COVERAGE,
        "meta": [{"key": v} for v in VARIANTS],
        "hashVersion": 2,
    }
    if sticky:
        rule["bucketVersion"] = 0
    return {"f": {"defaultValue": "off", "rules": [rule]}}


async def populate(engine: Any) -> None:
    from assay.engine import (
        SYSTEM_KEY,
        Experiment,
        ExperimentRule,
        ExperimentSpec,
        Flag,
        FlagSpec,
        FlagType,
        ProjectSpec,
        Transition,
        Variant,
    )

    service = engine.service
    await service.create_project(SYSTEM_KEY, ProjectSpec(key=PROJECT))
    for key, sticky in (("plain", False), ("sticky", True)):
        await service.create_object(
            SYSTEM_KEY,
            Experiment,
            PROJECT,
            ExperimentSpec(
                key=key,
                variants=[Variant(key=v, value=v) for v in VARIANTS],
                coverage=COVERAGE,
                sticky_bucketing=sticky,
            ),
        )
        await service.create_object(
            SYSTEM_KEY,
            Flag,
            PROJECT,
            FlagSpec(
                key=key,
                type=FlagType.STRING,
                default_value="off",
                rules=[ExperimentRule(experiment=key)],
            ),
        )
        await service.transition_experiment(SYSTEM_KEY, PROJECT, key, Transition.START)
    await engine.refresh()


def cpu_us_per_call(fn: Callable[[], object], calls: int) -> float:
    gc.collect()
    started = time.process_time()
    fn()
    return (time.process_time() - started) / calls * 1e6


async def run(users: int, rounds: int) -> dict[str, Any]:
    from growthbook import GrowthBook, InMemoryStickyBucketService

    import assay
    from assay.engine import SYSTEM_KEY, Experiment

    subjects = [f"user-{i:06d}" for i in range(users)]
    attrs = [{"id": s} for s in subjects]
    fresh = [[f"new-{r}-{i:06d}" for i in range(users)] for r in range(rounds)]

    config = assay.EngineConfig(store="memory", decision_cache_size=0, decision_records="disabled")
    async with assay.open_engine(config, load_entry_points=False) as engine:
        await populate(engine)
        first = {
            s: engine.decide("sticky", s, a, project=PROJECT).variant
            for s, a in zip(subjects, attrs, strict=True)
        }
        # Let the write-behind empty, then move every newcomer to one variant.
        await trio.sleep(0.05)
        variants = [
            {"key": v, "value": v, "weight": 1.0 if v == "express" else 0.0} for v in VARIANTS
        ]
        await engine.service.update_object(
            SYSTEM_KEY, Experiment, PROJECT, "sticky", {"variants": variants}
        )
        await engine.refresh()
        project_id = engine.project_id(PROJECT)
        docs = {s: {("id", s): {"sticky__0": v}} for s, v in first.items() if v is not None}
        decide = engine.decide

        def plain() -> None:
            for s, a in zip(subjects, attrs, strict=True):
                decide("plain", s, a, project=PROJECT)

        def sticky_cached() -> None:
            for s, a in zip(subjects, attrs, strict=True):
                decide("sticky", s, a, project=PROJECT)

        def sticky_passed() -> None:
            for s, a in zip(subjects, attrs, strict=True):
                decide("sticky", s, a, project=PROJECT, sticky=docs.get(s, {}))

        # Outcomes first: the sticky paths keep the first variants despite the new weights.
        for s, a in zip(subjects, attrs, strict=True):
            got = decide("sticky", s, a, project=PROJECT, sticky=docs.get(s, {})).variant
            cached = decide("sticky", s, a, project=PROJECT).variant
            if first[s] is not None and not (got == cached == first[s]):
                raise SystemExit(f"sticky outcome differs for {s}: {first[s]} {got} {cached}")

        gb_plain = GrowthBook(features=features(False, [1 / 3] * 3))
        service = InMemoryStickyBucketService()
        gb_sticky = GrowthBook(features=features(True, [1 / 3] * 3), sticky_bucket_service=service)
        for a in attrs:
            gb_sticky.set_attributes(a)
            gb_sticky.eval_feature("f")
        gb_sticky = GrowthBook(features=features(True, [0, 0, 1]), sticky_bucket_service=service)

        def growthbook(gb: GrowthBook) -> Callable[[], None]:
            def go() -> None:
                for a in attrs:
                    gb.set_attributes(a)
                    gb.eval_feature("f")

            return go

        samples: dict[str, list[float]] = {
            k: []
            for k in (
                "assay_plain",
                "assay_sticky_cached",
                "assay_sticky_passed",
                "assay_sticky_first",
                "growthbook_plain",
                "growthbook_sticky",
            )
        }
        for r in range(rounds):
            samples["assay_plain"].append(cpu_us_per_call(plain, users))
            samples["assay_sticky_cached"].append(cpu_us_per_call(sticky_cached, users))
            samples["assay_sticky_passed"].append(cpu_us_per_call(sticky_passed, users))

            def first_time(batch: list[str] = fresh[r]) -> None:
                for s in batch:
                    decide("sticky", s, None, project=PROJECT)

            samples["assay_sticky_first"].append(cpu_us_per_call(first_time, users))
            await trio.sleep(0.05)  # the write-behind, outside the timed part
            samples["growthbook_plain"].append(cpu_us_per_call(growthbook(gb_plain), users))
            samples["growthbook_sticky"].append(cpu_us_per_call(growthbook(gb_sticky), users))
        written = engine.sticky_buckets.written
        stored = await engine.store.load_sticky_buckets(project_id, [("id", fresh[0][0])])

    medians = {k: statistics.median(v) for k, v in samples.items()}
    base = medians["assay_plain"]
    return {
        "users": users,
        "rounds": rounds,
        "median_us": medians,
        "ratio_to_assay_plain": {k: v / base for k, v in medians.items()},
        "samples_us": samples,
        "write_behind_written": written,
        "write_behind_checked": bool(stored),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer users and rounds")
    parser.add_argument("--json", default="benchmarks/results/sticky.json")
    args = parser.parse_args()
    users, rounds = (2_000, 3) if args.quick else (10_000, 7)
    before = machine_busy_seconds()
    result = trio.run(run, users, rounds)
    after = machine_busy_seconds()
    if before is not None and after is not None:
        busy = (after[0] - before[0]) / max(after[1] - before[1], 1e-9)
        result["machine_busy_share"] = busy
        print(f"machine busy during the run: {busy:.0%} of all CPUs (this run included)")
    print(f"sticky bucketing on decide: {users} users, {rounds} rounds, CPU us per decision")
    print(f"{'path':<22} {'median us':>10} {'x assay_plain':>14}")
    for k, v in result["median_us"].items():
        print(f"{k:<22} {v:>10.2f} {result['ratio_to_assay_plain'][k]:>14.2f}")
    print(f"write-behind: {result['write_behind_written']} assignments stored")
    from pathlib import Path

    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
