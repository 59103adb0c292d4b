"""Site-level DP through a real simulated federation (``fedseg simulate``: SuperLink,
SuperNodes, site processes): 3 tiny sites, 2 rounds; the ledger in the store, ε in
``fedseg status`` and in the report, no single update norm kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fedseg.privacy.accounting import epsilon, noise_for_budget
from fedseg.tracking.store import RunStore

SRC = Path(__file__).resolve().parents[2] / "src"
ROUNDS = 2

PLAN = """\
name: e2e-site-dp
sites:
  site1: {{data: {d}/site1}}
  site2: {{data: {d}/site2}}
  site3: {{data: {d}/site3}}
rounds: {rounds}
min_sites: 3
round_timeout_s: 600
connect_timeout_s: 240
seed: 0
privacy:
  min_summary_cases: 1  # one validation case per site
  dp: {{level: site, epsilon: 8.0, delta: 1.0e-5, clip_norm: 0.5}}
bounds: {{update_norm_ratio: null, reject_norm_ratio: null}}
network: {{base_filters: 4, depth: 2}}
train: {{lr: 0.003, patch_size: [16, 16, 16], num_workers: 0, val_roi: [32, 32, 32],
         val_overlap: 0.0, val_batch_size: 2}}
"""


def fedseg(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process group, killed as a whole if it overruns."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "FLWR_TELEMETRY_ENABLED": "0",
           "COLUMNS": "200", "PYTHONIOENCODING": "utf-8"}  # fmt: skip
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
@pytest.mark.timeout(1500)
def test_site_level_dp_in_a_simulated_federation(tmp_path: Path) -> None:
    fedseg("data", "synth", "data", "--sites", "3", "--cases-per-site", "3", "--spacing", "4",
           cwd=tmp_path)  # fmt: skip
    (tmp_path / "plan.yaml").write_text(PLAN.format(d=tmp_path / "data", rounds=ROUNDS))
    fedseg("simulate", "plan.yaml", "--out", "run", "--no-live", cwd=tmp_path, timeout=1200)
    run = tmp_path / "run"

    sigma = noise_for_budget(8.0, 1e-5, ROUNDS)
    with RunStore(run) as store:
        ledger = store.privacy_ledger()
        rows = [r for r in store.site_rounds() if r.status == "ok"]
    assert [(r, s, p.steps) for r, s, p in ledger] == [(1, "*", 1), (2, "*", 2)]
    assert all(p.level == "site" and p.sigma == pytest.approx(sigma) and p.clip_norm == 0.5
               for _, _, p in ledger)  # fmt: skip
    assert ledger[-1][2].epsilon == pytest.approx(epsilon(sigma, ROUNDS)) and (
        ledger[-1][2].epsilon <= 8.0
    )
    assert len(rows) == 3 * ROUNDS and all(r.update_norm is None for r in rows)

    status = fedseg("status", "run", cwd=tmp_path).stdout
    assert "privacy: site-level DP" in status
    assert f"ε spent: every site {ledger[-1][2].epsilon:.3g} (round {ROUNDS}) of 8" in status

    fedseg("report", "run", "--out", "report.html", cwd=tmp_path)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "id='privacy'" in page or 'id="privacy"' in page
    assert "privacy epsilon per round" in page and "single site updates" in page

    contrib = fedseg("contributions", "run", cwd=tmp_path).stdout
    assert "site contributions from updates are not available" in contrib
