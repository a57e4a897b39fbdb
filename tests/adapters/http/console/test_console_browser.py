"""The console in a real browser: headless Chromium (Debian's ``chromium`` package)
driven by Playwright for Python, against a real server on PostgreSQL.

Playwright never downloads a browser here: it drives the system's Chromium through
``executable_path``. In CI (``CI=true``) these tests never skip; elsewhere, without
Chromium, they skip with how to run them. Screenshots of every page at a phone and a
desktop width go to ``build/console-screenshots/`` (or ``$ASSAY_SCREENSHOTS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from assay.adapters.http.console import _format
from assay.engine import Role

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .conftest import Live

SCREENSHOTS = Path(
    os.environ.get("ASSAY_SCREENSHOTS")
    or Path(__file__).resolve().parents[4] / "build" / "console-screenshots"
)
WIDTHS = {"phone": (390, 844), "desktop": (1280, 900)}
HOW = (
    "the browser tests need Debian's chromium (apt-get install -y chromium) and "
    "Playwright for Python (pip install -e '.[dev]'); .ci/run installs both"
)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        executable = None
    if executable is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the browser tests: {HOW}")
        pytest.skip(HOW)
    # trio-asyncio (imported by the PostgreSQL adapter) installs its own event loop
    # policy; Playwright's sync API must create a plain asyncio loop of its own.
    policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    try:
        playwright = sync_playwright().start()
    finally:
        asyncio.set_event_loop_policy(policy)
    try:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()


class Visitor:
    """One browser context (its own cookies) watching every request it makes."""

    def __init__(self, browser: Any, live: Live, width: str = "desktop") -> None:
        w, h = WIDTHS[width]
        self.context = browser.new_context(viewport={"width": w, "height": h})
        self.page = self.context.new_page()
        self.live = live
        self.requests: list[str] = []
        self.bytes = 0
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("response", self._count)

    def _count(self, response: Any) -> None:
        if response.request.resource_type in ("document", "stylesheet", "image", "font"):
            with contextlib.suppress(Exception):  # a redirect has no body
                self.bytes += len(response.body())

    def go(self, path: str) -> Any:
        return self.page.goto(self.live.base + path)

    def sign_in(self, secret: str) -> None:
        self.go("/")
        self.page.get_by_label("API key").fill(secret)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_load_state()

    def shoot(self, name: str, width: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


def _report(live: Live, role: Role = Role.ANALYST, key: str | None = None) -> Any:
    seeded = live.seeded
    answer = httpx.get(
        f"{live.base}/api/v1/experiments/{key or seeded.experiment}/report",
        params={"project": seeded.project},
        headers={"Authorization": f"Bearer {seeded.keys[role]}"},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def _timeseries(live: Live, interval: str = "day") -> Any:
    seeded = live.seeded
    answer = httpx.get(
        f"{live.base}/api/v1/experiments/{seeded.experiment}/report/timeseries",
        params={"project": seeded.project, "interval": interval},
        headers={"Authorization": f"Bearer {seeded.keys[Role.ANALYST]}"},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_wrong_key_is_told_and_not_signed_in(browser: Any, live: Live) -> None:
    visitor = Visitor(browser, live)
    try:
        visitor.sign_in("assay_this-is-not-a-key")
        assert "not valid" in visitor.page.get_by_role("alert").inner_text()
        assert not [c for c in visitor.context.cookies() if c["name"] == "assay_console"]
        visitor.shoot("sign-in-error", "desktop")
    finally:
        visitor.close()


def test_walk_every_page_at_both_widths(browser: Any, live: Live) -> None:
    seeded = live.seeded
    base = f"/console/projects/{seeded.project}"
    pages = {
        "experiments": f"{base}/experiments",
        "experiment": f"{base}/experiments/{seeded.experiment}",
        "experiment-srm": f"{base}/experiments/{seeded.srm_experiment}",
        # The old page of the charts over time leads to them on the results page.
        "experiment-hourly": f"{base}/experiments/{seeded.experiment}/over-time?interval=hour",
        "confirm-pause": f"{base}/experiments/{seeded.experiment}/actions/pause",
        "flags": f"{base}/flags",
        "flag-playground": f"{base}/flags/{seeded.flag}?subject=u7&attributes=%7B%7D",
        "audit": f"{base}/audit",
    }
    for width in WIDTHS:
        visitor = Visitor(browser, live, width)
        try:
            visitor.sign_in(seeded.keys[Role.ADMIN])
            visitor.shoot("sign-in-done", width)
            for name, path in pages.items():
                response = visitor.go(path)
                assert response.status == 200, (name, response.status)
                assert visitor.page.locator("h1").count() == 1
                visitor.shoot(name, width)
            # Nothing but our own origin was ever asked for.
            foreign = [u for u in visitor.requests if not u.startswith(live.base)]
            assert foreign == [], foreign
        finally:
            visitor.close()


def test_a_key_for_every_project_starts_at_the_project_list(browser: Any, live: Live) -> None:
    seeded = live.seeded
    for width in WIDTHS:
        visitor = Visitor(browser, live, width)
        try:
            visitor.sign_in(seeded.global_admin)
            assert visitor.page.url == f"{live.base}/console/projects"
            visitor.shoot("projects", width)
            visitor.page.get_by_role("link", name="Shop").first.click()
            assert visitor.page.url.endswith(f"/console/projects/{seeded.project}/experiments")
        finally:
            visitor.close()


def test_experiment_page_numbers_weight_and_origin(browser: Any, live: Live) -> None:
    seeded = live.seeded
    visitor = Visitor(browser, live)
    try:
        visitor.sign_in(seeded.keys[Role.ANALYST])
        visitor.requests.clear()
        visitor.bytes = 0
        visitor.go(f"/console/projects/{seeded.project}/experiments/{seeded.experiment}")
        assert visitor.bytes <= 200 * 1024, visitor.bytes
        assert all(u.startswith(live.base) for u in visitor.requests), visitor.requests
        report = _report(live)
        page = visitor.page
        for variant in report["variants"]:
            cell = page.locator(
                f'#variants tr[data-variant="{variant["key"]}"] [data-col=subjects]'
            )
            assert cell.inner_text() == _format.count(variant["subjects"])
        for metric in report["metrics"]:
            section = page.locator(f'section[data-metric="{metric["key"]}"]')
            for comparison in metric["comparisons"]:
                row = section.locator(f'tr[data-variant="{comparison["variant"]}"]')
                result = comparison["result"]
                shown = {
                    scale: _format.DASH
                    if result[scale].get("error")
                    else _format.interval(
                        result[scale]["sequential"]["estimate"],
                        result[scale]["sequential"]["ci_low"],
                        result[scale]["sequential"]["ci_high"],
                        relative=scale == "relative",
                    )
                    for scale in ("absolute", "relative")
                }
                for scale, text in shown.items():
                    assert row.locator(f"[data-col={scale}]").inner_text() == text
                judged = (
                    result["relative"]
                    if not result["relative"].get("error")
                    else result["absolute"]
                )
                p = judged["sequential"]["adjusted_p_value"]
                if p is None:
                    p = judged["sequential"]["p_value"]
                computable = not judged.get("error")
                assert row.locator("[data-col=p]").inner_text() == (
                    _format.p_value(p) if computable else _format.DASH
                )
                assert row.locator("[data-col=chance]").inner_text() == (
                    _format.chance(judged["bayesian"]["chance_to_win"])
                    if computable
                    else _format.DASH
                )
            for value in metric["values"]:
                row = section.locator(f'tr[data-variant="{value["variant"]}"]')
                assert row.locator("[data-col=value]").inner_text() == _format.number(
                    value["value"]
                )
        # The forest plot is drawn, and the SRM banner only where SRM is flagged.
        assert page.locator("figure.forest svg").count() == 1
        # The charts over time are on the page, each with its table: every number there
        # is the timeseries API's, and the last point is the report itself.
        series = _timeseries(live)
        assert page.locator("#over-time figure svg").count() == 1
        rows = page.locator("#subjects-over-time tbody tr")
        assert rows.count() == len(series["points"]) > 0
        for i, point in enumerate(series["points"]):
            shown = [c.text_content() for c in rows.nth(i).locator("td").all()]
            assert shown == [_format.count(v["subjects"]) for v in point["variants"]]
        last = [c.text_content() for c in rows.last.locator("td").all()]
        assert last == [_format.count(v["subjects"]) for v in report["variants"]]
        for metric in report["metrics"]:
            section = page.locator(f'section[data-metric="{metric["key"]}"]')
            for comparison in metric["comparisons"]:
                variant = comparison["variant"]
                lifts = [
                    c["relative"]
                    for p in series["points"]
                    for c in p["comparisons"]
                    if c["metric"] == metric["key"]
                    and c["variant"] == variant
                    and not c["relative"].get("error")
                ]
                # A chart where some point has a lift; a sentence saying so where none has.
                chart = section.locator(f'figure.lift-over-time[data-variant="{variant}"] svg')
                none = section.locator(f'.lift-over-time-none[data-variant="{variant}"]')
                assert (chart.count(), none.count()) == ((1, 0) if lifts else (0, 1))
                cells = section.locator(f'table.lift-table[data-variant="{variant}"] tbody tr')
                assert cells.count() == len(lifts)
                for i, lift in enumerate(lifts):
                    row = cells.nth(i)
                    assert row.locator("[data-col=relative]").text_content() == _format.interval(
                        lift["estimate"], lift["ci_low"], lift["ci_high"], relative=True
                    )
                    assert row.locator("[data-col=p]").text_content() == _format.p_value(
                        lift["p_value"]
                    )
        visitor.go(f"/console/projects/{seeded.project}/experiments/{seeded.experiment}")
        assert page.locator("#srm-banner").count() == 0
        visitor.go(f"/console/projects/{seeded.project}/experiments/{seeded.srm_experiment}")
        assert _report(live, key=seeded.srm_experiment)["srm"]["flagged"] is True
        assert "Sample ratio mismatch" in page.locator("#srm-banner").inner_text()
    finally:
        visitor.close()


def test_keyboard_reaches_content_and_actions(browser: Any, live: Live) -> None:
    seeded = live.seeded
    visitor = Visitor(browser, live)
    try:
        visitor.sign_in(seeded.keys[Role.DEVELOPER])
        visitor.go(f"/console/projects/{seeded.project}/experiments/{seeded.experiment}")
        page = visitor.page
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        focused = set()
        for _ in range(40):
            page.keyboard.press("Tab")
            focused.add(page.evaluate("document.activeElement.textContent.trim()"))
        assert {"Pause", "Complete", "Roll back", "Sign out"} <= focused
    finally:
        visitor.close()


def test_playground_shows_decisions_and_errors_as_text(browser: Any, live: Live) -> None:
    seeded = live.seeded
    visitor = Visitor(browser, live)
    try:
        visitor.sign_in(seeded.keys[Role.VIEWER])
        visitor.go(f"/console/projects/{seeded.project}/flags/{seeded.flag}")
        page = visitor.page
        page.get_by_label("Subject id").fill("u42")
        page.get_by_label("Attributes (a JSON object)").fill('{"country": "NZ"}')
        page.get_by_role("button", name="Decide").click()
        assert page.locator("#decision-reason").inner_text() == "forced"
        assert page.locator("#decision-value").inner_text() == "true"
        page.get_by_label("Attributes (a JSON object)").fill('{"country": <b>NZ</b>')
        page.get_by_role("button", name="Decide").click()
        error = page.locator("#playground-error")
        assert "not valid JSON" in error.inner_text()
        assert page.locator("#playground-error b").count() == 0
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.get_by_label("Subject id").fill("<img src=x onerror=alert(1)>")
        page.get_by_label("Attributes (a JSON object)").fill("{}")
        page.get_by_role("button", name="Decide").click()
        assert page.locator("main img").count() == 0
        assert dialogs == []
    finally:
        visitor.close()


def test_action_through_the_ui_changes_state_and_viewer_sees_none(browser: Any, live: Live) -> None:
    seeded = live.seeded
    experiment_url = f"/console/projects/{seeded.project}/experiments/{seeded.srm_experiment}"
    viewer = Visitor(browser, live)
    try:
        viewer.sign_in(seeded.keys[Role.VIEWER])
        viewer.go(experiment_url)
        assert viewer.page.locator(".actions a").count() == 0
        # A forged post from the viewer's own session (no CSRF token) is refused.
        forged = viewer.context.request.post(
            f"{live.base}{experiment_url}/actions/pause", form={"reason": "forged"}
        )
        assert forged.status == 403
    finally:
        viewer.close()
    developer = Visitor(browser, live)
    try:
        developer.sign_in(seeded.keys[Role.DEVELOPER])
        developer.go(experiment_url)
        page = developer.page
        assert page.locator("#experiment-status").inner_text() == "RUNNING"
        page.get_by_role("link", name="Pause").click()
        assert "Banner" in page.locator("h1").inner_text()  # the confirmation names it
        page.get_by_label("Reason (kept in the audit log)").fill("SRM under investigation")
        page.get_by_role("button", name=f"Pause {seeded.srm_experiment}").click()
        assert page.locator("#experiment-status").inner_text() == "PAUSED"
        assert _report(live, key=seeded.srm_experiment)["status"] == "PAUSED"
        forged = developer.context.request.post(
            f"{live.base}{experiment_url}/actions/resume", form={"csrf": "guessed"}
        )
        assert forged.status == 403
        assert _report(live, key=seeded.srm_experiment)["status"] == "PAUSED"
        developer.go(
            f"/console/projects/{seeded.project}/audit?resource_kind=experiment"
            f"&actor={seeded.key_ids[Role.DEVELOPER]}"
        )
        rows = page.locator("#audit tbody tr")
        assert rows.count() == 1
        assert "RUNNING → PAUSED" in rows.first.inner_text()
    finally:
        developer.close()
