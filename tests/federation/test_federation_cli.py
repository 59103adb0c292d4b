"""`fedseg plan init`, and the one-line errors of `fedseg simulate` / `fedseg resume`."""

from __future__ import annotations

from pathlib import Path

from fedseg.plan import load_plan
from tests.helpers import run_fedseg


def test_plan_init_writes_a_loadable_commented_plan(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    plan = tmp_path / "plan.yaml"
    r = run_fedseg("plan", "init", str(plan), "--sites", str(a), "--sites", str(b))
    assert r.returncode == 0, r.stderr
    assert "# " in plan.read_text()
    assert {k: v.data for k, v in load_plan(plan).sites.items()} == {"a": a, "b": b}
    # the lr schedule is written out where a user sees it (today's constant lr)
    assert "lr_schedule: constant" in plan.read_text()
    assert load_plan(plan).train.lr_schedule.kind == "constant"
    again = run_fedseg("plan", "init", str(plan))
    assert again.returncode == 2 and "--force" in again.stderr


def test_simulate_and_resume_errors_are_one_line(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"sites:\n  a: {{data: {tmp_path / 'missing'}}}\n")
    r = run_fedseg("simulate", str(plan), "--out", str(tmp_path / "run"))
    assert r.returncode == 2
    assert "data folder" in r.stderr and "not found" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    (tmp_path / "missing").mkdir()
    r = run_fedseg("simulate", str(plan), "--out", str(tmp_path / "full"))
    assert r.returncode == 2 and "fedseg resume" in r.stderr
    r = run_fedseg("resume", str(tmp_path / "full"))
    assert r.returncode == 2 and "not a federation run folder" in r.stderr


def test_simulate_refuses_a_gpu_the_plan_asks_for_on_this_cpu_machine(tmp_path: Path) -> None:
    """The plan's ``train.compute`` is the sites' default: on a machine without it the run
    stops in one line naming the override that fixes it (``--device cpu``)."""
    (tmp_path / "a").mkdir()
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"sites:\n  a: {{data: {tmp_path / 'a'}}}\ntrain: {{compute: {{device: 'cuda:1'}}}}\n"
    )
    r = run_fedseg("simulate", str(plan), "--out", str(tmp_path / "run"), "--no-live")
    assert r.returncode == 2, r.stderr
    assert "cuda:1" in r.stderr and "--device cpu" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # an override this machine cannot honour: refused before the run folder is made
    r = run_fedseg("simulate", str(plan), "--out", str(tmp_path / "run2"), "--device", "cuda:0")
    assert r.returncode == 2 and "cuda:0" in r.stderr and not (tmp_path / "run2").exists()
