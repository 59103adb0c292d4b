from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedseg.cli.main import _register, app
from fedseg.errors import FedsegError
from fedseg.tracking.store import RunStore
from tests.tracking.conftest import noisy, rising, write_plan

_register()
runner = CliRunner()


def test_select_cli_singlet_and_flag_errors(make_run, tmp_path: Path) -> None:
    run = make_run({"a": [0.2, 0.5, 0.7, 0.6], "b": [0.2, 0.4, 0.8, 0.6]}, checkpoints=True)
    res = runner.invoke(app, ["select", str(run), "--singlet", "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    sel = json.loads((tmp_path / "s" / "selection.json").read_text())
    assert sel["kind"] == "singlet" and sel["regions"]["WT"]["model_round"] == 2
    assert (tmp_path / "s" / "model_round0002.pt").is_file()
    res = runner.invoke(app, ["select", str(run), "--singlet", "--triplet", "--out", "x"])
    assert isinstance(res.exception, FedsegError)


def test_alarms_replay_and_contributions_cli(make_run) -> None:
    base = rising(9)
    run = make_run(
        {"a": noisy(base, 0.01, 1), "b": noisy(base, 0.01, 2), "bad": [v - 0.2 for v in base]}
    )
    res = runner.invoke(app, ["alarms", str(run)], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "no alarms" in res.output
    res = runner.invoke(app, ["alarms", str(run), "--replay"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "bad" in res.output and "below_federation" in res.output and " 6 " in res.output
    with RunStore(run) as store:
        assert {a.site for a in store.alarms()} == {"bad"}
    res = runner.invoke(app, ["alarms", str(run)], env={"COLUMNS": "200"})
    assert "below_federation" in res.output
    res = runner.invoke(app, ["contributions", str(run)], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and all(s in res.output for s in ("a", "b", "bad"))


def test_plan_alarm_settings_are_used_by_replay(make_run) -> None:
    base = rising(9)
    run = make_run({"a": base, "b": noisy(base, 0.01, 2), "bad": [v - 0.2 for v in base]})
    write_plan(run, ["a", "b", "bad"], "rounds: 8\nalarms:\n  min_gap: 0.3\n")
    res = runner.invoke(app, ["alarms", str(run), "--replay"])
    assert res.exit_code == 0 and "no alarms" in res.output
    write_plan(run, ["a", "b", "bad"], "alarms:\n  min_gapp: 0.3\n")
    res = runner.invoke(app, ["alarms", str(run), "--replay"])
    assert isinstance(res.exception, FedsegError) and "min_gapp" in str(res.exception)


@pytest.mark.parametrize("verb", ["status", "report", "contributions", "alarms"])
def test_verbs_refuse_a_folder_without_a_run(verb: str, tmp_path: Path) -> None:
    res = runner.invoke(app, [verb, str(tmp_path)])
    assert isinstance(res.exception, FedsegError) and "no run store" in str(res.exception)


def test_contributions_cli_shows_the_cross_site_estimate_or_says_what_it_falls_back_to(
    tmp_path: Path,
) -> None:
    from tests.tracking.cross_fixtures import build_cross_run
    from tests.tracking.test_cross_alarms import federation

    run = build_cross_run(tmp_path / "run", federation("eroded"), seed=0)
    res = runner.invoke(app, ["contributions", str(run)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if " harmful " in ln or " neutral " in ln]
    assert [w for w in lines[0].split() if w != "│"][:2] == ["bad", "harmful"]
    assert "first-order leave-one-out" in res.output and "ranked by its worst region" in res.output
    plain = build_cross_run(tmp_path / "plain", federation("eroded"), seed=0, cross=False)
    res = runner.invoke(app, ["contributions", str(plain)], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "no cross-site evidence in this run" in res.output
    assert "share" in res.output
