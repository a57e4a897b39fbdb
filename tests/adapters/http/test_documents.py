"""The OpenAPI document and the docs page describe exactly the routes the app serves."""

from __future__ import annotations

import re
from html import escape
from typing import Any

from assay.adapters.http import ROUTES, build_openapi, create_app

HTTP_METHODS = {"get", "post", "patch", "delete", "put", "head", "options", "trace"}


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


async def test_the_document_is_openapi_3_1(anonymous) -> None:
    answer = await anonymous.get("/api/v1/openapi.json")
    assert answer.status == 200
    document = answer.body
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] == "assay"
    assert document["info"]["version"]
    assert document["components"]["securitySchemes"]["bearerKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearerKey"]["description"],
    }
    assert document["security"] == [{"bearerKey": []}]
    operation_ids = [
        op["operationId"] for item in document["paths"].values() for op in item.values()
    ]
    assert len(operation_ids) == len(set(operation_ids))


async def test_every_ref_resolves(anonymous) -> None:
    document = (await anonymous.get("/api/v1/openapi.json")).body
    refs = _refs(document)
    assert len(refs) > 50
    for ref in refs:
        assert isinstance(_resolve(document, ref), dict), ref


async def test_every_registered_route_is_documented(engine) -> None:
    app = create_app(engine)
    document = build_openapi(ROUTES)
    served = {
        (method.lower(), re.sub(r"<([a-z_]+)>", r"{\1}", rule.rule))
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
        # The console is HTML for people (docs/console.md), not part of the API.
        and rule.rule != "/"
        and not rule.rule.startswith("/console/")
    }
    documented = {
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    assert served == documented
    assert len(served) == len(ROUTES)


def test_every_operation_describes_its_parameters_body_and_errors() -> None:
    document = build_openapi(ROUTES)
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for route in ROUTES:
        op = document["paths"][route.path][route.method.lower()]
        names = {p["name"] for p in op.get("parameters", [])}
        assert set(route.path_params) <= names, route.path
        assert {q.name for q in route.query} <= names, route.path
        assert ("requestBody" in op) == (route.body is not None), route.path
        assert str(route.status) in op["responses"], route.path
        errors = {s: r for s, r in op["responses"].items() if int(s) >= 400}
        assert "500" in errors, route.path
        for response in errors.values():
            assert response["content"]["application/json"]["schema"] == error_ref
        if route.public:
            assert op["security"] == []
        else:
            assert "security" not in op  # the document-wide bearer requirement applies
            assert {"401", "404"} <= set(errors), route.path
        if route.method != "GET":
            assert {"400", "413", "422"} <= set(errors), route.path


def test_request_and_response_schemas_come_from_the_msgspec_types() -> None:
    document = build_openapi(ROUTES)
    schemas = document["components"]["schemas"]
    create_flag = document["paths"]["/api/v1/flags"]["post"]
    body = create_flag["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/FlagSpec"}
    assert schemas["FlagSpec"]["additionalProperties"] is False
    assert schemas["FlagSpec"]["required"] == ["key"]
    patch = document["paths"]["/api/v1/flags/{key}"]["patch"]
    patch_schema = patch["requestBody"]["content"]["application/json"]["schema"]
    assert patch_schema == {"$ref": "#/components/schemas/FlagSpecPatch"}
    assert "required" not in schemas["FlagSpecPatch"]
    assert set(schemas["FlagSpecPatch"]["properties"]) == set(schemas["FlagSpec"]["properties"])
    created_key = schemas["CreatedApiKey"]["properties"]
    assert "secret" in created_key
    assert all("secret_hash" not in s.get("properties", {}) for s in schemas.values())


async def test_the_docs_page_lists_every_route_without_external_assets(anonymous) -> None:
    answer = await anonymous.get("/docs")
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/html")
    page = answer.body
    assert page.startswith("<!DOCTYPE html>")
    for route in ROUTES:
        anchor = f'<span class="method {escape(route.method)}">{escape(route.method)}</span>'
        assert (
            f'{anchor}<a href="#op-{route.operation_id}"><code>{escape(route.path)}</code>' in page
        )
        assert escape(route.summary) in page
    for schema in ("FlagSpec", "ExperimentSpec", "ErrorResponse", "CreatedApiKey"):
        assert f'id="schema-{schema}"' in page
    # Nothing is fetched from elsewhere: this machine may have no internet.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "<script" not in page
