"""The dashboard app on stores built by hand: the state it serves, its event stream, its
token, loopback and read-only rules, and a synthesis run."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import warnings
from pathlib import Path

import httpx
import pytest

from fedseg.dashboard.app import TOKEN_COOKIE, _read_only, create_app
from fedseg.dashboard.serve import check_bind, is_loopback
from fedseg.errors import FedsegError
from fedseg.run_folder import STORE_FILE
from fedseg.tracking.status import read_status
from fedseg.tracking.store import Alarm, RunStore
from tests.dashboard.conftest import SITES, add_evidence, add_round, serving

with warnings.catch_warnings():  # starlette's note about httpx, not about this code
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

LOCAL = "http://127.0.0.1"


def client(run: Path, token: str | None = None, **kw: object) -> TestClient:
    return TestClient(create_app(run, token), base_url=LOCAL, **kw)  # type: ignore[arg-type]


def test_state_has_sites_rounds_curves_and_alarms(seg_run: Path) -> None:
    with RunStore(seg_run) as store:
        store.record_alarm(Alarm(2, "site2", "below_federation", "mean dice below by 0.1"))
        store.log("hello from the aggregator")
    s = client(seg_run).get("/api/state").json()
    assert s["state"] == "done" and s["round"] == 2 and s["rounds_planned"] == 2
    assert [x["site"] for x in s["sites"]] == list(SITES)
    site1 = s["sites"][0]
    assert site1["n_train"] == 40 and site1["n_val"] == 10 and site1["model_round"] == 2
    assert site1["scores"]["mean"] == pytest.approx(0.7)
    assert site1["scores"]["ET"] == pytest.approx(0.64)  # the builder's ET offset
    assert s["score"]["label"] == "Dice" and s["score"]["all_groups"] == ["ET", "TC", "WT", "mean"]
    curve = s["curves"]["mean"]["sites"]["site3"]
    assert [p["model_round"] for p in curve] == [0, 1, 2]
    assert [p["mean"] for p in curve] == pytest.approx([0.3, 0.55, 0.75])
    half = 1.96 * 0.1 / 10**0.5  # std 0.1 over 10 cases: curves.ci95
    assert curve[2]["lo"] == pytest.approx(0.75 - half) and curve[2]["hi"] == pytest.approx(
        0.75 + half
    )
    assert set(s["curves"]) == {"ET", "TC", "WT", "mean"}
    fed = s["curves"]["mean"]["federation"]
    assert fed[-1]["mean"] == pytest.approx((0.7 + 0.6 + 0.75) / 3)  # case-weighted, equal n
    assert s["federation_model_round"] == 2
    assert s["alarms"] == [
        {"site": "site2", "kind": "below_federation", "level": "alarm", "first": 2, "last": 2,
         "message": "mean dice below by 0.1", "evidence": None}
    ]  # fmt: skip
    assert s["cross"] is None  # no cross-site rows: the page hides the heatmap
    assert s["sites"][1]["alarms"] == ["below_federation"]
    assert s["last_events"][-1]["message"] == "hello from the aggregator"
    assert s["name"] == "run" and s["run"] == str(seg_run)  # status's own JSON, and more
    json.dumps(s, allow_nan=False)  # no NaN reaches the page
    status = read_status(seg_run).to_json()  # what `fedseg status --json` prints
    assert {k: s[k] for k in status if k != "score"} == {
        k: v for k, v in status.items() if k != "score"
    }


def test_alarm_evidence_observations_and_the_cross_site_matrix(seg_run: Path) -> None:
    add_evidence(seg_run)
    s = client(seg_run).get("/api/state").json()
    (alarm,), (obs,) = s["alarms"], s["observations"]
    assert (alarm["site"], alarm["kind"], alarm["level"]) == ("site2", "labels_disagree", "alarm")
    assert alarm["evidence"]["text"].startswith("site2's local models lose 0.30")
    assert alarm["evidence"]["evaluators"] == ["site1", "site3"]
    assert alarm["evidence"]["p"] == pytest.approx(1e-5)
    assert (obs["site"], obs["level"], obs["evidence"]) == ("site1", "observation", None)
    assert s["sites"][0]["alarms"] == []  # an observation is no alarm
    assert s["sites"][0]["observations"] == ["below_federation"]
    cross = s["cross"]
    assert cross["default"] == "mean" and set(cross["regions"]) == {"ET", "mean"}
    m = cross["regions"]["mean"]
    assert m["models"] == list(SITES) and m["evaluators"] == list(SITES)
    z = {(a, b): m["z"][i][j] for i, a in enumerate(SITES) for j, b in enumerate(SITES)}
    assert z[("site2", "site1")] == pytest.approx(-0.3)  # averaged over rounds 2 and 3
    assert z[("site1", "site3")] == pytest.approx(0.01)
    assert z[("site1", "site1")] is None  # no home row here: no NaN in the JSON
    assert m["n"][1][0] == 10  # cases, not rounds
    assert cross["regions"]["ET"]["z"][1][0] == pytest.approx(-0.4)


def test_contributions_from_the_cross_site_evidence(seg_run: Path) -> None:
    """The per-site table of ``estimate_contributions``: the site whose local models lose
    Dice elsewhere comes first, harmful; none without cross-site rows."""
    assert client(seg_run).get("/api/state").json()["contributions"] is None  # no cross rows
    add_evidence(seg_run)
    rows = client(seg_run).get("/api/state").json()["contributions"]
    assert [r["site"] for r in rows] == ["site2", "site1", "site3"]
    assert rows[0]["effect"] < 0 and rows[0]["verdict"] == "harmful"
    assert set(rows[0]["per_region"]) == {"ET", "TC", "WT", "mean"}


def test_page_and_plotly_are_served_offline(seg_run: Path) -> None:
    c = client(seg_run)
    page = c.get("/")
    assert page.status_code == 200 and 'src="/static/plotly.min.js"' in page.text
    assert "http" not in page.text.replace('href="/', "").split("<body>")[0]  # no CDN
    js = c.get("/static/dashboard.js")
    assert js.status_code == 200 and "EventSource" in js.text and "Plotly.react" in js.text
    plotly = c.get("/static/plotly.min.js")
    assert plotly.status_code == 200 and len(plotly.content) > 1_000_000
    assert c.get("/static/../run.sqlite").status_code == 404
    assert c.get("/static/run.sqlite").status_code == 404


def test_synthesis_run_renders_ssim_per_modality(synthesis_run: Path) -> None:
    c = client(synthesis_run)
    s = c.get("/api/state").json()
    assert s["score"]["task"] == "synthesis" and s["score"]["label"] == "SSIM"
    assert s["score"]["all_groups"] == ["t1", "t1ce", "t2", "flair", "mean"]
    assert set(s["curves"]) == {"t1", "t1ce", "t2", "flair", "mean"}
    assert set(s["curves"]["flair"]["sites"]) == {"siteA"}  # siteB has no FLAIR
    assert s["curves"]["mean"]["sites"]["siteB"][-1]["mean"] == pytest.approx(0.7)
    assert [x["site"] for x in s["sites"]] == ["siteA", "siteB"]
    assert s["synthesis"]["modalities"] == {
        "siteA": ["t1", "t1ce", "t2", "flair"], "siteB": ["t1", "t1ce", "t2"]
    }  # fmt: skip
    assert "flair" not in s["sites"][1]["scores"]
    assert s["round"] == 2 and s["synthesis"] is not None
    assert c.get("/").status_code == 200


def test_a_folder_that_is_not_a_run_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(FedsegError, match="no run store"):
        create_app(tmp_path)


def _next_version(lines: object) -> int:
    for line in lines:  # type: ignore[attr-defined]
        if line.startswith("data:"):
            return int(json.loads(line[5:])["version"])
    raise AssertionError("the event stream ended")


def test_event_stream_says_state_at_once_and_again_when_a_round_lands(seg_run: Path) -> None:
    app = create_app(seg_run, poll_s=0.1)
    with serving(app) as url, httpx.stream("GET", url + "/api/events", timeout=10.0) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        first = _next_version(lines)
        state = httpx.get(url + "/api/state").json()
        assert state["version"] == first and state["round"] == 2
        t0 = time.monotonic()
        add_round(seg_run, 3)
        second = _next_version(lines)  # within the read timeout: the store changed
        assert second > first and time.monotonic() - t0 < 10
        state = httpx.get(url + "/api/state").json()
        assert state["version"] >= second and state["round"] == 3


def test_without_the_token_no_run_data(seg_run: Path) -> None:
    c = client(seg_run, token="s3cret-token")
    for path in ("/", "/api/state", "/api/events", "/static/dashboard.js"):
        r = c.get(path)
        assert r.status_code == 401, path
        assert "site1" not in r.text and r.headers["www-authenticate"] == "Bearer"
    assert c.get("/api/state", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/api/state?token=s3cret-toke").status_code == 401
    c.cookies.set(TOKEN_COOKIE, "wrong")
    assert c.get("/api/state").status_code == 401


def test_the_token_by_header_or_once_by_query_then_cookie(seg_run: Path) -> None:
    c = client(seg_run, token="s3cret-token")
    r = c.get("/api/state", headers={"Authorization": "Bearer s3cret-token"})
    assert r.status_code == 200 and r.json()["sites"][0]["site"] == "site1"
    c = client(seg_run, token="s3cret-token")
    page = c.get("/?token=s3cret-token")
    assert page.status_code == 200
    cookie = page.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert c.get("/api/state").status_code == 200  # the cookie carries it now


def test_loopback_only_without_a_token() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert is_loopback(host)
        check_bind(host, None)
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.org"):
        assert not is_loopback(host)
        with pytest.raises(FedsegError, match="--token"):
            check_bind(host, None)
        check_bind(host, "a-token")


def test_without_a_token_requests_must_name_loopback(seg_run: Path) -> None:
    """DNS rebinding: a page on evil.example resolved to 127.0.0.1 cannot read the run."""
    c = client(seg_run)
    r = c.get("/api/state", headers={"Host": "evil.example:8765"})
    assert r.status_code == 403 and "site1" not in r.text
    assert c.get("/api/state", headers={"Host": "localhost:8765"}).status_code == 200
    assert c.get("/api/state", headers={"Host": "[::1]:8765"}).status_code == 200


def test_read_only_no_route_writes(seg_run: Path) -> None:
    app = create_app(seg_run)
    for route in app.routes:
        assert set(getattr(route, "methods", {"GET"})) <= {"GET", "HEAD"}, route
    store = seg_run / STORE_FILE
    before = hashlib.sha256(store.read_bytes()).hexdigest()
    c = TestClient(app, base_url=LOCAL)
    for path in ("/", "/api/state", "/api/events", "/static/plotly.min.js"):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            assert c.request(method, path).status_code == 405, (method, path)
    assert c.get("/api/state").status_code == 200
    assert hashlib.sha256(store.read_bytes()).hexdigest() == before
    db = _read_only(store)  # the watcher's connection cannot write
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        db.execute("CREATE TABLE x (a)")
    db.close()
