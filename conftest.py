"""Suite-wide guard: an async fixture a test relies on is run, or the test fails.

Here for both test paths (``tests`` and the example plugin's tests), which share no other
conftest. pytest-trio (``trio_mode``) sets up every async fixture as a placeholder and
runs, inside the test's Trio run, only the placeholders the test function's own arguments
reach (directly, or through the arguments of the fixtures they name). A placeholder
reached no other way is never run, and nothing says so: its setup and teardown silently
do not happen. That is the fate of

- an ``autouse=True`` async fixture the test does not name as an argument,
- an async fixture named only in ``@pytest.mark.usefixtures``,
- a sync fixture that takes an async one (it becomes a Trio fixture too) reached as above,
- an async fixture fetched with ``request.getfixturevalue`` (the caller gets the
  placeholder, not the value).

The guard records each placeholder pytest-trio creates for a test and, once setup is
done, fails the test (an ERROR at setup) naming every one the test's arguments do not
reach. It also fails a Hypothesis test that takes a Trio fixture: pytest-trio reruns the
fixture for each example, but fixtures depending on it see the first example's value,
torn down by then. (A sync test requesting an async fixture, and an async fixture of
another scope than ``function``, already fail loudly in pytest-trio itself.)
``tests/test_trio_fixture_guard.py`` runs the guard on each of these patterns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from pytest_trio.plugin import TrioFixture

if TYPE_CHECKING:
    from collections.abc import Generator

pytest_plugins = ["pytester"]

_PLACEHOLDERS = pytest.StashKey[dict[int, tuple[str, TrioFixture]]]()


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, Any, Any]:
    value = yield
    if isinstance(value, TrioFixture):
        placeholders = request.node.stash.setdefault(_PLACEHOLDERS, {})
        placeholders[id(value)] = (fixturedef.argname, value)
    return value


def _reached(item: pytest.Function) -> set[int]:
    """The placeholders pytest-trio will run: those the test's arguments reach, as its
    ``register_and_collect_dependencies`` walks them."""
    pending = [item.funcargs[name] for name in item._fixtureinfo.argnames if name in item.funcargs]
    reached: set[int] = set()
    while pending:
        value = pending.pop()
        if isinstance(value, TrioFixture) and id(value) not in reached:
            reached.add(id(value))
            pending.extend(value._pytest_kwargs.values())
    return reached


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    yield
    placeholders = item.stash.get(_PLACEHOLDERS, {})
    if not placeholders or not isinstance(item, pytest.Function):
        return
    reached = _reached(item)
    skipped = sorted({name for key, (name, _) in placeholders.items() if key not in reached})
    if skipped:
        pytest.fail(
            f"async fixture(s) {', '.join(skipped)} would silently not run: pytest-trio runs "
            "an async fixture only when the test's arguments reach it (directly or through "
            "the fixtures they take), not when it is autouse, in usefixtures, taken by a "
            "fixture the arguments do not reach, or fetched with request.getfixturevalue. "
            "Name it as an argument of the test or of a fixture the test takes, or make it "
            "a sync fixture.",
            pytrace=False,
        )
    if hasattr(item.obj, "hypothesis"):
        names = sorted({name for key, (name, _) in placeholders.items() if key in reached})
        pytest.fail(
            f"Hypothesis test takes async fixture(s) {', '.join(names)}: pytest-trio reruns "
            "them for each example but their dependents see the first example's values, "
            "torn down by then. Open what the test needs inside the test (per example).",
            pytrace=False,
        )
