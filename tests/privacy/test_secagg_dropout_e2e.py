"""Secure aggregation with a site killed mid-round, through the real engine (``fedseg
simulate``: SuperLink, one SuperNode per site). Four sites, one round; to kill the victim
(site1) after its masked update arrived and before the unmask query, the test stops the
other sites' processes (SIGSTOP) while the victim trains and continues them after the kill.

- killed (SIGKILL of its whole process group) after its masked update arrived, before the
  unmask query: it stays in the sum (its self-mask seed is rebuilt from the others' shares;
  design §0: excluding it then would need both of its secrets), and the model equals the
  plain 4-site round's within the fixed-point bound;
- killed while training (before its masked update): it is left out, its mask key rebuilt,
  and the model equals the plain round of the other three (the exact sum of the others).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fedseg.data.synth.generate import make_tiny_dataset
from fedseg.federation.commands.simulate import simulate
from fedseg.federation.engine.launcher import PIDS
from fedseg.model.model_file import load_model
from fedseg.plan import save_plan
from fedseg.run_folder import FLWR_HOME, STORE_FILE, SiteActivity, model_path
from fedseg.tracking.store import RunStore
from tests.federation.fed_helpers import float_keys, tiny_plan

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

SECURE = {"min_summary_cases": 1, "secure_aggregation": True,
          "secagg": {"clip_norm": 1000.0, "modulus_bits": 64}}  # fmt: skip
VICTIM = "site1"


@pytest.fixture(scope="module")
def four_sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """4 sites x 8 cases; the victim keeps 3."""
    root = tmp_path_factory.mktemp("four")
    sites = make_tiny_dataset(root, sites=4, cases_per_site=8)
    for case in sorted(sites[VICTIM])[3:]:
        shutil.rmtree(case)
    (root / VICTIM / "fedseg_split.json").unlink(missing_ok=True)
    return {s: root / s for s in sites}


def _plan(tmp_path: Path, name: str, sites: dict[str, Path], **kw: object) -> Path:
    return save_plan(tmp_path / f"{name}.yaml", tiny_plan(
        sites, rounds=1, min_sites=3, round_timeout_s=150, **kw))  # fmt: skip


def _groups(run: Path) -> dict[str, int]:
    """Site name -> the process group id of its SuperNode (the launcher's pid file)."""
    pids = json.loads((run / FLWR_HOME / PIDS).read_text())
    return {p["role"].removeprefix("site:"): p["pid"] for p in pids
            if p["role"].startswith("site:")}  # fmt: skip


def _kill_when(run: Path, state: SiteActivity, hold_others: bool) -> threading.Thread:
    """Kill the victim's site (its process group) once the live state shows it in
    ``state``. With ``hold_others`` the other sites are stopped (SIGSTOP) as soon as the
    training phase starts and continued after the kill, so the victim's reply is the only
    one the coordinator can hold when it dies, however busy the machine (no race)."""

    def watch() -> None:
        end = time.monotonic() + 900
        held: list[int] = []
        try:
            while time.monotonic() < end:
                time.sleep(0.05)
                if not (run / STORE_FILE).is_file():  # the run folder is not made yet
                    continue
                try:
                    with RunStore(run) as store:
                        live = store.meta.live()
                    groups = _groups(run)
                except Exception:
                    continue
                if live is None or live.round != 1:
                    continue
                if hold_others and not held and live.sites.get(VICTIM) == SiteActivity.TRAINING:
                    held = [g for s, g in groups.items() if s != VICTIM]
                    for g in held:
                        os.killpg(g, signal.SIGSTOP)
                if live.sites.get(VICTIM) != state:
                    continue
                if hold_others and not held:
                    raise AssertionError("the victim finished before the others were held")
                os.killpg(groups[VICTIM], signal.SIGKILL)
                return
        finally:
            for g in held:
                os.killpg(g, signal.SIGCONT)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def _close(a: Path, b: Path, tol: float) -> None:
    wa, wb = load_model(model_path(a, 1)).weights, load_model(model_path(b, 1)).weights
    for k in float_keys(wa):
        f32 = 2 * np.finfo(np.float32).eps * float(np.abs(wa[k]).max())
        np.testing.assert_allclose(wb[k], wa[k], rtol=0, atol=tol + f32)


def _events(run: Path) -> list[str]:
    with RunStore(run) as store:
        return [m for _, _, m in store.events()]


def test_killed_after_its_masked_update_stays_in_the_sum(tmp_path, four_sites):
    plain = tmp_path / "plain"
    simulate(_plan(tmp_path, "plain", four_sites), plain, live=False)
    secure = tmp_path / "secure"
    killer = _kill_when(secure, SiteActivity.DONE, hold_others=True)
    simulate(_plan(tmp_path, "secure", four_sites, privacy=SECURE), secure, live=False)
    killer.join(timeout=5)
    logs = _events(secure)
    line = next(m for m in logs if "unmasked the sum" in m)
    assert "of 4 site(s)" in line and "dropped after the key stages: none" in line
    assert any(f"site {VICTIM} failed secagg_unmask" in m for m in logs)  # it was dead
    _close(plain, secure, 1e-8)


def test_killed_before_its_masked_update_is_left_out(tmp_path, four_sites):
    others = {s: p for s, p in four_sites.items() if s != VICTIM}
    plain = tmp_path / "plain3"
    simulate(_plan(tmp_path, "plain3", others), plain, live=False)
    secure = tmp_path / "secure"
    killer = _kill_when(secure, SiteActivity.TRAINING, hold_others=False)
    simulate(_plan(tmp_path, "secure", four_sites, privacy=SECURE), secure, live=False)
    killer.join(timeout=5)
    line = next(m for m in _events(secure) if "unmasked the sum" in m)
    assert "of 3 site(s)" in line and f"dropped after the key stages: {VICTIM}" in line
    _close(plain, secure, 1e-8)  # the exact sum of the other three, within the bound
