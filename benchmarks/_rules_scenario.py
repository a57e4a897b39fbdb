"""The decide benchmark's second scenario: GrowthBook's rule language.

One GrowthBook features payload, loaded into assay by its GrowthBook import and given as
is to GrowthBook's Python SDK:

- ``beta-gate``: a rollout (force ``true`` to 80% of users, hash v2);
- ``checkout-rules``: an experiment rule with a prerequisite on ``beta-gate``
  (``parentConditions``), a targeting condition, a hash-range filter (mutual exclusion
  across namespaces, GrowthBook's way) and explicit bucket ranges with gaps (three
  variations over [0, 0.3), [0.35, 0.65) and [0.7, 1)), with sticky bucketing
  (``bucketVersion``: the import makes it a sticky experiment; GrowthBook is given an
  ``InMemoryStickyBucketService``).

Both sides' sticky documents are filled the same way: one warm-up pass decides every user,
which assigns everyone enrolled (assay keeps the documents in its cache and writes them
behind, GrowthBook in its in-memory service). The timed rounds then read existing
documents, the common case. Every user's value and variant are checked equal between the
two, on the warm-up pass and again on a pass that reads the documents, before anything is
timed; then both decide every user in interleaved rounds, this process's CPU time per
decision is recorded, and the median and the paired ratio (median of per-round ratios) are
reported.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

PROJECT = "bench-rules"
FLAG = "checkout-rules"
GATE = "beta-gate"
VARIANTS = ("control", "compact", "express")

PAYLOAD: dict[str, Any] = {
    "features": {
        GATE: {
            "defaultValue": False,
            "rules": [{"force": True, "coverage": 0.8, "hashVersion": 2, "seed": "beta"}],
        },
        FLAG: {
            "defaultValue": "off",
            "rules": [
                {
                    "key": "checkout-ranges",
                    "parentConditions": [{"id": GATE, "condition": {"value": {"$eq": True}}}],
                    "condition": {"country": {"$in": ["US", "CA", "GB", "DE", "FR"]}},
                    "filters": [{"seed": "checkout-ns", "ranges": [[0, 0.6]]}],
                    "variations": list(VARIANTS),
                    "ranges": [[0, 0.3], [0.35, 0.65], [0.7, 1.0]],
                    "meta": [{"key": v} for v in VARIANTS],
                    "hashVersion": 2,
                    "bucketVersion": 0,
                }
            ],
        },
    }
}


async def rules_scenario(users: Sequence[dict[str, str]], rounds: int) -> dict[str, Any]:
    import trio
    from growthbook import GrowthBook, InMemoryStickyBucketService

    import assay
    from assay.adapters.growthbook._import import import_growthbook
    from assay.engine import SYSTEM_KEY, Experiment, ProjectSpec

    sticky_service = InMemoryStickyBucketService()
    gb = GrowthBook(features=PAYLOAD["features"], sticky_bucket_service=sticky_service)

    def growthbook() -> list[tuple[Any, str | None]]:
        out: list[tuple[Any, str | None]] = []
        for user in users:
            gb.set_attributes(user)
            r = gb.eval_feature(FLAG)
            er = r.experimentResult
            out.append((r.value, er.key if er is not None and er.inExperiment else None))
        return out

    config = assay.EngineConfig(store="memory", decision_cache_size=0, decision_records="disabled")
    async with assay.open_engine(config, load_entry_points=False) as engine:
        await engine.service.create_project(SYSTEM_KEY, ProjectSpec(key=PROJECT))
        report = await import_growthbook(engine.service, SYSTEM_KEY, PROJECT, PAYLOAD)
        if report.warnings:
            raise SystemExit(f"the rules scenario did not import as is: {report.warnings}")
        await engine.refresh()
        decide = engine.decide
        subjects = [u["id"] for u in users]

        def assay_decide() -> list[tuple[Any, str | None]]:
            out: list[tuple[Any, str | None]] = []
            for s, u in zip(subjects, users, strict=True):
                d = decide(FLAG, s, u, project=PROJECT)
                out.append((d.value, d.variant if d.in_experiment else None))
            return out

        contenders: dict[str, Callable[[], list[tuple[Any, str | None]]]] = {
            "assay": assay_decide,
            "growthbook_instance": growthbook,
        }
        imported = await engine.service.list_objects(SYSTEM_KEY, Experiment, PROJECT)
        if [e.sticky_bucketing for e in imported.items] != [True]:
            raise SystemExit("rules scenario: the imported experiment is not sticky")
        # The warm-up pass assigns everyone enrolled (first decisions, documents written);
        # the second pass reads those documents, as every timed round will.
        for phase in ("assigning", "reading documents"):
            ours, theirs = assay_decide(), growthbook()
            differ = sum(a != b for a, b in zip(ours, theirs, strict=True))
            if differ:
                raise SystemExit(
                    f"rules scenario ({phase}): assay disagrees with GrowthBook on {differ} users"
                )
            await trio.sleep(0.1)  # let assay's write-behind empty outside the timed part
        documents = {
            "assay_written": engine.sticky_buckets.written,
            "growthbook_stored": len(sticky_service.docs),
        }
        enrolled = sum(v is not None for _, v in ours)
        if not 0.05 * len(users) < enrolled < 0.5 * len(users):
            raise SystemExit(f"rules scenario: {enrolled} users enrolled, expected ~15-25%")
        split = {v: sum(x == v for _, x in ours) for v in VARIANTS}

        samples: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(rounds):
            for name, run in contenders.items():
                gc.collect()
                cpu_started = time.process_time()
                run()
                samples[name].append((time.process_time() - cpu_started) * 1e6 / len(users))
    medians = {name: statistics.median(s) for name, s in samples.items()}
    paired = statistics.median(
        g / a for g, a in zip(samples["growthbook_instance"], samples["assay"], strict=True)
    )
    return {
        "payload": PAYLOAD,
        "verification": {
            "users": len(users),
            "in_experiment": enrolled,
            "variant_split": split,
            "same_value_and_variant_as_growthbook": 1.0,
            "sticky_documents": documents,
        },
        "us": medians,
        "rounds_us": samples,
        "growthbook_over_assay": medians["growthbook_instance"] / medians["assay"],
        "growthbook_over_assay_paired": paired,
    }


def print_rules_table(rules: dict[str, Any]) -> None:
    v = rules["verification"]
    print(
        "\nRules scenario (a prerequisite, a filter, explicit ranges with gaps, sticky"
        " bucketing reading existing documents), in process, CPU microseconds per decision:"
    )
    for name, us in rules["us"].items():
        print(f"  {name:24} {us:7.2f}")
    print(
        f"  growthbook/assay {rules['growthbook_over_assay']:.2f}x"
        f" (paired rounds {rules['growthbook_over_assay_paired']:.2f}x);"
        f" checked: {v['in_experiment']:,} of {v['users']:,} users enrolled, split"
        f" {v['variant_split']}; assay = GrowthBook on every user;"
        f" sticky documents {v['sticky_documents']}"
    )
