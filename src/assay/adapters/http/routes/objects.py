"""Flags, experiments, layers, metrics and segments: the same five operations for each, in
the project the API key addresses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from assay.adapters.http._routing import (
    CURSOR,
    LIMIT,
    NO_BODY,
    PROJECT,
    Call,
    JsonBody,
    PatchBody,
    Route,
    article,
)
from assay.engine import (
    Experiment,
    ExperimentSpec,
    Flag,
    FlagSpec,
    Layer,
    LayerSpec,
    Metric,
    MetricSpec,
    Page,
    Segment,
    SegmentSpec,
)

if TYPE_CHECKING:
    import msgspec

ObjectT = TypeVar("ObjectT", Flag, Experiment, Layer, Metric, Segment)


def object_routes(
    kind: type[ObjectT],
    spec: type[msgspec.Struct],
    *,
    name: str,
    description: str,
    example: Mapping[str, Any],
    patch_example: Mapping[str, Any],
) -> tuple[Route, ...]:
    """List, create, get, update and delete for one kind of project-scoped object;
    ``example`` is a create body, ``patch_example`` a change."""
    plural = f"{name}s"
    a = article(name)
    base = f"/api/v1/{plural}"
    one = f"{base}/{{key}}"
    title = name.capitalize()

    async def list_objects(call: Call) -> Page[ObjectT]:
        return await call.service.list_objects(
            call.key, kind, call.project, cursor=call.text("cursor"), limit=call.integer("limit")
        )

    async def create_object(call: Call) -> ObjectT:
        return await call.service.create_object(call.key, kind, call.project, call.body)

    async def get_object(call: Call) -> ObjectT:
        return await call.service.get_object(call.key, kind, call.project, call.path["key"])

    async def update_object(call: Call) -> ObjectT:
        return await call.service.update_object(
            call.key,
            kind,
            call.project,
            call.path["key"],
            call.body,
            expected_revision=call.expected_revision,
        )

    async def delete_object(call: Call) -> None:
        await call.service.delete_object(
            call.key, kind, call.project, call.path["key"], expected_revision=call.expected_revision
        )

    return (
        Route(
            method="GET",
            path=base,
            endpoint=list_objects,
            operation_id=f"list{title}s",
            summary=f"List {plural}",
            description=f"{description} Ordered by key.",
            tag=plural,
            query=(PROJECT, CURSOR, LIMIT),
            response=Page[kind],  # type: ignore[valid-type]
        ),
        Route(
            method="POST",
            path=base,
            endpoint=create_object,
            operation_id=f"create{title}",
            summary=f"Create {a} {name}",
            tag=plural,
            query=(PROJECT,),
            body=JsonBody(spec, example=example),
            status=201,
            response=kind,
        ),
        Route(
            method="GET",
            path=one,
            endpoint=get_object,
            operation_id=f"get{title}",
            summary=f"Get {a} {name}",
            tag=plural,
            query=(PROJECT,),
            response=kind,
        ),
        Route(
            method="PATCH",
            path=one,
            endpoint=update_object,
            operation_id=f"update{title}",
            summary=f"Change {a} {name}",
            description="The body's top-level fields replace the current ones (a JSON merge "
            "patch); the key cannot change. Send `If-Match: <revision>` to refuse the change "
            "if someone else changed the object first.",
            tag=plural,
            query=(PROJECT,),
            body=PatchBody(spec, example=patch_example),
            if_match=True,
            response=kind,
        ),
        Route(
            method="DELETE",
            path=one,
            endpoint=delete_object,
            operation_id=f"delete{title}",
            summary=f"Delete {a} {name}",
            description="Refused (409 `in_use`) while another object refers to it."
            + (" Only a DRAFT experiment may be deleted." if kind is Experiment else ""),
            tag=plural,
            query=(PROJECT,),
            body=NO_BODY,
            if_match=True,
            status=204,
        ),
    )


ROUTES = (
    *object_routes(
        Flag,
        FlagSpec,
        name="flag",
        description="Flags: typed values with a kill switch, prerequisites and ordered rules.",
        example={
            "key": "checkout-color",
            "type": "string",
            "default_value": "blue",
            "rules": [
                {"type": "force", "condition": {"staff": True}, "value": "red"},
                {"type": "experiment", "experiment": "checkout-button"},
            ],
        },
        patch_example={"enabled": True, "description": "Colour of the checkout button"},
    ),
    *object_routes(
        Experiment,
        ExperimentSpec,
        name="experiment",
        description="Experiments: variants, traffic, targeting and metrics, with a lifecycle.",
        example={
            "key": "checkout-button",
            "variants": [
                {"key": "control", "value": "blue"},
                {"key": "green", "value": "green"},
            ],
            "coverage": 0.5,
            "condition": {"country": {"$in": ["DE", "FR"]}},
            "layer": {"layer": "checkout", "start": 0, "end": 0.5},
            "primary_metrics": ["purchase"],
        },
        patch_example={"coverage": 0.8},
    ),
    *object_routes(
        Layer,
        LayerSpec,
        name="layer",
        description="Layers: namespaces in which experiments are mutually exclusive.",
        example={"key": "checkout", "name": "Checkout surface"},
        patch_example={"description": "Everything between the cart and the receipt"},
    ),
    *object_routes(
        Metric,
        MetricSpec,
        name="metric",
        description="Metrics: what experiments measure.",
        example={"key": "purchase", "kind": "proportion", "attribution_window_hours": 72},
        patch_example={"name": "Purchased within 3 days"},
    ),
    *object_routes(
        Segment,
        SegmentSpec,
        name="segment",
        description="Segments: named audiences (a list of attribute values, or a condition) "
        "that conditions use through `$inGroup`, `$notInGroup` and `$savedGroup`; "
        "GrowthBook's saved groups. A change reaches every rule using the segment.",
        example={"key": "beta-testers", "attribute": "id", "values": ["user-1", "user-2"]},
        patch_example={"values": ["user-1", "user-2", "user-3"]},
    ),
)
