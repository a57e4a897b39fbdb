"""Every Python example in README.md and docs/ runs as written, and imports only public
names (no module or name starting with ``_``), so the docs stay true to the public API.

Each example runs in a fresh namespace, in a temporary folder holding the page's first
TOML block as ``assay.toml`` (what a page's "load your file" example reads)."""

from __future__ import annotations

import ast
import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```(?P<lang>\w*)\n(?P<code>.*?)^```", re.S | re.M)


def _blocks(page: Path, lang: str) -> list[str]:
    return [m["code"] for m in _BLOCK.finditer(page.read_text()) if m["lang"] == lang]


EXAMPLES = [
    pytest.param(page, i, code, id=f"{page.relative_to(ROOT)}#{i}")
    for page in PAGES
    for i, code in enumerate(_blocks(page, "python"))
]


def test_there_are_examples_to_run() -> None:
    pages = {page.name for page, *_ in (p.values for p in EXAMPLES)}
    assert {"README.md", "definitions.md", "embedding.md", "plugins.md"} <= pages


@pytest.mark.parametrize(("page", "index", "code"), EXAMPLES)
def test_the_example_imports_only_public_names(page: Path, index: int, code: str) -> None:
    private = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules, names = [node.module], [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            modules, names = [a.name for a in node.names], []
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            private.append(node.attr)
            continue
        else:
            continue
        for module in modules:
            if module.split(".")[0] == "assay" and any(
                p.startswith("_") for p in module.split(".")
            ):
                private.append(module)
        private += [n for n in names if n.startswith("_") and n != "__version__"]
    assert not private, f"{page.name} example {index} uses private names: {private}"


@pytest.mark.parametrize(("page", "index", "code"), EXAMPLES)
def test_the_example_runs(
    page: Path, index: int, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Synchronous test: examples call trio.run themselves, as a reader's script would.
    toml = _blocks(page, "toml")
    if toml:
        (tmp_path / "assay.toml").write_text(toml[0])
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"{page.name}#{index}", "exec"), {"__name__": "__main__"})


def test_plugins_md_is_generated_from_the_hookspecs() -> None:
    """docs/plugins.md holds every hook, with its docstring word for word (rendered), and
    `scripts/gen_docs.py --check` finds nothing stale."""
    import inspect
    import subprocess
    import sys

    from assay.engine import hookspecs

    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    text = (ROOT / "docs" / "plugins.md").read_text()
    hooks = [n for n in dir(hookspecs) if n.startswith("assay_")]
    assert len(hooks) >= 4
    for name in hooks:
        assert f"### `{name}() -> " in text, name
        first_line = (inspect.getdoc(getattr(hookspecs, name)) or "").splitlines()[0]
        assert first_line.replace("``", "`") in text, name


def test_each_plugins_md_example_is_a_working_plugin() -> None:
    """Beyond running: each hook example in docs/plugins.md, registered as a plugin, answers
    its hook with what the engine collects (an operator that compiles and matches, a metric
    kind, an action, a channel that validates)."""
    import types

    from assay.engine._core import ConditionCompiler
    from assay.engine._guardrails import collect_actions, collect_channels
    from assay.engine._metric_kinds import collect_metric_kinds
    from assay.engine._plugins import build_plugin_manager, collect_operators

    page = ROOT / "docs" / "plugins.md"
    namespace: dict[str, object] = {}
    for code in _blocks(page, "python"):
        block: dict[str, object] = {"__name__": "plugins_md"}
        exec(compile(code, page.name, "exec"), block)
        namespace.update({k: v for k, v in block.items() if k.startswith("assay_")})
    plugin = types.SimpleNamespace(**namespace)
    pm = build_plugin_manager([plugin], load_entry_points=False)

    compiler = ConditionCompiler(collect_operators(pm), strict=True)
    matches = compiler.compile({"email": {"$domain": ["example.com"]}})
    assert matches({"email": "ana@Example.com"})
    assert not matches({"email": "ana@example.org"})
    assert "per_converter_mean" in collect_metric_kinds(pm)
    assert "pause-on-harm" in collect_actions(pm)
    channel = collect_channels(pm)["jsonl"]
    channel.validate({"type": "jsonl", "path": "/tmp/x.jsonl"})
    with pytest.raises(ValueError, match="path"):
        channel.validate({"type": "jsonl"})
