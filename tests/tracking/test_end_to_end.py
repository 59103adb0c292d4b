"""A real simulated federation with a badly annotated site, then the coordinator's tools:
status, alarms, selection, contributions, the report and its rendering in Chromium."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedseg.tracking.alarms import AlarmConfig, replay_alarms
from fedseg.tracking.selection import load_selection
from fedseg.tracking.store import RunStore
from tests.tracking.conftest import chromium

SRC = Path(__file__).resolve().parents[2] / "src"
ROUNDS = 2

PLAN = """\
name: e2e-bad-site
sites:
  site1: {{data: {d}/site1}}
  site2: {{data: {d}/site2}}
  site3: {{data: {d}/site3}}
rounds: {rounds}
min_sites: 3
round_timeout_s: 600
connect_timeout_s: 240
seed: 0
privacy: {{min_summary_cases: 1}}  # one validation case per site
network: {{base_filters: 4, depth: 2}}
train: {{lr: 0.003, patch_size: [32, 32, 32], num_workers: 0, val_roi: [32, 32, 32],
         val_overlap: 0.0, val_batch_size: 2}}
"""


def fedseg(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the CLI in its own process group, killed as a whole (engine processes included)
    if it overruns, so that no Flower process outlives the test."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "FLWR_TELEMETRY_ENABLED": "0",
           "COLUMNS": "200"}  # fmt: skip
    cmd = [sys.executable, "-m", "fedseg", *args]
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True) as p:  # fmt: skip
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            pytest.fail(f"fedseg {' '.join(args)} ran over {timeout} s:\n{err[-2000:]}")
    assert p.returncode == 0, f"fedseg {' '.join(args)}:\n{out[-3000:]}\n{err[-3000:]}"
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


@pytest.mark.slow
@pytest.mark.timeout(1500)  # minutes on an idle machine, far more on a loaded one
def test_simulated_federation_with_a_bad_site_to_report(tmp_path: Path) -> None:
    fedseg("data", "synth", "data", "--sites", "3", "--cases-per-site", "4", "--spacing", "4",
           "--bad-site", "2", "--bad-kind", "shifted", cwd=tmp_path)  # fmt: skip
    (tmp_path / "plan.yaml").write_text(PLAN.format(d=tmp_path / "data", rounds=ROUNDS))
    fedseg("simulate", "plan.yaml", "--out", "run", "--no-live", cwd=tmp_path, timeout=1200)
    run = tmp_path / "run"

    status = fedseg("status", "run", cwd=tmp_path).stdout
    assert f"state done  rounds done {ROUNDS}/{ROUNDS}" in status
    assert all(f"site{i}" in status for i in (1, 2, 3))

    # The federation stored what the alarms and contributions need.
    with RunStore(run) as store:
        rows = [r for r in store.site_rounds() if r.status == "ok"]
        assert len(rows) == 3 * ROUNDS and all(r.update_distance is not None for r in rows)
        assert {v.model_round for v in store.validation()} == set(range(ROUNDS + 1))
        # Too few rounds for the default test; a short-run setting shows the machinery.
        replay_alarms(store, AlarmConfig(min_rounds=3, skip_initial=False, min_gap=0.0))
    alarms = fedseg("alarms", "run", cwd=tmp_path).stdout
    assert "site1" not in alarms and "site3" not in alarms  # clean sites are never flagged

    fedseg("select", "run", "--triplet", "--out", "released", cwd=tmp_path)
    sel = load_selection(tmp_path / "released")
    assert sel.kind == "triplet" and all(p.is_file() for p in sel.region_files.values())
    data = json.loads((tmp_path / "released" / "selection.json").read_text())
    assert set(data["sites"]) == {"site1", "site2", "site3"}

    contrib = fedseg("contributions", "run", cwd=tmp_path).stdout
    for site in ("site1", "site2", "site3"):
        if "first-order leave-one-out" in contrib:  # from the cross-site validation
            assert re.search(rf"{site}\W+(harmful|neutral|helps)\W", contrib), contrib
        else:  # every site with ROUNDS rounds of shares
            assert re.search(rf"{site}\W+{ROUNDS}\W", contrib), contrib

    # Site-side evaluation of the initial and final models on site 1, then the report.
    for name, mr in (("initial", 0), ("final", ROUNDS)):
        fedseg("evaluate", "--model", f"run/models/round_{mr:04d}.pt", "--data", "data/site1",
               "--split", "all", "--out", f"{name}.csv", "--overlap", "0",
               cwd=tmp_path)  # fmt: skip
    fedseg("report", "run", "--case-csv", "initial.csv", "--case-csv", "final.csv",
           cwd=tmp_path)  # fmt: skip
    page = run / "report.html"
    text = page.read_text()
    n_img = len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', text))
    assert n_img == 4 + ('alt="cross-site matrix"' in text)  # the matrix: cross-site rows
    dom = chromium(page, tmp_path / "chr1", "--dump-dom")
    assert len(re.findall(r"<img[^>]+src=\"data:image/png;base64,", dom)) == n_img
    shot = tmp_path / "shot.png"
    chromium(page, tmp_path / "chr2", f"--screenshot={shot}", "--window-size=1200,4000")
    px = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    assert (px != 255).any(axis=1).mean() > 0.05
    for rgb in ((31, 119, 180), (255, 127, 14), (44, 160, 44)):
        assert (np.abs(px - np.array(rgb)).sum(axis=1) < 30).sum() > 100, rgb
