"""Property-based fuzzing of the whole API with schemathesis, from the served OpenAPI
document: every operation, a bounded number of generated requests each, against a real
``assay serve`` process on loopback. Zero server errors, zero answers that contradict the
document (status, content type, body schema, headers), zero requests without an answer."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from assay.adapters.http._app import build_documents

if TYPE_CHECKING:
    from collections.abc import Iterator

    from assay.adapters.embedded import EmbeddedPostgres

EXAMPLES = 6
"""Generated requests per operation: enough to reach every branch of the parsers, few
enough for CI (about 40 operations)."""
ANSWER_SECONDS = 10.0
"""A request with no answer by then is a hang: a failure."""

schema = schemathesis.openapi.from_dict(msgspec.json.decode(build_documents().openapi_json))

_SERVING = re.compile(r"serving on (http://127\.0\.0\.1:\d+)")
_SECRET = re.compile(r"^\s+(assay_\S+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def server(embedded_pg: EmbeddedPostgres, pg_template: str) -> Iterator[tuple[str, str]]:
    """``assay serve`` on a fresh database: its URL and an ADMIN key of project ``fuzz``
    (which holds a flag, a metric and a running experiment, for the generated requests
    to find)."""
    database = f"fuzz_{uuid.uuid4().hex[:12]}"
    embedded_pg.create_database(database, template=pg_template)
    command = [
        sys.executable, "-c", "from assay.adapters.cli import main; raise SystemExit(main())",
        "serve", "--database-url", embedded_pg.dsn_for(database), "--port", "0",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    seen = ""
    deadline = time.monotonic() + 60
    # The first admin key is printed last, after the "serving on" line.
    while time.monotonic() < deadline and not (_SERVING.search(seen) and _SECRET.search(seen)):
        seen += process.stdout.readline()
    found = _SERVING.search(seen)
    try:
        assert found is not None, seen
        base_url = found.group(1)
        bootstrap = _SECRET.search(seen)
        assert bootstrap is not None, seen
        yield base_url, _project_key(base_url, bootstrap.group(1))
    finally:
        process.stdout.close()
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        embedded_pg.drop_database(database)


def _project_key(base_url: str, admin: str) -> str:
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {admin}"}) as c:
        assert c.post("/api/v1/projects", json={"key": "fuzz"}).status_code == 201
        key = c.post("/api/v1/keys", json={"role": "ADMIN", "project": "fuzz"}).json()
        assert c.post("/api/v1/flags?project=fuzz", json={"key": "f"}).status_code == 201
        assert c.post("/api/v1/metrics?project=fuzz", json={"key": "m"}).status_code == 201
        experiment = {"key": "e", "variants": [{"key": "a", "value": 1}, {"key": "b", "value": 2}]}
        assert c.post("/api/v1/experiments?project=fuzz", json=experiment).status_code == 201
        assert c.post("/api/v1/experiments/e/start?project=fuzz").status_code == 200
    secret: str = key["secret"]
    return secret


@pytest.fixture
def fuzz_target(server: tuple[str, str]) -> tuple[str, str]:
    return server


CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
    checks.negative_data_rejection,
]


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_keeps_its_document(case: Any, fuzz_target: tuple[str, str]) -> None:
    base_url, secret = fuzz_target
    case.call_and_validate(
        base_url=base_url,
        headers={"Authorization": f"Bearer {secret}"},
        checks=CHECKS,
        timeout=ANSWER_SECONDS,
    )
