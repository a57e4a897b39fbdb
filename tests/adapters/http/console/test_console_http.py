"""The console over the Quart test client: sign-in and sessions, the security headers,
CSRF, roles, escaping, and pages answering with the report's own numbers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

import assay
from assay.adapters.http import create_app
from assay.adapters.http.console import _format
from assay.engine import SYSTEM_KEY, Role

if TYPE_CHECKING:
    from assay.engine import Engine

from .conftest import HOSTILE, csrf_of, engine_config, sign_in


async def _text(response: Any) -> str:
    return await response.get_data(as_text=True)


async def test_root_leads_to_sign_in(app_client: Any) -> None:
    root = await app_client.get("/")
    assert root.status_code == 302
    assert root.headers["Location"] == "/console/"
    console = await app_client.get("/console/")
    assert console.status_code == 302
    assert console.headers["Location"] == "/console/sign-in"


async def test_sign_in_sets_a_strict_http_only_session(app_client: Any, seeded: Any) -> None:
    answer = await sign_in(app_client, seeded.keys[Role.ANALYST])
    assert answer.status_code == 303
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith("assay_console=")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # plain HTTP here; over TLS it is set (test_tls)
    assert seeded.keys[Role.ANALYST] not in cookie
    page = await app_client.get(f"/console/projects/{seeded.project}/experiments")
    assert page.status_code == 200
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "form-action 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["Cache-Control"] == "no-store"


async def test_wrong_key_gets_a_message_and_no_session(app_client: Any, seeded: Any) -> None:
    for secret in ("assay_not-a-key", "nonsense", seeded.keys[Role.ADMIN] + "x"):
        answer = await sign_in(app_client, secret)
        assert answer.status_code == 401
        assert "not valid" in await _text(answer)
        assert "assay_console=" not in answer.headers.get("Set-Cookie", "")
        page = await app_client.get(f"/console/projects/{seeded.project}/experiments")
        assert page.status_code == 302


async def test_sign_in_without_its_csrf_token_is_refused(app_client: Any, seeded: Any) -> None:
    answer = await app_client.post(
        "/console/sign-in", form={"csrf": "guess", "api_key": seeded.keys[Role.ADMIN]}
    )
    assert answer.status_code == 403
    assert "assay_console=" not in answer.headers.get("Set-Cookie", "")


async def test_revoked_key_ends_the_session(
    app_client: Any, seeded: Any, console_engine: Engine
) -> None:
    await sign_in(app_client, seeded.keys[Role.DEVELOPER])
    url = f"/console/projects/{seeded.project}/flags"
    assert (await app_client.get(url)).status_code == 200
    await console_engine.service.revoke_key(SYSTEM_KEY, seeded.key_ids[Role.DEVELOPER])
    ended = await app_client.get(url)
    assert ended.status_code == 302
    assert ended.headers["Location"] == "/console/sign-in?ended=revoked"
    again = await sign_in(app_client, seeded.keys[Role.DEVELOPER])
    assert again.status_code == 401


async def test_sign_out_ends_the_session(app_client: Any, seeded: Any) -> None:
    await sign_in(app_client, seeded.keys[Role.VIEWER])
    url = f"/console/projects/{seeded.project}/flags"
    page = await app_client.get(url)
    forged = await app_client.post("/console/sign-out", form={})
    assert forged.status_code == 403
    assert (await app_client.get(url)).status_code == 200
    out = await app_client.post("/console/sign-out", form={"csrf": csrf_of(await _text(page))})
    assert out.status_code == 303
    assert (await app_client.get(url)).status_code == 302


async def test_forged_action_is_refused_and_changes_nothing(
    app_client: Any, seeded: Any, console_engine: Engine
) -> None:
    await sign_in(app_client, seeded.keys[Role.ADMIN])
    base = f"/console/projects/{seeded.project}/experiments/{seeded.experiment}"
    page = await app_client.get(f"{base}/actions/pause")
    token = csrf_of(await _text(page))
    for form, headers in (
        ({}, {}),
        ({"csrf": "forged"}, {}),
        ({"csrf": token}, {"Origin": "https://evil.example"}),
    ):
        answer = await app_client.post(f"{base}/actions/pause", form=form, headers=headers)
        assert answer.status_code == 403
    experiment = await console_engine.service.get_object(
        SYSTEM_KEY, type_of(console_engine), seeded.project, seeded.experiment
    )
    assert experiment.status == "RUNNING"
    done = await app_client.post(f"{base}/actions/pause", form={"csrf": token})
    assert done.status_code == 303
    experiment = await console_engine.service.get_object(
        SYSTEM_KEY, type_of(console_engine), seeded.project, seeded.experiment
    )
    assert experiment.status == "PAUSED"


def type_of(engine: Engine) -> Any:
    from assay.engine import Experiment

    return Experiment


async def test_roles_that_may_not_act_see_no_action_and_are_refused(
    app_client: Any, seeded: Any, console_engine: Engine
) -> None:
    base = f"/console/projects/{seeded.project}/experiments/{seeded.experiment}"
    for role in (Role.ANALYST, Role.VIEWER):
        client = app_client.app.test_client()
        await sign_in(client, seeded.keys[role])
        page = await _text(await client.get(base))
        assert "/actions/" not in page
        confirm = await client.get(f"{base}/actions/pause")
        assert confirm.status_code == 422
        token = csrf_of(page)
        refused = await client.post(f"{base}/actions/pause", form={"csrf": token})
        assert refused.status_code in (403, 404)
    experiment = await console_engine.service.get_object(
        SYSTEM_KEY, type_of(console_engine), seeded.project, seeded.experiment
    )
    assert experiment.status == "RUNNING"


async def test_user_text_is_never_markup(app_client: Any, seeded: Any) -> None:
    await sign_in(app_client, seeded.keys[Role.ANALYST])
    base = f"/console/projects/{seeded.project}"
    page = await _text(await app_client.get(f"{base}/experiments/{seeded.experiment}"))
    assert HOSTILE not in page
    assert "&lt;script&gt;" in page
    played = await _text(
        await app_client.get(
            f"{base}/flags/{seeded.flag}", query_string={"subject": HOSTILE, "attributes": "{}"}
        )
    )
    assert HOSTILE not in played
    assert "<script>" not in played


async def test_playground_decides_and_shows_api_errors(
    app_client: Any, seeded: Any, console_engine: Engine
) -> None:
    decided = console_engine.decisions_made
    before = console_engine.decision_stats
    await sign_in(app_client, seeded.keys[Role.VIEWER])
    url = f"/console/projects/{seeded.project}/flags/{seeded.flag}"
    forced = await _text(
        await app_client.get(url, query_string={"subject": "u1", "attributes": '{"country": "NZ"}'})
    )
    assert re.search(r'id="decision-reason">forced<', forced)
    assigned = await _text(await app_client.get(url, query_string={"subject": "u1"}))
    assert re.search(r'id="decision-reason">experiment_assigned<', assigned)
    for attributes, code in (
        ("{not json", "malformed_json"),
        ("[1, 2]", "invalid_body"),
    ):
        page = await app_client.get(url, query_string={"subject": "u1", "attributes": attributes})
        assert page.status_code == 200
        assert f"<code>{code}</code>" in await _text(page)
    too_long = await _text(await app_client.get(url, query_string={"subject": "x" * 600}))
    assert "<code>invalid_body</code>" in too_long
    # Trying subjects out decides nothing for real: no decision made, none recorded.
    assert console_engine.decisions_made == decided
    assert console_engine.decision_stats == before


async def test_results_table_shows_the_reports_numbers(
    app_client: Any, seeded: Any, console_engine: Engine
) -> None:
    key = await console_engine.service.authenticate(seeded.keys[Role.ANALYST])
    report = await console_engine.report(seeded.project, seeded.experiment, principal=key)
    await sign_in(app_client, seeded.keys[Role.ANALYST])
    page = await _text(
        await app_client.get(f"/console/projects/{seeded.project}/experiments/{seeded.experiment}")
    )
    (bought,) = [m for m in report.metrics if m.key == "bought"]
    (c,) = bought.comparisons
    rel = c.result.relative.sequential
    shown = _format.interval(rel.estimate, rel.ci_low, rel.ci_high, relative=True)
    assert shown in page
    assert _format.count(report.variants[0].subjects) in page


async def test_downloads(app_client: Any, seeded: Any) -> None:
    await sign_in(app_client, seeded.keys[Role.ANALYST])
    base = f"/console/projects/{seeded.project}/experiments/{seeded.experiment}"
    csv = await _text(await app_client.get(f"{base}/report.csv?correction=none"))
    header, *rows = csv.strip().splitlines()
    assert header.startswith("metric,role,variant,subjects,value")
    assert len(rows) == 6  # three metrics x two variants
    data = await app_client.get(f"{base}/report.json")
    assert data.content_type == "application/json"
    assert (await data.get_json())["experiment"] == seeded.experiment


async def test_viewer_pages_and_list_filter(app_client: Any, seeded: Any) -> None:
    await sign_in(app_client, seeded.keys[Role.VIEWER])
    base = f"/console/projects/{seeded.project}"
    listing = await _text(await app_client.get(f"{base}/experiments?status=DRAFT"))
    assert seeded.draft in listing
    assert seeded.experiment not in listing
    experiment = await _text(await app_client.get(f"{base}/experiments/{seeded.experiment}"))
    assert "may not read reports" in experiment
    bad = await app_client.get(f"{base}/experiments?status=nope")
    assert bad.status_code == 422


async def test_srm_and_alerts(app_client: Any, seeded: Any) -> None:
    await sign_in(app_client, seeded.keys[Role.ANALYST])
    base = f"/console/projects/{seeded.project}"
    srm = await _text(await app_client.get(f"{base}/experiments/{seeded.srm_experiment}"))
    assert 'id="srm-banner"' in srm
    fine = await _text(await app_client.get(f"{base}/experiments/{seeded.experiment}"))
    assert 'id="srm-banner"' not in fine
    listing = await _text(await app_client.get(f"{base}/experiments"))
    assert "SRM (p &lt; 0.0001)" in listing


async def test_timeseries_api(app_client: Any, seeded: Any) -> None:
    headers = {"Authorization": f"Bearer {seeded.keys[Role.ANALYST]}"}
    url = f"/api/v1/experiments/{seeded.experiment}/report/timeseries?project={seeded.project}"
    answer = await app_client.get(url + "&interval=hour", headers=headers)
    assert answer.status_code == 200
    body = await answer.get_json()
    assert body["interval"] == "hour"
    assert body["points"], body
    last = body["points"][-1]
    assert sum(v["subjects"] for v in last["variants"]) == 1200
    assert {(c["metric"], c["variant"]) for c in last["comparisons"]} == {
        ("bought", "treatment"),
        ("revenue", "treatment"),
        ("errors", "treatment"),
    }
    bad = await app_client.get(url + "&interval=week", headers=headers)
    assert bad.status_code == 422
    viewer = {"Authorization": f"Bearer {seeded.keys[Role.VIEWER]}"}
    assert (await app_client.get(url, headers=viewer)).status_code == 404
    draft = f"/api/v1/experiments/{seeded.draft}/report/timeseries?project={seeded.project}"
    assert (await (await app_client.get(draft, headers=headers)).get_json())["points"] == []


async def test_a_session_is_shared_by_every_process_on_the_database(
    module_dsn: str, seeded: Any
) -> None:
    """Two engines on one database stand for two workers (or nodes): a person signed in
    through one is signed in through the other, and signing out of one ends both."""
    url = f"/console/projects/{seeded.project}/flags"
    async with (
        assay.open_engine(engine_config(module_dsn), load_entry_points=False) as one,
        assay.open_engine(engine_config(module_dsn), load_entry_points=False) as two,
    ):
        first, second = create_app(one).test_client(), create_app(two).test_client()
        answer = await sign_in(first, seeded.keys[Role.ANALYST])
        cookie = answer.headers["Set-Cookie"].split(";")[0]
        assert cookie.startswith("assay_console=")
        elsewhere = await second.get(url, headers={"Cookie": cookie})
        assert elsewhere.status_code == 200
        token = csrf_of(await _text(elsewhere))
        # The CSRF token is the session's, the same wherever the page was served.
        assert token == csrf_of(await _text(await first.get(url)))
        out = await second.post(
            "/console/sign-out", form={"csrf": token}, headers={"Cookie": cookie}
        )
        assert out.status_code == 303
        ended = await first.get(url)
        assert ended.status_code == 302
        assert ended.headers["Location"] == "/console/sign-in?ended=expired"


async def test_the_store_keeps_no_cookie_and_no_secret(
    app_client: Any, seeded: Any, console_engine: Engine
) -> None:
    from assay.engine._console_sessions import token_hash

    answer = await sign_in(app_client, seeded.keys[Role.VIEWER])
    session_id = answer.headers["Set-Cookie"].split(";")[0].removeprefix("assay_console=")
    found = await console_engine.store.get_console_session(
        token_hash(session_id), now=datetime.now(UTC)
    )
    assert found is not None
    session, key = found
    assert key is not None
    assert key.id == seeded.key_ids[Role.VIEWER]
    stored = msgspec.json.encode(session).decode()
    assert session_id not in stored
    assert seeded.keys[Role.VIEWER] not in stored
    assert session.expires_at - session.created_at == timedelta(
        minutes=console_engine.config.console_session_minutes
    )


async def test_an_expired_session_is_not_resumed(console_engine: Engine, seeded: Any) -> None:
    from assay.engine._console_sessions import ConsoleSessions

    key = await console_engine.service.authenticate(seeded.keys[Role.VIEWER])
    lasting = ConsoleSessions(console_engine.store, timedelta(hours=1))
    cookie, session = await lasting.start(key)
    assert await lasting.resume(cookie) == (session, key)
    assert await lasting.resume(cookie + "x") is None
    await lasting.end(cookie)
    assert await lasting.resume(cookie) is None
    expired = ConsoleSessions(console_engine.store, timedelta(seconds=-1))
    cookie, _ = await expired.start(key)
    assert await expired.resume(cookie) is None


async def test_sdk_keys_cannot_sign_in(
    app_client: Any, seeded: Any, console_engine: Engine
) -> None:
    _, secret = await console_engine.service.create_key(
        SYSTEM_KEY, role=Role.SDK, project=seeded.project
    )
    answer = await sign_in(app_client, secret)
    assert answer.status_code == 403
    assert "SDK keys" in await _text(answer)
    assert "assay_console=" not in answer.headers.get("Set-Cookie", "")


async def test_the_results_page_draws_the_series_over_time(app_client: Any, seeded: Any) -> None:
    await sign_in(app_client, seeded.keys[Role.ANALYST])
    base = f"/console/projects/{seeded.project}/experiments/{seeded.experiment}"
    page = await _text(await app_client.get(base + "?interval=hour"))
    headers = {"Authorization": f"Bearer {seeded.keys[Role.ANALYST]}"}
    series = await (
        await app_client.get(
            f"/api/v1/experiments/{seeded.experiment}/report/timeseries"
            f"?project={seeded.project}&interval=hour",
            headers=headers,
        )
    ).get_json()
    table = page.split('id="subjects-over-time"')[1].split("</table>")[0]
    rows = re.findall(r"<tr><th scope=\"row\">.*?</tr>", table.split("<tbody>")[1])
    assert len(rows) == len(series["points"]) > 0
    for row, point in zip(rows, series["points"], strict=True):
        shown = re.findall(r'<td class="num" data-variant="[^"]+">([^<]*)</td>', row)
        assert shown == [_format.count(v["subjects"]) for v in point["variants"]]
    for metric in ("bought", "revenue"):
        section = page.split(f'data-metric="{metric}"')[1].split("</section>")[0]
        assert 'class="lift-over-time" data-variant="treatment"' in section
        assert "<svg" in section.split('class="lift-over-time"')[1]
    # No error in the treatment arm: no relative lift at any point, nothing to draw.
    errors = page.split('data-metric="errors"')[1].split("</section>")[0]
    assert 'class="lift-over-time"' not in errors
    assert "No relative lift of treatment computable" in errors
    # The page of its own that the charts had is now a way to them on the results page.
    moved = await app_client.get(f"{base}/over-time?interval=hour&correction=none&x=1")
    assert moved.status_code == 301
    assert moved.headers["Location"] == f"{base}?interval=hour&correction=none#over-time"
    bad = await app_client.get(base + "?interval=week")
    assert bad.status_code == 422
    assert "interval must be one of" in await _text(bad)
