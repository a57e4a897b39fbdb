"""Every operation that takes a body has a request example in the OpenAPI document (and
on /docs); each example decodes strictly as the operation's body type, and the server
accepts each one, sent in order as a person following the document would."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from assay.adapters.http import ROUTES, build_openapi
from assay.adapters.http._routing import JsonBody, PatchBody, Route
from assay.engine import (
    SYSTEM_KEY,
    Experiment,
    ExperimentSpec,
    Layer,
    LayerSpec,
    Metric,
    MetricSpec,
    Transition,
    Variant,
)

BODY_ROUTES = {r.operation_id: r for r in ROUTES if r.body is not None}

# The order a person would send the examples in: each one may use what earlier ones made.
ORDER = [
    "createProject",
    "updateProject",
    "createLayer",
    "updateLayer",
    "createMetric",
    "updateMetric",
    "createSegment",
    "updateSegment",
    "createExperiment",
    "updateExperiment",
    "createFlag",
    "updateFlag",
    "startExperiment",
    "decide",
    "decideBatch",
    "planExperiment",
    "recordEvents",
    "recordExposures",
    "recordConversions",
    "createSdkConnection",
    "updateSdkConnection",
    "evalSdkPayload",
    "recordSdkExposures",
    "checkGuardrails",
    "pauseExperiment",
    "resumeExperiment",
    "rollbackExperiment",
    "archiveExperiment",
    "completeExperiment",
    "deleteFlag",
    "deleteExperiment",
    "deleteLayer",
    "deleteMetric",
    "deleteSegment",
    "createKey",
    "revokeKey",
    "revokeSdkConnection",
    "archiveProject",
    "restoreProject",
]

# Path keys: what the examples create, except where an operation needs another object
# (made before the run): a running experiment to complete, a draft to delete, and a
# layer and a metric nothing refers to.
PATH_KEYS = {
    "projects": "shop",
    "layers": "checkout",
    "metrics": "purchase",
    "experiments": "checkout-button",
    "flags": "checkout-color",
    "segments": "beta-testers",
}
OVERRIDES = {
    "completeExperiment": "other-experiment",
    "deleteExperiment": "draft-experiment",
    "deleteLayer": "unused-layer",
    "deleteMetric": "unused-metric",
}
# Operations whose {id} is the id an earlier example created.
ID_FROM = {
    "revokeKey": "createKey",
    "updateSdkConnection": "createSdkConnection",
    "revokeSdkConnection": "createSdkConnection",
}


def _example(route: Route) -> Any:
    assert route.body is not None
    return route.body.example


def test_every_operation_with_a_body_has_an_example_in_the_document() -> None:
    missing = sorted(op for op, route in BODY_ROUTES.items() if _example(route) is None)
    assert not missing, f"operations without a request example: {missing}"
    document = build_openapi(ROUTES)
    for item in document["paths"].values():
        for operation in item.values():
            body = operation.get("requestBody")
            if body is not None:
                media = body["content"]["application/json"]
                assert media["example"] == _example(BODY_ROUTES[operation["operationId"]])


def test_every_example_decodes_strictly_as_its_body_type() -> None:
    for op, route in BODY_ROUTES.items():
        body = route.body
        example = _example(route)
        if isinstance(body, JsonBody):
            msgspec.json.decode(msgspec.json.encode(example), type=body.type)
        else:
            assert isinstance(body, PatchBody)
            unknown = set(example) - set(body.spec.__struct_fields__)
            assert not unknown, (op, unknown)
            create = next(
                r
                for r in ROUTES
                if r.method == "POST" and isinstance(r.body, JsonBody) and r.body.type is body.spec
            )
            merged = {**_example(create), **example}
            msgspec.json.decode(msgspec.json.encode(merged), type=body.spec)


def test_the_order_below_holds_every_operation_with_a_body() -> None:
    assert sorted(ORDER) == sorted(BODY_ROUTES), (
        "add each new operation with a body to ORDER (and its path key if it has one)"
    )


def test_generated_summaries_use_the_right_article() -> None:
    for route in ROUTES:
        assert not re.search(r"\ba [aeio]", route.summary), route.summary
        assert not re.search(r"\ban [b-df-hj-np-tv-z]", route.summary), route.summary
    summaries = {r.operation_id: r.summary for r in ROUTES}
    assert summaries["createExperiment"] == "Create an experiment"
    assert summaries["createFlag"] == "Create a flag"


async def test_the_server_accepts_every_example_in_order(world, admin) -> None:
    service = world.engine.service
    answers: dict[str, Any] = {}
    for op in ORDER:
        route = BODY_ROUTES[op]
        if op == "createExperiment":
            await _prepare(service)
        path = route.path
        for name in route.path_params:
            if name == "client_key":
                value = answers["createSdkConnection"]["client_key"]
            else:
                value = answers[ID_FROM[op]]["id"] if name == "id" else OVERRIDES.get(op)
            path = path.replace(f"{{{name}}}", value or PATH_KEYS[route.path.split("/")[3]])
        if any(q.name == "project" for q in route.query):
            path += "?project=shop"
        answer = await admin.call(route.method, path, json=_example(route))
        assert 200 <= answer.status < 300, (op, answer.status, answer.body)
        answers[op] = answer.body
        if isinstance(answer.body, dict) and "rejected" in answer.body:
            assert answer.body["rejected"] == [], (op, answer.body)
    assert answers["decide"]["reason"] in {"experiment_assigned", "forced", "default"}


async def _prepare(service: Any) -> None:
    """Objects the examples do not make: see OVERRIDES."""
    variants = [Variant(key="a", value="blue"), Variant(key="b", value="green")]
    for key in ("other-experiment", "draft-experiment"):
        spec = ExperimentSpec(key=key, variants=variants)
        await service.create_object(SYSTEM_KEY, Experiment, "shop", spec)
    await service.transition_experiment(SYSTEM_KEY, "shop", "other-experiment", Transition.START)
    await service.create_object(SYSTEM_KEY, Layer, "shop", LayerSpec(key="unused-layer"))
    await service.create_object(SYSTEM_KEY, Metric, "shop", MetricSpec(key="unused-metric"))


def test_the_docs_index_gives_each_operation_its_own_line() -> None:
    """The endpoint index at the top of /docs: one card per tag, one list item per
    operation holding its method and its whole path (checked in a real browser: no path
    overlaps another or is clipped, at 1280 px and at 480 px)."""
    from assay.adapters.http._docs import render_docs

    document = build_openapi(ROUTES)
    page = render_docs(document)
    index = page[page.index('<div class="index">') : page.index("</nav>")]
    items = re.findall(
        r'<li><span class="method (\w+)">\1</span><a href="#op-(\w+)"><code>([^<]+)</code>',
        index,
    )
    expected = {(r.method, r.operation_id, r.path) for r in ROUTES}
    assert set(items) == expected
    # CSS columns split the lists mid-tag and made paths overlap; a grid of cards does not.
    assert not re.search(r"[{;\s]columns:", page)
    # Request examples are shown on the page too.
    assert '"key": "checkout-button"' in page.replace("&quot;", '"')
