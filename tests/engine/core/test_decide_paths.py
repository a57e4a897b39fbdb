"""The compiled decide path against the pure-Python one: the same answers, the same
refusals, and a pure-Python fallback where the extension is not built.

The decide, conformance and differential suites run on both paths already (the
``decide_path`` fixture); this module holds what is specific to having two: bad input is
refused identically, the compiled path really decides the common flag shapes itself (it
could otherwise hand everything to Python and still pass), and the fallbacks (no compiler
at install, ``ASSAY_PURE_PYTHON``) work.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from assay.adapters.growthbook import convert_growthbook
from assay.engine._core import ConditionCompiler, Decision, Snapshot, compile_snapshot
from assay.engine._core._compiled import native, use_compiled
from assay.engine._core._decide import decide, decide_python
from assay.engine._model import Experiment, ExperimentStatus, Flag, Prerequisite, Project
from assay.engine._ports import ConfigState
from assay.plugins._growthbook_operators import GROWTHBOOK_OPERATORS

REPO = Path(__file__).resolve().parents[3]
NOW = datetime(2025, 1, 1, tzinfo=UTC)
PID = "p1"

PAYLOAD: dict[str, Any] = {
    "features": {
        "gate": {
            "defaultValue": False,
            "rules": [{"force": True, "coverage": 0.8, "hashVersion": 2, "seed": "beta"}],
        },
        "checkout": {
            "defaultValue": "off",
            "rules": [
                {
                    "key": "checkout-ranges",
                    "parentConditions": [{"id": "gate", "condition": {"value": {"$eq": True}}}],
                    "condition": {
                        "country": {"$in": ["US", "CA"]},
                        "version": {"$vgte": "2.0.0"},
                    },
                    "filters": [{"seed": "ns", "ranges": [[0, 0.6]]}],
                    "variations": ["a", "b", "c"],
                    "ranges": [[0, 0.3], [0.35, 0.65], [0.7, 1.0]],
                    "meta": [{"key": "control"}, {"key": "x"}, {"key": "y"}],
                    "hashVersion": 2,
                },
                {"force": "fallback", "condition": {"plan": "pro"}},
            ],
        },
    }
}


def snapshot_of(payload: dict[str, Any], prerequisites: dict[str, str] | None = None) -> Snapshot:
    """The payload imported as assay definitions; ``prerequisites``: flag -> the flag it
    requires (true)."""
    defs = convert_growthbook(payload).definitions
    experiments = [
        Experiment(
            **{f: getattr(e, f) for f in e.spec().__struct_fields__},
            id=f"exp-{e.key}",
            project_id=PID,
            status=ExperimentStatus.RUNNING,
            started_at=NOW,
            created_at=NOW,
            updated_at=NOW,
        )
        for e in defs.experiments
    ]
    flags = []
    for f in defs.flags:
        fields = {k: getattr(f, k) for k in f.__struct_fields__}
        required = (prerequisites or {}).get(f.key)
        if required is not None:
            fields["prerequisites"] = [Prerequisite(flag=required)]
        flags.append(
            Flag(**fields, id=f"flag-{f.key}", project_id=PID, created_at=NOW, updated_at=NOW)
        )
    state = ConfigState(
        projects=[Project(id=PID, key="proj", created_at=NOW, updated_at=NOW)],
        flags=flags,
        experiments=experiments,
        layers=[],
        metrics=[],
    )
    snapshot = compile_snapshot(state, 1, ConditionCompiler(GROWTHBOOK_OPERATORS))
    assert snapshot.errors == ()
    return snapshot


SNAPSHOT = snapshot_of(PAYLOAD)


def outcome(call: Any) -> tuple[str, Any]:
    """What a call answered, comparable across paths: the decision without its id and
    time, or the exception's type and message."""
    try:
        decision = call()
    except Exception as exc:
        return ("raised", (type(exc).__name__, str(exc)))
    assert isinstance(decision, Decision)
    return ("decided", msgspec.structs.replace(decision, decision_id="", decided_at=0.0))


def both_paths(call: Any) -> tuple[tuple[str, Any], tuple[str, Any]]:
    assert native is not None, "the compiled decide path is not built"
    previous = use_compiled(True)
    try:
        compiled = outcome(call)
    finally:
        use_compiled(previous)
    return compiled, outcome(lambda: call_python(call))


def call_python(call: Any) -> Any:
    previous = use_compiled(False)
    try:
        return call()
    finally:
        use_compiled(previous)


class Weird:
    """An object decide cannot hash or compare the usual way."""

    __hash__ = None  # type: ignore[assignment]


class NotADict(dict[str, Any]):
    """A dict subclass: the compiled path hands it to Python."""


BAD_CALLS: list[tuple[str, Any]] = [
    ("unhashable project", lambda: decide(SNAPSHOT, ["p"], "checkout", "u1", {})),  # type: ignore[arg-type]
    ("unhashable flag", lambda: decide(SNAPSHOT, PID, {"f": 1}, "u1", {})),  # type: ignore[arg-type]
    ("unknown flag", lambda: decide(SNAPSHOT, PID, "nope", "u1", {})),
    ("attributes a list", lambda: decide(SNAPSHOT, PID, "checkout", "u1", [1, 2])),  # type: ignore[arg-type]
    ("attributes a string", lambda: decide(SNAPSHOT, PID, "checkout", "u1", "id")),  # type: ignore[arg-type]
    ("attributes an int", lambda: decide(SNAPSHOT, PID, "checkout", "u1", 7)),  # type: ignore[arg-type]
    ("attributes a dict subclass", lambda: decide(SNAPSHOT, PID, "checkout", "u1", NotADict())),
    ("subject None", lambda: decide(SNAPSHOT, PID, "checkout", None, None)),  # type: ignore[arg-type]
    ("numeric id", lambda: decide(SNAPSHOT, PID, "checkout", "u1", {"id": 12, "country": "US"})),
    ("nan id", lambda: decide(SNAPSHOT, PID, "checkout", "u", {"id": math.nan, "country": "US"})),
    ("bool id", lambda: decide(SNAPSHOT, PID, "checkout", "u1", {"id": True, "country": "US"})),
    ("unhashable id", lambda: decide(SNAPSHOT, PID, "checkout", "u1", {"id": [1]})),
    ("object id", lambda: decide(SNAPSHOT, PID, "checkout", "u1", {"id": Weird()})),
    ("version a number", lambda: decide(SNAPSHOT, PID, "checkout", "u1", {"version": 3})),
    ("version a list", lambda: decide(SNAPSHOT, PID, "checkout", "u1", {"version": ["2"]})),
    ("country a dict", lambda: decide(SNAPSHOT, PID, "checkout", "u1", {"country": {"a": 1}})),
    ("non-string keys", lambda: decide(SNAPSHOT, PID, "checkout", "u1", {1: "x", "id": "u"})),  # type: ignore[dict-item]
    ("too few arguments", lambda: decide(SNAPSHOT, PID, "checkout")),  # type: ignore[call-arg]
    ("too many arguments", lambda: decide(SNAPSHOT, PID, "checkout", "u", {}, {}, {})),  # type: ignore[call-arg, misc]
    ("unknown keyword", lambda: decide(SNAPSHOT, PID, "checkout", "u", {}, bogus=1)),  # type: ignore[call-arg]
    ("attributes twice", lambda: decide(SNAPSHOT, PID, "checkout", "u", {}, attributes={})),  # type: ignore[misc]
    ("sticky a list", lambda: decide(SNAPSHOT, PID, "checkout", "u", {}, sticky=[1])),  # type: ignore[arg-type]
    ("new_id raising", lambda: decide(SNAPSHOT, PID, "checkout", "u", {}, new_id=lambda: 1 / 0)),  # type: ignore[arg-type, return-value]
    ("snapshot None", lambda: decide(None, PID, "checkout", "u", {})),  # type: ignore[arg-type]
    ("snapshot a string", lambda: decide("s", PID, "checkout", "u", {})),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("call", [c for _, c in BAD_CALLS], ids=[n for n, _ in BAD_CALLS])
def test_bad_input_is_refused_or_answered_the_same_way(call: Any) -> None:
    compiled, python = both_paths(call)
    assert compiled == python


def test_the_compiled_path_decides_the_common_shapes_itself() -> None:
    # Without the Python fallback, the compiled path still answers every subject: it does
    # not hand these flags to Python (which would make the two-path tests vacuous).
    assert native is not None
    plans = SNAPSHOT.native_plans
    assert plans is not None
    assert set(plans[2][PID]) == {"gate", "checkout"}
    answered = []
    for i in range(300):
        attrs = {"country": ["US", "CA", "FR"][i % 3], "version": f"{1 + i % 3}.0.0"}
        answered.append(native.evaluate(plans[2][PID]["checkout"], {"id": f"u{i}", **attrs}, {}))
    assert None not in answered
    assert {a[3].value for a in answered if a is not None} >= {"experiment_assigned", "default"}


def test_flags_the_compiled_path_does_not_handle_go_to_python() -> None:
    # A prerequisite has no plan: the flag is decided in Python, with the same answer.
    snapshot = snapshot_of(PAYLOAD, prerequisites={"checkout": "gate"})
    assert snapshot.native_plans is not None
    assert set(snapshot.native_plans[2][PID]) == {"gate"}
    attrs = {"country": "US", "version": "2.1.0"}
    for i in range(50):
        compiled, python = both_paths(
            lambda i=i: decide(snapshot, PID, "checkout", f"u{i}", attrs)  # type: ignore[misc]
        )
        assert compiled == python


def test_ids_are_unique_across_paths() -> None:
    ids = {decide(SNAPSHOT, PID, "checkout", f"u{i}", {}).decision_id for i in range(100)}
    ids |= {decide_python(SNAPSHOT, PID, "checkout", f"u{i}", {}).decision_id for i in range(100)}
    assert len(ids) == 200
    assert all(len(i) >= 24 and int(i, 16) >= 0 for i in ids)


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
        check=False,
    )


def test_assay_pure_python_forces_the_pure_path_with_one_line_notice() -> None:
    code = (
        "import trio, assay\n"
        "from assay.engine._core._compiled import STATUS, native\n"
        "assert native is None, STATUS\n"
        "async def main():\n"
        "    async with assay.open_engine(assay.EngineConfig(store='memory'),"
        " load_entry_points=False) as engine:\n"
        "        print(engine.decide('f', 'u', project='none').reason)\n"
        "trio.run(main)\n"
    )
    done = run_python(code, ASSAY_PURE_PYTHON="1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["flag_not_found"]
    notices = [line for line in done.stderr.splitlines() if "pure Python" in line]
    assert notices == ["decide: pure Python (ASSAY_PURE_PYTHON is set)"]


def test_the_build_falls_back_without_a_compiler(tmp_path: Path) -> None:
    # What ``pip install`` runs (hatch_build.py), with a compiler that does not exist.
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from pathlib import Path\n"
        "from hatch_build import build_extension\n"
        f"print(repr(build_extension(Path({str(REPO)!r}), Path({str(tmp_path)!r}))))\n"
    )
    done = run_python(code, CC="/nonexistent/cc", ASSAY_PURE_PYTHON="0")
    assert done.returncode == 0, done.stderr
    reason = done.stdout.strip().splitlines()[-1]
    assert "CompileError" in reason
    assert not reason.startswith("PosixPath")  # a reason (one line), not a build
    assert list(tmp_path.iterdir()) == []


def test_ranges_that_do_not_line_up_with_the_variants_decide_alike() -> None:
    # Explicit ranges fewer or more than the variations: no plan, the Python path answers.
    for ranges in ([[0, 0.5], [0.5, 1.0]], [[0, 0.2], [0.2, 0.4], [0.4, 0.6], [0.6, 1.0]]):
        payload: dict[str, Any] = {
            "features": {
                "f": {
                    "defaultValue": "off",
                    "rules": [
                        {
                            "key": "e",
                            "variations": ["a", "b", "c"],
                            "ranges": ranges,
                            "meta": [{"key": "a"}, {"key": "b"}, {"key": "c"}],
                            "hashVersion": 2,
                        }
                    ],
                }
            }
        }
        try:
            snapshot = snapshot_of(payload)
        except AssertionError:
            continue  # refused when compiled: nothing to decide
        for i in range(40):
            compiled, python = both_paths(
                lambda i=i, s=snapshot: decide(s, PID, "f", f"u{i}", None)  # type: ignore[misc]
            )
            assert compiled == python
