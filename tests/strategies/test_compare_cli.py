"""`fedseg compare` as a user runs it: one-line errors, and one small end-to-end run."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.helpers import run_fedseg


@pytest.mark.parametrize(
    ("args", "msg"),
    [(["fedsgd"], "not a plan file nor a strategy"),
     (["krum:f=-1"], "strategy.params.f"),
     (["fedavg", "--poison", "site9:scale=3"], "--poison names site 'site9'"),
     (["fedavg", "--poison", "site1:flip"], "SITE:scale=FACTOR, SITE:scramble"),
     (["cyclic:epochs_per_visit=2", "--budget", "3"], "whole number of cycles"),
     (["fedavg", "--device", "cuda:2"], "use --device cpu or --device auto")],
)  # fmt: skip
def test_errors_are_one_line(tmp_path: Path, four_sites: dict[str, Path], args: list[str],
                             msg: str) -> None:  # fmt: skip
    r = run_fedseg(
        "compare", *args, "--data", str(four_sites["site1"]), "--out", str(tmp_path / "o")
    )
    assert r.returncode == 2, r.stderr
    assert msg in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_compare_end_to_end_with_a_poisoned_site(tmp_path: Path,
                                                 four_sites: dict[str, Path]) -> None:  # fmt: skip
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "network: {base_filters: 4, depth: 2}\n"
        "train: {patch_size: [16, 16, 16], val_roi: [32, 32, 32], val_overlap: 0.0,\n"
        "        sampler: tumor, num_workers: 0, lr: 0.001, cache_mb: 64}\n"
    )
    out = tmp_path / "cmp"
    r = run_fedseg(
        "compare", "fedavg", "median", "single-pass:validate_all=false",
        "--data", str(four_sites["site1"]), "--data", str(four_sites["site2"]),
        "--data", str(four_sites["site3"]), "--holdout", str(four_sites["site4"]),
        "--budget", "1", "--recipe", str(recipe),
        "--poison", "site2:scale=50", "--no-bounds", "--out", str(out), "--precision", "bf16",
        timeout=850,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    # this machine's --precision reached every site of every plan and the baselines
    from fedseg.run_folder import ComputeUsed
    from fedseg.tracking.store import RunStore

    used = ComputeUsed(device="cpu", precision="bf16")
    for run in ("fedavg", "central", "single-site1"):
        with RunStore(out / "runs" / run) as store:
            done = [sr for sr in store.site_rounds() if sr.status == "ok"]
            assert done and all(sr.compute == used for sr in done), run
    rows = {row["run"]: row for row in csv.DictReader((out / "results.csv").open())}
    assert set(rows) == {"fedavg", "median", "single-pass_validate_all=false", "central",
                         "single-site1", "single-site2", "single-site3"}  # fmt: skip
    for row in rows.values():
        assert 0.0 <= float(row["final_val_mean"]) <= 1.0
        assert row["final_holdout_mean"] != ""
        assert float(row["epochs_per_site"]) == 1.0
    assert float(rows["central"]["share_of_central"]) == pytest.approx(1.0)
    assert (out / "curves.png").stat().st_size > 10_000
    assert "| fedavg | plan | 1 |" in (out / "results.md").read_text()
    per_site = list(csv.DictReader((out / "per_site.csv").open()))
    assert {p["site"] for p in per_site} == {"site1", "site2", "site3", "site4 (held out)"}
    # without the bounds, the x50 update of site2 went into FedAvg's model; the median of 3
    # left it out
    import numpy as np

    from fedseg.model.model_file import load_model
    from fedseg.run_folder import model_path

    def drift(run: str) -> float:
        w0 = load_model(model_path(out / "runs" / run, 0)).weights
        w1 = load_model(model_path(out / "runs" / run, 1)).weights
        return max(float(np.abs(w1[k] - w0[k]).max()) for k in w0 if w0[k].dtype.kind == "f")

    assert drift("fedavg") > 3 * drift("median")
