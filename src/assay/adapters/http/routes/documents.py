"""The API's own description: the OpenAPI document and a docs page rendered from it."""

from __future__ import annotations

from assay.adapters.http._routing import HTML, Call, Route


async def openapi_document(call: Call) -> bytes:
    return call.documents.openapi_json


async def docs_page(call: Call) -> str:
    return call.documents.docs_html


ROUTES = (
    Route(
        method="GET",
        path="/api/v1/openapi.json",
        endpoint=openapi_document,
        operation_id="openapi",
        summary="This API's OpenAPI 3.1 document",
        tag="documentation",
        public=True,
        response=None,
    ),
    Route(
        method="GET",
        path="/docs",
        endpoint=docs_page,
        operation_id="docs",
        summary="This API's documentation, as a web page",
        tag="documentation",
        public=True,
        media_type=HTML,
    ),
)
