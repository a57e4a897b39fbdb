"""GrowthBook's JavaScript SDK, run with Node, for the tests of this package.

``growthbook_js`` (session) finds ``node`` and the SDK installed from ``tests/js`` (its
``package.json`` and committed ``package-lock.json`` pin ``@growthbook/growthbook``). When
the SDK is not installed yet it runs ``npm ci --prefix tests/js`` itself. In CI (``CI`` set)
a missing Node fails the tests, never skips them; on a person's machine without Node they
are skipped with a message saying how to install it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import pytest

JS = Path(__file__).resolve().parents[2] / "js"
"""tests/js: the SDK's package.json, its lock file and the scripts Node runs."""
SDK = JS / "node_modules" / "@growthbook" / "growthbook" / "package.json"
HOW = (
    "the JavaScript SDK tests need Node.js 18+ and npm (apt-get install -y nodejs npm), "
    "then `npm ci --prefix tests/js`; .ci/run installs both"
)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _unavailable(why: str) -> NoReturn:
    if _in_ci():
        pytest.fail(f"CI must run the JavaScript SDK tests ({why}): {HOW}")
    pytest.skip(f"{why}: {HOW}")


class GrowthBookJs:
    """Runs scripts of tests/js with Node: one process per call, whatever the batch size."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.version: str = json.loads(SDK.read_text())["version"]

    def run(self, script: str, data: Any, *, timeout: float = 300) -> Any:
        """Runs tests/js/``script`` with ``data`` as JSON on stdin; returns its JSON stdout."""
        done = subprocess.run(
            [self.node, str(JS / script)],
            input=json.dumps(data),
            capture_output=True,
            text=True,
            cwd=JS,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, f"node {script} failed:\n{done.stderr}"
        return json.loads(done.stdout)

    def evaluate(
        self, payload: dict[str, Any], flags: list[str], subjects: list[dict[str, Any]]
    ) -> list[list[dict[str, Any]]]:
        """For each subject's attributes and each flag, what the SDK evaluates locally:
        ``value``, ``source``, ``in_experiment``, ``experiment`` and ``variant`` (keys, or
        None outside an experiment)."""
        (job,) = self.evaluate_jobs([Job(payload, flags, subjects)])
        return job["results"]

    def evaluate_jobs(self, jobs: list[Job]) -> list[dict[str, Any]]:
        """Many payloads in one Node process: per job, ``results`` (as ``evaluate``),
        ``attributes`` (each subject's as JavaScript read them: integers past 2**53 and
        -0 change) and ``sticky`` (the sticky documents after the job, when it had any)."""
        batch = {
            "jobs": [
                {
                    "payload": job.payload,
                    "flags": job.flags,
                    "subjects": [{"attributes": a} for a in job.subjects],
                    "sticky": job.sticky,
                }
                for job in jobs
            ]
        }
        out: list[dict[str, Any]] = self.run("evaluate.mjs", batch)["jobs"]
        return out


class Job(NamedTuple):
    """One payload for ``GrowthBookJs.evaluate_jobs``: its flags for each subject, with
    sticky bucketing on the ``sticky`` documents when given (None: no sticky bucketing)."""

    payload: dict[str, Any]
    flags: list[str]
    subjects: list[dict[str, Any]]
    sticky: dict[str, Any] | None = None


@pytest.fixture(scope="session")
def growthbook_js() -> GrowthBookJs:
    node = shutil.which("node")
    if node is None:
        _unavailable("node is not installed")
    if not SDK.exists():
        npm = shutil.which("npm")
        if npm is None:
            _unavailable("the SDK is not installed in tests/js and npm is missing")
        done = subprocess.run(
            [npm, "ci", "--prefix", str(JS), "--no-audit", "--no-fund"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or not SDK.exists():
            _unavailable(f"`npm ci --prefix tests/js` failed:\n{done.stdout}{done.stderr}")
    return GrowthBookJs(node)
