"""Rewrite the generated parts of docs/ from the code, or check they are current.

Each generated part sits between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->``:

- docs/api.md: the error-code table and the event rejection codes, from
  ``assay.engine.ERROR_CODES`` and ``assay.engine.REJECTION_CODES``;
- docs/plugins.md: every hook, its signature and its docstring (example included), from
  ``assay.engine.hookspecs``.

Run from the repository root after changing a registry:

    .venv/bin/python scripts/gen_docs.py          # rewrite
    .venv/bin/python scripts/gen_docs.py --check  # exit 1 if anything is stale (tests run this)
"""

from __future__ import annotations

import inspect
import re
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def error_table() -> str:
    from assay.engine import ERROR_CODES

    rows = sorted(ERROR_CODES.items(), key=lambda item: item[1].status)
    lines = ["| code | status | when |", "|---|---|---|"]
    lines += [f"| `{code}` | {entry.status} | {entry.meaning} |" for code, entry in rows]
    return "\n".join(lines)


def rejection_table() -> str:
    from assay.engine._error_codes import REJECTION_CODES

    lines = ["| code | when |", "|---|---|"]
    lines += [f"| `{code}` | {meaning} |" for code, meaning in REJECTION_CODES.items()]
    return "\n".join(lines)


def hooks() -> str:
    from assay.engine import hookspecs

    specs = [
        fn
        for name, fn in vars(hookspecs).items()
        if name.startswith("assay_") and inspect.isfunction(fn)
    ]
    specs.sort(key=lambda fn: fn.__code__.co_firstlineno)
    parts = []
    for fn in specs:
        returns = fn.__annotations__.get("return", "None")
        parts.append(f"### `{fn.__name__}() -> {returns}`\n\n{_markdown(inspect.getdoc(fn) or '')}")
    return "\n\n".join(parts)


def _markdown(doc: str) -> str:
    """A docstring as Markdown: ``literal`` becomes `literal`, and a paragraph ending in
    ``::`` introduces an indented Python block, fenced here."""
    out: list[str] = []
    lines = doc.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.endswith("::"):
            out.append(_inline(line[:-1]))
            i += 1
            block: list[str] = []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                block.append(lines[i])
                i += 1
            out += ["", "```python", textwrap.dedent("\n".join(block)).strip("\n"), "```"]
            if i < len(lines):
                out.append("")
            continue
        out.append(_inline(line))
        i += 1
    return "\n".join(out).strip()


def _inline(text: str) -> str:
    return text.replace("``", "`")


# file -> section name -> what goes between its markers
GENERATED: dict[str, dict[str, Callable[[], str]]] = {
    "docs/api.md": {"error-codes": error_table, "rejection-codes": rejection_table},
    "docs/plugins.md": {"hooks": hooks},
}


def render(path: str, text: str) -> str:
    for name, make in GENERATED[path].items():
        pattern = re.compile(
            rf"(<!-- generated: {name} -->\n)(?:.*?\n)?(<!-- end: {name} -->)", re.S
        )
        if not pattern.search(text):
            raise SystemExit(f"{path}: no <!-- generated: {name} --> ... <!-- end: {name} -->")
        body = make()
        text = pattern.sub(lambda m, body=body: m.group(1) + body + "\n" + m.group(2), text)
    return text


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for path in GENERATED:
        file = ROOT / path
        current = file.read_text()
        wanted = render(path, current)
        if wanted != current:
            stale.append(path)
            if not check:
                file.write_text(wanted)
    if check and stale:
        print(
            f"generated sections of {', '.join(stale)} are stale: "
            "run `.venv/bin/python scripts/gen_docs.py` and commit the result",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
