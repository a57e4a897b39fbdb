"""The rules of the house that keep the core portable (DESIGN.md, "Layout"):
``assay.engine`` imports no adapter or plugin; ``engine/_core`` imports no I/O library;
only ``adapters/postgres`` touches asyncpg and trio-asyncio."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "assay"
IO_LIBRARIES = {"trio", "trio_asyncio", "asyncpg", "quart", "quart_trio", "hypercorn", "httpx"}


def imported_modules(path: Path, root: Path) -> Iterator[tuple[int, str]]:
    """Absolute names of every module a file imports, relative imports resolved."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def offending(folder: Path, forbidden: set[str], root: Path = SRC.parent) -> list[str]:
    found = []
    for path in sorted(folder.rglob("*.py")):
        for lineno, module in imported_modules(path, root):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(root / 'assay')}:{lineno}: {module}")
    return found


def test_engine_imports_no_adapter_or_plugin() -> None:
    assert offending(SRC / "engine", {"assay.adapters", "assay.plugins", "assay._bootstrap"}) == []


def test_core_imports_no_io_library() -> None:
    assert offending(SRC / "engine" / "_core", IO_LIBRARIES) == []


def test_core_imports_nothing_from_the_engine_outside_its_pure_modules() -> None:
    allowed = {"assay.engine._core", "assay.engine._model", "assay.engine._errors"}
    bad = [
        line
        for line in offending(SRC / "engine" / "_core", {"assay"})
        if not any(line.split(": ", 1)[1].startswith(a) for a in allowed)
    ]
    assert bad == []


@pytest.mark.parametrize("library", ["asyncpg", "trio_asyncio"])
def test_only_the_postgres_adapter_touches(library: str) -> None:
    postgres = SRC / "adapters" / "postgres"
    users = [
        line
        for line in offending(SRC, {library})
        if not line.startswith(str(postgres.relative_to(SRC)))
    ]
    assert users == []


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """Guards the guard: forbidden imports, absolute and relative, must be reported."""
    core = tmp_path / "assay" / "engine" / "_core"
    core.mkdir(parents=True)
    (core / "_probe.py").write_text("import trio.lowlevel\nfrom ...adapters import cli\n")
    engine = tmp_path / "assay" / "engine"
    assert offending(core, IO_LIBRARIES, tmp_path) == ["engine/_core/_probe.py:1: trio.lowlevel"]
    assert offending(engine, {"assay.adapters"}, tmp_path) == [
        "engine/_core/_probe.py:2: assay.adapters",
        "engine/_core/_probe.py:2: assay.adapters.cli",
    ]
