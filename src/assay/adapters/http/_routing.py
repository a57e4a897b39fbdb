"""The route table's vocabulary: what one HTTP route is, and what its endpoint receives.

Every route the app serves is one ``Route`` value. The app registers its handlers from the
table and the OpenAPI document is generated from the same table, so the two cannot drift.
Endpoints are plain async functions of a ``Call``: authentication, query parsing, the
``If-Match`` header and the body are already handled when they run.
"""
# No ``from __future__ import annotations``: the dataclasses' annotations are real types.

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from assay.adapters.http._schemas import EmptyRequest
from assay.engine import ApiKey, ConfigService, Engine
from assay.engine._pagination import DEFAULT_LIMIT, MAX_LIMIT

HttpMethod = Literal["GET", "POST", "PATCH", "DELETE"]
JSON = "application/json"
HTML = "text/html; charset=utf-8"

_PATH_PARAM = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True, kw_only=True)
class QueryParam:
    """A query-string parameter. Values arrive as text; ``integer`` ones are converted."""

    name: str
    description: str
    integer: bool = False
    choices: tuple[str, ...] = ()
    """When given, the only accepted values."""
    schema_extra: Mapping[str, Any] = field(default_factory=dict)
    """Extra JSON Schema keywords for the document (e.g. a range the service enforces)."""


@dataclass(frozen=True)
class JsonBody:
    """The request body is JSON decoded as ``type`` (a msgspec type); when not
    ``required`` an empty body is accepted and the endpoint sees None. ``example`` is the
    document's request example: a test sends every one to the server, which must accept
    it."""

    type: Any
    required: bool = True
    example: Any = None


@dataclass(frozen=True)
class PatchBody:
    """The request body is a JSON object of ``spec`` fields that replace the current ones."""

    spec: type[msgspec.Struct]
    example: Mapping[str, Any] | None = None


NO_BODY = JsonBody(EmptyRequest, required=False, example={})
"""Operations that take no parameters: no body, or an empty JSON object."""


@dataclass(frozen=True)
class Documents:
    """The API's own description, rendered once per app."""

    openapi_json: bytes
    docs_html: str


@dataclass(frozen=True, kw_only=True)
class Call:
    """One request, as an endpoint sees it."""

    engine: Engine
    principal: ApiKey | None
    path: Mapping[str, str]
    query: Mapping[str, str | int]
    body: Any
    expected_revision: int | None
    documents: Documents

    @property
    def service(self) -> ConfigService:
        return self.engine.service

    @property
    def key(self) -> ApiKey:
        """The authenticated caller; only public routes run without one."""
        if self.principal is None:
            raise RuntimeError("endpoint of a public route asked for the caller's key")
        return self.principal

    @property
    def project(self) -> str | None:
        return self.text("project")

    def text(self, name: str) -> str | None:
        value = self.query.get(name)
        return value if isinstance(value, str) else None

    def integer(self, name: str) -> int | None:
        value = self.query.get(name)
        return value if isinstance(value, int) else None


Endpoint = Callable[["Call"], Awaitable[Any]]


@dataclass(frozen=True, kw_only=True)
class Route:
    """One operation: method and path, the endpoint serving it, and what the document
    says about it."""

    method: HttpMethod
    path: str
    """OpenAPI-style template, e.g. ``/api/v1/flags/{key}``."""
    endpoint: Endpoint
    operation_id: str
    summary: str
    tag: str
    description: str = ""
    public: bool = False
    """Served without an API key."""
    raw: bool = False
    """Answered by its own dispatch (headers in, headers out; GrowthBook's SDK protocol,
    ``adapters.growthbook.routes``), not through ``endpoint`` and a ``Call``: the entry
    documents it."""
    query: tuple[QueryParam, ...] = ()
    body: JsonBody | PatchBody | None = None
    if_match: bool = False
    """Honours ``If-Match: <revision>`` (optimistic concurrency)."""
    status: int = 200
    response: Any = None
    """The msgspec type of the success body; None when ``status`` is 204."""
    media_type: str = JSON
    extra_errors: tuple[int, ...] = ()

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(_PATH_PARAM.findall(self.path))

    @property
    def rule(self) -> str:
        """The path in Quart's (werkzeug's) rule syntax."""
        return _PATH_PARAM.sub(r"<\1>", self.path)

    @property
    def error_statuses(self) -> tuple[int, ...]:
        """Every error status this route can answer, for the document."""
        # 503: the store may be away, or an actor's inbox full, for any route.
        statuses = {500, 503, *self.extra_errors}
        if not self.public:
            # 503: the database may be unavailable to any route that checks a key.
            statuses |= {401, 404, 422, 503}
        if self.method != "GET":
            statuses |= {400, 403, 409, 413, 422}
        if self.body is not None:
            statuses |= {415}
        return tuple(sorted(statuses))


def article(noun: str) -> str:
    """``a`` or ``an`` before ``noun``, for generated summaries ("Create an experiment")."""
    return "an" if noun[:1].lower() in "aeio" else "a"


# Query parameters shared by many routes.

PROJECT = QueryParam(
    name="project",
    description="Project key. Defaults to the API key's own project; required for a key "
    "not scoped to a project.",
)
CURSOR = QueryParam(
    name="cursor", description="`next_cursor` of the previous page; omit for the first page."
)

LIMIT = QueryParam(
    name="limit",
    description=f"Items per page (default {DEFAULT_LIMIT}).",
    integer=True,
    schema_extra={"minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
)
