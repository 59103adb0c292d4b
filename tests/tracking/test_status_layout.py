"""``fedseg status`` and the live table fit the width they are drawn at: a full table from
120 columns, a compact one from 60, one line per site below, and never a cell cut to "…"."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from fedseg.federation.commands.watch import live_table
from fedseg.plan import load_plan
from fedseg.run_folder import PLAN_FILE
from fedseg.tracking.status import read_status, render_status
from fedseg.tracking.status_layout import Layout, layout_for, short_alarms, short_kind
from fedseg.tracking.store import Alarm, RunStore
from tests.helpers import run_fedseg
from tests.tracking.conftest import rising

SITES = ("hospital_north", "site2", "university_clinic_b")
KINDS = ("below_federation", "update_outlier", "stalled", "labels_disagree")
WIDTHS = (40, 80, 200)


def _draw(renderable: object, width: int) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


@pytest.fixture
def run(make_run) -> Path:
    """A finished run with long site names and an alarm of every kind."""
    run = make_run({s: rising(5) for s in SITES})
    with RunStore(run) as store:
        for i, kind in enumerate(KINDS):
            store.record_alarm(Alarm(3 + i % 2, SITES[i % 3], kind, f"{kind} because of x"))
    (run / PLAN_FILE).write_text(
        "sites:\n" + "".join(f"  {s}: {{data: /{s}}}\n" for s in SITES) + "rounds: 4\n"
    )
    return run


def test_the_layout_follows_the_width() -> None:
    assert [layout_for(w) for w in (200, 120, 119, 80, 60, 59, 40)] == [
        Layout.WIDE, Layout.WIDE, Layout.COMPACT, Layout.COMPACT, Layout.COMPACT,
        Layout.LINES, Layout.LINES,
    ]  # fmt: skip
    assert short_kind("labels_disagree") == "labels!" and short_kind("new_kind") == "new_kind"
    assert short_alarms(["below_federation", "below_federation"], ["x"]) == "below obs"
    assert short_alarms([]) == "-"


@pytest.mark.parametrize("width", WIDTHS)
def test_status_at_any_width_cuts_no_cell(run: Path, width: int) -> None:
    out = _draw(render_status(read_status(run)), width)
    assert "…" not in out
    assert max(len(ln) for ln in out.splitlines()) <= width
    flat = " ".join(out.split())  # a line may wrap at 40 columns, a name is never cut
    for name in (*SITES, *KINDS):
        assert name in flat, (name, out)
    wide, lines = "update dist" in out, "│" not in out and "─" not in out
    assert (wide, lines) == {200: (True, False), 80: (False, False), 40: (False, True)}[width]
    if width == 80:  # the compact table: one row per site, every number in it
        row = next(ln for ln in out.splitlines() if ln.startswith("site2 "))
        assert "40/10" in row and row.count("0.") == 4  # cases; mean and ET TC WT
        assert "labels!" in next(ln for ln in out.splitlines() if ln.startswith("hospital_"))


def test_a_name_too_long_for_the_compact_table_gives_lines(make_run) -> None:
    long = "a_very_long_site_name_that_no_narrow_table_has_room_for_at_all"
    out = _draw(render_status(read_status(make_run({long: rising(3), "b": rising(3)}))), 80)
    assert "…" not in out and long in out and "│" not in out
    assert next(ln for ln in out.splitlines() if ln.startswith("b ")).startswith("b  ok r2")


def test_a_forced_layout_is_drawn_as_asked(run: Path) -> None:
    view = read_status(run)
    assert "│" not in _draw(render_status(view, Layout.LINES), 200)
    fitted = render_status(view, Layout.WIDE)
    wide = fitted.console_for(Console(width=80))
    assert wide.width > 120  # --wide in a pipe: long lines rather than cut cells
    assert fitted.console_for(Console(width=300)).width == 300
    out = _draw(fitted, wide.width)
    assert "update dist" in out and "…" not in out


@pytest.mark.parametrize("width", WIDTHS)
def test_the_live_table_at_any_width_cuts_no_cell(run: Path, width: int) -> None:
    with RunStore(run) as store:
        out = _draw(live_table(store, load_plan(run / PLAN_FILE)), width)
    assert "…" not in out and max(len(ln) for ln in out.splitlines()) <= width
    flat = " ".join(out.split())
    assert all(s in flat for s in SITES)
    kinds = KINDS if width != 80 else [short_kind(k) for k in KINDS]
    assert all(k in flat for k in kinds), out
    assert ("Dice ET" in out, "│" in out) == {
        200: (True, True),
        80: (False, False),
        40: (True, False),
    }[width]


def test_status_cli_flags(run: Path) -> None:
    res = run_fedseg("status", run, "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["state"] == "done" and [s["site"] for s in data["sites"]] == sorted(SITES)
    assert data["score"]["label"] == "Dice" and {a["kind"] for a in data["alarms"]} == set(KINDS)
    assert data == json.loads(json.dumps(read_status(run).to_json()))
    lines = run_fedseg("status", run, "--lines")
    assert lines.returncode == 0 and "│" not in lines.stdout
    assert any(ln.startswith("site2  ok r4") for ln in lines.stdout.splitlines())
    piped = run_fedseg("status", run, "--wide", env={"COLUMNS": "80"})
    assert piped.returncode == 0 and "update dist" in piped.stdout and "…" not in piped.stdout
    both = run_fedseg("status", run, "--wide", "--lines")
    assert both.returncode == 2 and both.stderr.count("\n") == 1 and "--wide" in both.stderr
    follow = run_fedseg("status", run, "--json", "--follow")
    assert follow.returncode == 2 and "Traceback" not in follow.stderr


def test_json_has_no_nan(make_run) -> None:
    view = read_status(make_run({"a": rising(3), "b": rising(3)}))
    site = replace(view.sites[1], train_loss=float("nan"), scores={"mean": float("inf")})
    data = replace(view, sites=[view.sites[0], site]).to_json()
    back = json.loads(json.dumps(data, allow_nan=False))  # raises on NaN
    assert back["sites"][1]["train_loss"] is None and back["sites"][1]["scores"]["mean"] is None
    assert back["sites"][0]["scores"]["mean"] == pytest.approx(view.sites[0].scores["mean"])
