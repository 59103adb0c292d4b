"""Secure aggregation through the real engine (``fedseg simulate``: a SuperLink, one
SuperNode per site, the sites' ClientApp processes answering the key, share and unmask
queries with credentials from the run's throwaway CA)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedseg.federation.commands.simulate import simulate
from fedseg.federation.security.pki import SIMULATED_PKI
from fedseg.model.model_file import load_model
from fedseg.plan import save_plan
from fedseg.run_folder import FLWR_HOME, RunStatus, model_path
from fedseg.tracking.store import RunStore
from tests.federation.fed_helpers import SITES, float_keys, tiny_plan

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

#: clip far above a tiny network's update (no clipping: the sum equals the plain one), 64-bit
#: words so that the fixed-point bound stays ~1e-9 with that range
SECURE = {"min_summary_cases": 1, "secure_aggregation": True,
          "secagg": {"clip_norm": 1000.0, "modulus_bits": 64}}  # fmt: skip


def _run(tmp_path: Path, name: str, sites: dict[str, Path], **plan: object) -> Path:
    plan_file = save_plan(tmp_path / f"{name}.yaml", tiny_plan(
        sites, retention={"keep_every": 1}, **plan))  # fmt: skip
    run = tmp_path / name
    res = simulate(plan_file, run, live=False)
    assert res.run_dir == run
    return run


def test_secure_rounds_equal_the_plain_rounds(tmp_path: Path, tiny_sites: dict[str, Path]) -> None:
    plain = _run(tmp_path, "plain", tiny_sites)
    again = _run(tmp_path, "again", tiny_sites)
    secure = _run(tmp_path, "secure", tiny_sites, privacy=SECURE)
    with RunStore(secure) as store:
        assert store.meta.status() == RunStatus.DONE
        assert [r["status"] for r in store.rounds()] == ["done", "done"]
        srs = store.site_rounds()
        assert {(s.round, s.site) for s in srs} == {(r, s) for r in (1, 2) for s in SITES}
        assert all(s.status == "ok" for s in srs)
        # the aggregator saw no single site's update: no norm, no distance recorded
        assert all(s.update_norm is None and s.update_distance is None for s in srs)
        logs = [m for _, _, m in store.events()]
    for rnd in (1, 2):
        assert any(f"round {rnd}: secure aggregation: unmasked the sum of 3 site(s)" in m
                   for m in logs)  # fmt: skip
    # the simulated sites signed with certificates of the run's throwaway CA
    assert sorted(
        p.name for p in (secure / FLWR_HOME / SIMULATED_PKI / "sites").iterdir()
    ) == sorted(SITES)
    # is local training deterministic across runs? (the same plan twice, in the clear)
    deterministic = all(
        np.array_equal(load_model(model_path(plain, r)).weights[k],
                       load_model(model_path(again, r)).weights[k])
        for r in (1, 2) for k in float_keys(load_model(model_path(plain, r)).weights)
    )  # fmt: skip
    # round 1 starts from the same model: the secure mean equals the plain one within the
    # fixed-point bound (~1e-9 here) plus float32 rounding of the model
    a, b = load_model(model_path(plain, 1)).weights, load_model(model_path(secure, 1)).weights
    for k in float_keys(a):
        tol = 1e-8 + 2 * np.finfo(np.float32).eps * float(np.abs(a[k]).max())
        if deterministic:
            np.testing.assert_allclose(b[k], a[k], rtol=0, atol=tol)
    a2, b2 = load_model(model_path(plain, 2)).weights, load_model(model_path(secure, 2)).weights
    if deterministic:  # round 2 trains from models that differ by float rounding only
        for k in float_keys(a2):
            np.testing.assert_allclose(b2[k], a2[k], rtol=1e-3, atol=1e-4)
    assert deterministic, "local training is not deterministic across runs: compare by hand"
