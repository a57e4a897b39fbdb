"""One registry of codes (``assay.engine.ERROR_CODES``, ``REJECTION_CODES``): every code a
client can see is in it, docs/api.md and the OpenAPI document list exactly it, and a code
outside it cannot be raised."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from assay.adapters.http import ROUTES, build_openapi
from assay.adapters.http._errors import ErrorBody, HttpError
from assay.engine import (
    ERROR_CODES,
    REJECTION_CODES,
    ActorCrashed,
    AssayError,
    Conflict,
    EngineOverloaded,
    NotFound,
    PermissionDenied,
    Rejection,
    Unauthenticated,
    ValidationFailed,
)

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "assay"
REGISTRY = SOURCE / "engine" / "_error_codes.py"
CODE_LIKE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")

# Callables whose positional argument at this index is an error code.
_CODE_ARGUMENT = {"HttpError": 1, "_invalid": 1, "error": 0, "ConditionError": 0}


def _codes_in_source() -> dict[str, set[str]]:
    """Every string literal the source uses as a code, with the files using it: ``code=``
    keywords, ``code = ...`` class attributes and assignments (also ``code, x = ...``),
    the code arguments of the helpers above, and the values of ``*CODE*`` tables."""
    found: dict[str, set[str]] = {}

    def add(node: ast.AST | None, path: Path) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.setdefault(node.value, set()).add(str(path.relative_to(ROOT)))

    for path in SOURCE.rglob("*.py"):
        if path == REGISTRY:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                for keyword in node.keywords:
                    if keyword.arg == "code":
                        add(keyword.value, path)
                index = _CODE_ARGUMENT.get(name)
                if index is not None and len(node.args) > index:
                    add(node.args[index], path)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id == "code":
                        add(node.value, path)
                    elif isinstance(target, ast.Name) and "CODE" in target.id:
                        if isinstance(node.value, ast.Dict):
                            for value in node.value.values:
                                add(value, path)
                    elif isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                        for element, value in zip(target.elts, node.value.elts, strict=False):
                            if isinstance(element, ast.Name) and element.id == "code":
                                add(value, path)
    return {code: files for code, files in found.items() if CODE_LIKE.match(code)}


def test_the_source_scan_finds_codes_of_every_kind() -> None:
    """The scan below is only worth what it finds: it sees each way a code is written."""
    found = _codes_in_source()
    for code in (
        "not_found",  # class attribute
        "immutable_field",  # code= keyword
        "malformed_json",  # HttpError argument
        "prerequisite_cycle",  # _invalid argument
        "unknown_operator",  # ConditionError via .error()
        "unsafe_regex",  # code, what = ...
        "route_not_found",  # a *CODE* table
        "invalid_timestamp",  # a Rejection's code=
    ):
        assert code in found, code


def test_every_code_in_the_source_is_registered() -> None:
    unregistered = {
        code: sorted(files)
        for code, files in _codes_in_source().items()
        if code not in ERROR_CODES and code not in REJECTION_CODES
    }
    assert not unregistered, (
        "codes used in the source but not registered; add one line each to ERROR_CODES "
        "(or REJECTION_CODES) in src/assay/engine/_error_codes.py, then run "
        f"`.venv/bin/python scripts/gen_docs.py`: {unregistered}"
    )


def test_every_registered_code_is_used_somewhere() -> None:
    """No documented code that nothing can raise: each appears quoted in the source."""
    text = "\n".join(p.read_text() for p in SOURCE.rglob("*.py") if p != REGISTRY)
    unused = [c for c in [*ERROR_CODES, *REJECTION_CODES] if f'"{c}"' not in text]
    assert not unused, f"registered but never used (remove their lines): {unused}"


def test_error_and_rejection_codes_do_not_overlap() -> None:
    assert not set(ERROR_CODES) & set(REJECTION_CODES)


@pytest.mark.parametrize(
    "cls", [NotFound, Conflict, ValidationFailed, PermissionDenied, Unauthenticated]
)
def test_an_error_refuses_an_unregistered_code_saying_what_to_do(cls: type[AssayError]) -> None:
    with pytest.raises(ValueError, match="not in the registry") as info:
        cls("boom", code="made_up_code")
    message = str(info.value)
    assert "ERROR_CODES in src/assay/engine/_error_codes.py" in message
    assert '"made_up_code": ErrorCode(' in message
    assert "scripts/gen_docs.py" in message


def test_an_error_refuses_a_code_registered_with_another_status() -> None:
    with pytest.raises(ValueError, match="registered with status 409 but raised as 422"):
        ValidationFailed("boom", code="already_exists")


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        (NotFound, 404),
        (Conflict, 409),
        (ValidationFailed, 422),
        (PermissionDenied, 403),
        (Unauthenticated, 401),
        (EngineOverloaded, 503),
        (ActorCrashed, 503),
    ],
)
def test_each_error_class_default_code_is_registered_with_its_status(
    cls: type[AssayError], status: int
) -> None:
    error = cls("x")
    assert ERROR_CODES[error.code].status == status == error.status


def test_the_http_layer_refuses_unregistered_codes_too() -> None:
    with pytest.raises(ValueError, match="not in the registry"):
        HttpError(422, "made_up_code", "x")
    with pytest.raises(ValueError, match="registered with status 400"):
        HttpError(422, "malformed_json", "x")
    with pytest.raises(ValueError, match="not in the registry"):
        ErrorBody(code="made_up_code", message="x")
    assert ErrorBody(code="not_found", message="x").code == "not_found"


def test_a_rejection_refuses_an_unregistered_code() -> None:
    with pytest.raises(ValueError, match=r"REJECTION_CODES in src/assay/engine/_error_codes\.py"):
        Rejection(index=0, code="made_up_code", message="x")


def test_docs_api_md_tables_are_generated_from_the_registry() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    text = (ROOT / "docs" / "api.md").read_text()
    for code, entry in ERROR_CODES.items():
        assert f"| `{code}` | {entry.status} | {entry.meaning} |" in text
    for code in REJECTION_CODES:
        assert f"| `{code}` |" in text


def test_the_openapi_document_lists_every_code_under_its_status() -> None:
    document = build_openapi(ROUTES)
    schema = document["components"]["schemas"]["ErrorBody"]["properties"]["code"]
    assert schema["enum"] == list(ERROR_CODES)
    described: dict[str, set[str]] = {}
    for item in document["paths"].values():
        for operation in item.values():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    codes = re.findall(r"`([a-z_]+)`", response["description"])
                    described.setdefault(status, set()).update(codes)
    for code, entry in ERROR_CODES.items():
        if str(entry.status) in described:
            assert code in described[str(entry.status)], (code, entry.status)
        else:
            # Only the HTTP layer's own route-independent statuses go undescribed per
            # operation; they are still in the enum above.
            assert entry.status in {405, 408}, (code, entry.status)
    for status, codes in described.items():
        assert {ERROR_CODES[c].status for c in codes} == {int(status)}, status


def test_every_error_the_http_layer_describes_carries_a_registered_code_and_status() -> None:
    from werkzeug.exceptions import (
        BadRequest,
        MethodNotAllowed,
        RequestEntityTooLarge,
        RequestTimeout,
        UnsupportedMediaType,
    )
    from werkzeug.exceptions import (
        NotFound as RouteNotFound,
    )

    from assay.adapters.http._errors import describe

    cases = [
        BadRequest(),
        RouteNotFound(),
        MethodNotAllowed(["GET"]),
        RequestTimeout(),
        RequestEntityTooLarge(),
        UnsupportedMediaType(),
        RuntimeError("a bug"),
        ActorCrashed("x"),
        ValidationFailed("x", code="invalid_period"),
    ]
    for error in cases:
        status, body, _ = describe(error)
        assert ERROR_CODES[body.code].status == status, (error, body.code, status)
    status, body, _ = describe(UnsupportedMediaType())
    assert (status, body.code) == (400, "bad_request")


def test_a_plugin_operators_own_code_reaches_clients_under_a_registered_one() -> None:
    """A third-party operator may raise ``context.error`` with a code of its own; clients
    get the registered ``invalid_operator_argument`` with the plugin's code in details."""
    from typing import Any

    from assay.engine._core import ConditionCompiler
    from assay.engine._plugins import condition_validator

    def picky(argument: Any, context: Any) -> Any:
        raise context.error("picky_says_no", "never")

    validate = condition_validator(ConditionCompiler({"$picky": picky}, strict=True))
    with pytest.raises(ValidationFailed) as info:
        validate({"x": {"$picky": 1}})
    assert info.value.code == "invalid_operator_argument"
    assert info.value.details["operator_code"] == "picky_says_no"
    assert info.value.details["location"] == ["x", "$picky"]
