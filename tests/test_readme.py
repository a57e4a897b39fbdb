"""The README runs as written (so it stays true): the embedding example, and the tour's
shell commands against a live ``assay serve``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def tour_script() -> str:
    """The tour's shell commands, exactly as README.md shows them."""
    text = README.read_text()
    tour = text[
        text.index("## A short tour") : text.index("\n## ", text.index("## A short tour") + 1)
    ]
    return "\n".join(re.findall(r"```sh\n(.*?)```", tour, re.S))


def test_the_tour_runs_against_a_live_server(
    data_dir: Path, serve_process: Callable[..., Any], tmp_path: Path
) -> None:
    server = serve_process(data_dir)
    script = tour_script()
    # The two things a reader fills in: the key the server printed, and where it listens.
    assert "export KEY=assay_...    # the key printed above" in script
    assert "http://127.0.0.1:8000/api/v1" in script
    script = script.replace("export KEY=assay_...", f"export KEY={server.admin_secret}")
    script = script.replace("http://127.0.0.1:8000", server.url)
    # The tour's `.venv/bin/assay` is this interpreter's assay; curl fails on any HTTP error
    # (and prints the answer), and the first failing command stops the tour.
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    assay = tmp_path / ".venv" / "bin" / "assay"
    assay.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m assay.adapters.cli "$@"\n')
    assay.chmod(0o755)
    prelude = 'set -euo pipefail\ncurl() { command curl --fail-with-body "$@"; }\n'
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSAY_")}
    result = subprocess.run(
        ["bash", "-c", prelude + script],
        cwd=tmp_path,
        env={**env, "ASSAY_DATA_DIR": str(data_dir)},  # the CLI reaches the server's database
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    out = result.stdout
    # Every JSON answer ends its line; the tour's steps show what they should.
    answers = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert answers[0]["key"] == "shop"
    decided = next(a for a in answers if "decision_id" in a)
    assert decided["reason"] == "experiment_assigned"
    recorded = [a for a in answers if "recorded" in a]
    assert [(a["recorded"], a["rejected"]) for a in recorded] == [(8, []), (3, [])]
    summary = next(a for a in answers if "metrics" in a and "exposures" in a)
    assert (summary["exposures"], summary["metrics"][0]["conversions"]) == (8, 3)
    report = next(a for a in answers if "srm" in a)
    assert [v["subjects"] for v in report["variants"]] == [4, 4]
    assert "Metric purchase (proportion, primary" in out  # assay report's table
    assert "guardrail:0:purchase" in out  # assay guardrails check
    assert [a["status"] for a in answers if a.get("key") == "checkout-button"][-1] == "COMPLETED"
    audit = answers[-1]["items"]
    assert audit[0]["action"] == "experiment.complete"
