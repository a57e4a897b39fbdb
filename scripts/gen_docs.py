"""Rewrite the generated parts of docs/ from the code, or check they are current.

- docs/api.md: the error-code table and the event rejection codes, between
  ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->`` markers, from
  ``assay.engine.ERROR_CODES`` and ``assay.engine.REJECTION_CODES``.

Run from the repository root after changing a registry:

    .venv/bin/python scripts/gen_docs.py          # rewrite
    .venv/bin/python scripts/gen_docs.py --check  # exit 1 if anything is stale (tests run this)
"""

from __future__ import annotations

import re
import sys
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


# file -> section name -> what goes between its markers
GENERATED: dict[str, dict[str, Callable[[], str]]] = {
    "docs/api.md": {"error-codes": error_table, "rejection-codes": rejection_table},
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
