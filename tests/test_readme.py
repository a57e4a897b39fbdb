"""The README's embedding example runs as written (so the README stays true)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_embedding_example_runs(tmp_path: Path) -> None:
    found = re.search(r"## Embedding\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert found, "README has an Embedding section with a Python example"
    script = tmp_path / "example.py"
    script.write_text(found.group(1))
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    value, variant, reason = result.stdout.split()
    assert reason == "experiment_assigned"
    assert (value, variant) in {("blue", "control"), ("green", "green")}


def test_the_two_commands_are_the_ones_ci_runs() -> None:
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    test_command = (
        "python3 -m venv .venv && .venv/bin/pip install -e '.[dev]' && .venv/bin/python -m pytest"
    )
    assert test_command in text
    assert test_command in ci
    assert "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/assay serve" in text


def test_every_setting_is_in_the_readme_table() -> None:
    from assay import EngineConfig

    text = README.read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| `(ASSAY_\w+)` \|", text, re.M))
    fields = set(EngineConfig.__struct_fields__)
    assert set(rows) == fields, (fields - set(rows), set(rows) - fields)
    assert all(variable == "ASSAY_" + name.upper() for name, variable in rows.items())
