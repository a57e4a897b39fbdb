"""The OpenAPI 3.1 document, generated from the route table and the msgspec types.

Schemas come from ``msgspec.json.schema_components`` for every request and response type,
so the document describes exactly what the server decodes and encodes.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import msgspec

from assay._version import __version__
from assay.adapters.http._errors import ErrorResponse
from assay.adapters.http._routing import HTML, JSON, JsonBody, PatchBody, QueryParam, Route
from assay.engine import ERROR_CODES

if TYPE_CHECKING:
    from collections.abc import Sequence

REF = "#/components/schemas/{name}"
_PATH_SCHEMA = {"type": "string", "minLength": 1, "pattern": "^[^\\u0000]*$"}
"""A path parameter: any text but the NUL character (422 ``invalid_text``)."""
SECURITY_SCHEME = "bearerKey"

# What each error status means; the codes under each come from the registry.
STATUS_SUMMARIES = {
    400: "The request could not be read.",
    401: "No valid API key.",
    403: "The key may read this resource but not change it.",
    404: "No such resource, or the key may not read it.",
    405: "The route does not take this method.",
    408: "The request did not arrive in time.",
    409: "Conflicts with the current state.",
    413: "The body is larger than the server accepts.",
    415: "The body is sent as something other than JSON.",
    422: "Invalid input.",
    500: "A bug: the server failed unexpectedly.",
    503: "Not ready, overloaded, or the store is away; retry later.",
}


def error_description(status: int) -> str:
    """A response's description: what the status means and every code it may carry."""
    codes = [code for code, entry in ERROR_CODES.items() if entry.status == status]
    listed = ", ".join(f"`{code}`" for code in codes)
    return f"{STATUS_SUMMARIES[status]} Codes: {listed}."


TAG_DESCRIPTIONS = {
    "projects": "Projects own everything else; an archived project rejects writes.",
    "flags": "Feature flags with a kill switch, prerequisites and ordered rules.",
    "experiments": "A/B experiments and their lifecycle: DRAFT -> RUNNING <-> PAUSED -> "
    "COMPLETED -> ARCHIVED, and ROLLED_BACK from RUNNING or PAUSED.",
    "layers": "Namespaces in which experiments are mutually exclusive.",
    "metrics": "What experiments measure.",
    "segments": "Named audiences (GrowthBook's saved groups): a list of attribute values or "
    "a condition, used by conditions through `$inGroup`, `$notInGroup` and `$savedGroup`.",
    "keys": "Bearer API keys with a role and an optional project scope.",
    "audit": "Every change: who, when, what, before and after.",
    "guardrails": "Breaches judged with the sequential test, health checks, the actions "
    "taken and the notifications sent.",
    "decide": "Deciding flags for subjects, and looking recorded decisions up.",
    "events": "Exposures and conversions: de-duplicated, first exposure wins, crossovers "
    "counted, conversions pending until their subject's exposure.",
    "reports": "Per-variant results with frequentist, Bayesian and sequential statistics.",
    "operations": "Probes for load balancers and orchestrators, and Prometheus metrics.",
    "documentation": "This description of the API.",
}


def build_openapi(routes: Sequence[Route]) -> dict[str, Any]:
    schema_of, components = _schemas(routes)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schema_of)
    tags = list(dict.fromkeys(route.tag for route in routes))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "assay",
            "version": __version__,
            "description": "Feature flags, A/B experiments, events, statistics and "
            'guardrails. Every error is `{"error": {"code", "message", "details"}}`; '
            "`code` is stable and machine-readable.",
        },
        "tags": [{"name": t, "description": TAG_DESCRIPTIONS.get(t, "")} for t in tags],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key: `Authorization: Bearer assay_...`.",
                }
            },
        },
        "security": [{SECURITY_SCHEME: []}],
    }


def _schemas(routes: Sequence[Route]) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
    """Component schemas for every type the routes use; the first result maps ``id`` of a
    type to its (reference) schema."""
    types: list[Any] = [ErrorResponse]
    for route in routes:
        match route.body:
            case JsonBody(type=body_type):
                types.append(body_type)
            case PatchBody(spec=spec):
                types.append(spec)
        if route.response is not None:
            types.append(route.response)
    unique = list({id(t): t for t in types}.values())
    refs, components = msgspec.json.schema_components(unique, ref_template=REF)
    # Every code a client can get, from the registry (docs/api.md lists the same).
    components["ErrorBody"]["properties"]["code"]["enum"] = list(ERROR_CODES)
    for route in routes:
        if isinstance(route.body, PatchBody):
            name = _patch_name(route.body)
            components[name] = _patch_schema(components[route.body.spec.__name__], name)
    return {id(t): ref for t, ref in zip(unique, refs, strict=True)}, components


def _patch_name(body: PatchBody) -> str:
    return f"{body.spec.__name__}Patch"


def _patch_schema(spec_schema: dict[str, Any], name: str) -> dict[str, Any]:
    """The spec's schema with nothing required and no defaults: a patch names only the
    fields it replaces."""
    schema = copy.deepcopy(spec_schema)
    schema["title"] = name
    schema["description"] = (
        f"Fields of {spec_schema['title']} to replace; fields left out keep their value."
    )
    schema.pop("required", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("default", None)
    return schema


def _operation(route: Route, schema_of: dict[int, dict[str, Any]]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
    }
    if route.description:
        operation["description"] = route.description
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": _PATH_SCHEMA}
        for name in route.path_params
    ]
    parameters += [_query_parameter(p) for p in route.query]
    if route.if_match:
        parameters.append(
            {
                "name": "If-Match",
                "in": "header",
                "required": False,
                "description": "Apply only if the object's revision is this one (409 "
                "`revision_mismatch` otherwise).",
                "schema": {"type": "string", "pattern": r'^(\*|(W/)?"?[0-9]+"?)$'},
            }
        )
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = _request_body(route.body, schema_of)
    operation["responses"] = {
        str(route.status): _success_response(route, schema_of),
        **{
            str(status): {
                "description": error_description(status),
                "content": {JSON: {"schema": schema_of[id(ErrorResponse)]}},
            }
            for status in route.error_statuses
        },
    }
    if route.public:
        operation["security"] = []
    return operation


def _query_parameter(param: QueryParam) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer" if param.integer else "string"}
    if param.choices:
        schema["enum"] = list(param.choices)
    schema.update(param.schema_extra)
    return {
        "name": param.name,
        "in": "query",
        "required": False,
        "description": param.description,
        "schema": schema,
    }


def _request_body(
    body: JsonBody | PatchBody, schema_of: dict[int, dict[str, Any]]
) -> dict[str, Any]:
    if isinstance(body, PatchBody):
        schema = {"$ref": REF.format(name=_patch_name(body))}
        required = True
    else:
        schema = schema_of[id(body.type)]
        required = body.required
    media: dict[str, Any] = {"schema": schema}
    if body.example is not None:
        media["example"] = body.example
    return {"required": required, "content": {JSON: media}}


def _success_response(route: Route, schema_of: dict[int, dict[str, Any]]) -> dict[str, Any]:
    if route.status == 204:
        return {"description": "Done; no content."}
    if route.media_type == HTML:
        return {"description": "An HTML page.", "content": {HTML: {"schema": {"type": "string"}}}}
    if route.media_type != JSON:
        text = {"schema": {"type": "string"}}
        return {"description": "Success.", "content": {route.media_type: text}}
    schema = schema_of[id(route.response)] if route.response is not None else {"type": "object"}
    response: dict[str, Any] = {"description": "Success.", "content": {JSON: {"schema": schema}}}
    if "revision" in getattr(route.response, "__struct_fields__", ()):
        response["headers"] = {
            "ETag": {
                "description": "The object's revision, for If-Match.",
                "schema": {"type": "string"},
            }
        }
    return response
