"""`fedseg compare --resume`: a comparison that died goes on from its folder, each run after
its last finished round; the rounds it had finished are not trained again."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedseg.tracking.store import RunStore
from tests.helpers import fedseg_env, run_fedseg

TINY_RECIPE = (
    "network: {base_filters: 4, depth: 2}\n"
    "train: {patch_size: [16, 16, 16], val_roi: [32, 32, 32], val_overlap: 0.0,\n"
    "        sampler: tumor, num_workers: 0, lr: 0.001, cache_mb: 64}\n"
)


def _one_line_error(r: subprocess.CompletedProcess[str], msg: str) -> None:
    assert r.returncode == 2, r.stderr
    assert msg in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_resume_errors_are_one_line(tmp_path: Path, four_sites: dict[str, Path]) -> None:
    _one_line_error(run_fedseg("compare", "--resume", tmp_path), "no comparison to resume")
    (tmp_path / "compare.yaml").write_text("plans: 3\n")
    _one_line_error(run_fedseg("compare", "--resume", tmp_path), "not a comparison's settings")
    r = run_fedseg("compare", "fedavg", "--budget", "2", "--resume", tmp_path)
    _one_line_error(r, "leave out --budget, PLANS")
    # a new comparison into a comparison's folder points to --resume
    r = run_fedseg("compare", "fedavg", "--data", four_sites["site1"], "--out", tmp_path)
    _one_line_error(r, f"continue it with --resume {tmp_path}")
    _one_line_error(run_fedseg("compare", "fedavg"), "name the plans, at least one --data")


def _done_rounds(run: Path) -> dict[int, float]:
    """Finished round -> its start time, from the run's store."""
    if not (run / "run.sqlite").is_file():
        return {}
    with RunStore(run) as store:
        return {r["round"]: r["started"] for r in store.rounds() if r["status"] == "done"}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_killed_comparison_resumes_where_it_stopped(
    tmp_path: Path, four_sites: dict[str, Path]
) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(TINY_RECIPE)
    out = tmp_path / "cmp"
    cmd = [sys.executable, "-m", "fedseg", "compare", "fedavg",
           "--data", str(four_sites["site1"]), "--data", str(four_sites["site2"]),
           "--holdout", str(four_sites["site4"]), "--budget", "3", "--recipe", str(recipe),
           "--no-single-sites", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=fedseg_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    fed = out / "runs" / "fedavg"
    deadline = time.monotonic() + 600
    try:
        while 1 not in _done_rounds(fed):
            assert proc.poll() is None, "compare ended before its first round was done"
            assert time.monotonic() < deadline, "no round done in 600 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # dies mid-run, as a killed job does
        proc.wait()
    before = _done_rounds(fed)
    assert max(before) < 3 and not (out / "results.csv").exists()  # it really died mid-run

    r = run_fedseg("compare", "--resume", out, timeout=850)
    assert r.returncode == 0, r.stderr[-2000:]
    after = _done_rounds(fed)
    assert set(after) >= {1, 2, 3}
    assert all(after[m] == t for m, t in before.items())  # finished rounds were kept, not redone
    assert set(_done_rounds(out / "runs" / "central")) == {1, 2, 3}
    rows = {row["run"]: row for row in csv.DictReader((out / "results.csv").open())}
    assert set(rows) == {"fedavg", "central"}
    assert float(rows["fedavg"]["epochs_per_site"]) == 3.0
    assert rows["fedavg"]["final_holdout_mean"] != ""
    # the wall counts every finished round once, the killed session's too
    with RunStore(fed) as store:
        walls = sum(row["wall_s"] for row in store.rounds() if row["status"] == "done")
    assert float(rows["fedavg"]["wall_s"]) == pytest.approx(walls, abs=0.1)
    # a finished comparison resumed again trains nothing and writes the same results
    again = run_fedseg("compare", "--resume", out, timeout=850)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _done_rounds(fed) == after
    assert {row["run"] for row in csv.DictReader((out / "results.csv").open())} == set(rows)
