"""The repository's conftest guard (conftest.py at the root) against async fixtures that
pytest-trio silently does not run: each pattern that would be skipped fails its test and
names the fixture; fixtures the test's arguments reach pass as before. Runs the guard, as
the suite's own conftest, in a separate pytest run on a scratch test module."""

from __future__ import annotations

from pathlib import Path

import pytest

GUARD = Path(__file__).parents[1] / "conftest.py"

SCRATCH = """
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

RAN = []


@pytest.fixture
async def opened():
    RAN.append("opened")
    yield "value"
    RAN.append("closed")


@pytest.fixture
def sync_on_async(opened):
    return opened.upper()


@pytest.fixture
async def async_on_async(opened):
    return opened + "!"


@pytest.fixture
def fetches(request):
    request.getfixturevalue("opened")


class TestSkipped:
    @pytest.fixture(autouse=True)
    async def autouse_async(self):
        RAN.append("autouse_async")

    async def test_autouse(self):
        pass


@pytest.fixture
def sync_autouse_on_async(opened):
    pass


class TestSyncAutouse:
    @pytest.fixture(autouse=True)
    def _auto(self, sync_autouse_on_async):
        pass

    async def test_sync_autouse_taking_async(self):
        pass


@pytest.mark.usefixtures("opened")
async def test_usefixtures():
    pass


async def test_getfixturevalue(fetches):
    pass


@settings(max_examples=2, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers())
async def test_hypothesis(async_on_async, x):
    pass


async def test_argument(opened, sync_on_async, async_on_async):
    assert (opened, sync_on_async, async_on_async) == ("value", "VALUE", "value!")
    assert RAN == ["opened"]


def test_sync_test_without_async_fixtures():
    pass
"""


def test_the_guard_fails_every_async_fixture_pytest_trio_would_skip(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makeconftest(GUARD.read_text())
    pytester.makepyfile(test_scratch=SCRATCH)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=5)
    skipped = "async fixture(s) {} would silently not run: *"
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of TestSkipped.test_autouse*",
            skipped.format("autouse_async"),
            "*ERROR at setup of TestSyncAutouse.test_sync_autouse_taking_async*",
            skipped.format("_auto, opened, sync_autouse_on_async"),
            "*ERROR at setup of test_usefixtures*",
            skipped.format("opened"),
            "*ERROR at setup of test_getfixturevalue*",
            skipped.format("opened"),
            "*ERROR at setup of test_hypothesis*",
            "Hypothesis test takes async fixture(s) async_on_async, opened: *",
        ]
    )
