"""Centralized runs: run folder, store rows, model files, resume == uninterrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fedseg.data.cases import Case
from fedseg.data.labels import REGIONS
from fedseg.errors import FedsegError
from fedseg.federation.commands.central_training import (
    CHECKPOINT,
    SiteData,
    TrainingState,
    load_state,
    run_training,
    save_state,
)
from fedseg.model.compute import ComputeOverrides
from fedseg.model.config import NetworkConfig
from fedseg.model.metrics import METRICS
from fedseg.model.model_file import load_model
from fedseg.model.weights import load_arrays, unnest
from fedseg.run_folder import ComputeUsed
from fedseg.tracking.store import RunStore
from fedseg.train.config import RecipeConfig, TrainConfig


@pytest.fixture
def recipe(tiny_net: NetworkConfig, tiny_train: TrainConfig) -> RecipeConfig:
    return RecipeConfig(network=tiny_net, train=tiny_train.model_copy(update={"seed": 4}))


def _sites(site: list[Case]) -> list[SiteData]:
    return [SiteData("a", site[:2], site[4:]), SiteData("b", site[2:4], site[4:])]


def test_run_folder_store_rows_and_model_files(
    tmp_path: Path, site: list[Case], recipe: RecipeConfig
) -> None:
    out = tmp_path / "run"
    bf16 = ComputeOverrides(precision="bf16")  # this machine's choice (`fedseg train --precision`)
    res = run_training(out, _sites(site), 2, recipe=recipe, progress=False, compute=bf16)
    assert res.epochs == 2 and res.best_epoch in (1, 2)
    for name in ("recipe.yaml", "run.sqlite", "last.pt", "best.pt", str(CHECKPOINT)):
        assert (out / name).is_file(), name
    assert RecipeConfig.from_yaml(out / "recipe.yaml") == recipe  # the recipe, not the machine
    assert recipe.train.compute.precision == "fp32"
    assert not list(out.rglob("*.tmp"))
    with RunStore(out) as store:
        assert [(r["round"], r["status"]) for r in store.rounds()] == [(1, "done"), (2, "done")]
        srs = store.site_rounds()
        assert [(s.round, s.site, s.n_train, s.n_val) for s in srs] == [
            (1, "central", 4, 2),
            (2, "central", 4, 2),
        ]
        assert all(np.isfinite(s.train_loss) and s.wall_s > 0 for s in srs)
        assert srs[0].extra is not None and srs[0].extra["steps"] == 4
        # what each epoch computed with, as a federation records it per site and round
        used = ComputeUsed(device="cpu", precision="bf16")
        assert [s.compute for s in srs] == [used, used] and store.meta.compute() == used
        rows = store.case_metrics(model_round=2)
        assert len(rows) == 2 * 1 * len(REGIONS) * len(METRICS)  # sites a, b x 1 val case
        val = store.validation(metric="dice", region="WT")
        assert {(v.model_round, v.site) for v in val} == {
            (m, s) for m in (1, 2) for s in ("a", "b", "central")
        }
        assert store.meta.cases()["a"]["train"] == [c.case_id for c in site[:2]]
        ckpts = store.checkpoints()
    # each row names the file holding that epoch's weights (select exports what it picks)
    assert set(ckpts) == {2, res.best_epoch}
    assert all(load_model(path).meta["epoch"] == r for r, path in ckpts.items())
    best, last = load_model(out / "best.pt"), load_model(out / "last.pt")
    assert last.meta["epoch"] == 2 and best.meta["epoch"] == res.best_epoch
    assert best.network == recipe.network and last.roi == recipe.train.val_roi
    state = load_state(out / CHECKPOINT)
    assert state.epoch == 2 and state.optimizer_state is not None
    for k, v in last.weights.items():
        np.testing.assert_array_equal(state.weights[k], v)  # type: ignore[index]


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(
    tmp_path: Path, site: list[Case], recipe: RecipeConfig
) -> None:
    sites = _sites(site)[:1]
    run_training(tmp_path / "straight", sites, 2, recipe=recipe, progress=False)
    run_training(tmp_path / "cut", sites, 1, recipe=recipe, progress=False)
    # An interrupted epoch: its round was started and some rows written, no checkpoint.
    with RunStore(tmp_path / "cut") as store:
        store.start_round(2)
        store.record_case_metrics(2, "a", "junk", {"WT": {"dice": 0.0}})
    run_training(tmp_path / "cut", sites, 2, resume=True, progress=False)
    a, b = load_state(tmp_path / "straight" / CHECKPOINT), load_state(tmp_path / "cut" / CHECKPOINT)
    assert a.epoch == b.epoch == 2
    for k in a.weights:  # type: ignore[union-attr]
        np.testing.assert_allclose(b.weights[k], a.weights[k], rtol=0, atol=1e-6)  # type: ignore[index]
    for k in a.optimizer_state:  # type: ignore[union-attr]
        np.testing.assert_allclose(b.optimizer_state[k], a.optimizer_state[k], rtol=0, atol=1e-6)  # type: ignore[index]
    with RunStore(tmp_path / "cut") as store:
        assert [r["status"] for r in store.rounds()] == ["done"] * 2
        assert not [r for r in store.case_metrics() if r[2] == "junk"]


def test_refuses_to_overwrite_a_run_or_resume_on_other_data(
    tmp_path: Path, site: list[Case], recipe: RecipeConfig
) -> None:
    out = tmp_path / "run"
    run_training(out, _sites(site)[:1], 1, recipe=recipe, progress=False)
    with pytest.raises(FedsegError, match="--resume"):
        run_training(out, _sites(site)[:1], 1, recipe=recipe, progress=False)
    with pytest.raises(FedsegError, match="splits differ"):
        run_training(out, _sites(site), 2, resume=True, progress=False)
    with pytest.raises(FedsegError, match="no run to resume"):
        run_training(tmp_path / "nothing", _sites(site), 2, resume=True, progress=False)
    # a GPU this machine lacks: one line naming the fix, nothing written
    with pytest.raises(FedsegError, match=r"cuda:3 .*use --device cpu") as info:
        run_training(tmp_path / "gpu", _sites(site), 1, recipe=recipe, progress=False,
                     compute=ComputeOverrides(device="cuda:3"))  # fmt: skip
    assert "\n" not in str(info.value) and not (tmp_path / "gpu").exists()


def test_checkpoint_is_one_npz_that_round_trips_exactly(tmp_path: Path) -> None:
    weights = {"conv.weight": np.random.default_rng(0).random((2, 3), np.float32),
               "bn.num_batches_tracked": np.array(7, np.int64)}  # fmt: skip
    opt = {"step": np.array(12, np.int64), "exp_avg/conv.weight": weights["conv.weight"] / 3,
           "exp_avg_sq/conv.weight": weights["conv.weight"] ** 2}  # fmt: skip
    state = TrainingState(3, weights, opt, seed=9, best_score=0.123456789, best_epoch=2)
    path = tmp_path / CHECKPOINT
    save_state(path, state)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left
    raw = load_arrays(path)  # the one npz format: the optimizer part as the federation's
    assert unnest("optimizer", raw).keys() == opt.keys() and raw["optimizer/step"].shape == ()
    back = load_state(path)
    assert (back.epoch, back.seed, back.best_score, back.best_epoch) == (3, 9, 0.123456789, 2)
    for want, got in ((weights, back.weights), (opt, back.optimizer_state)):
        assert got is not None and list(got) == list(want)
        for k, v in want.items():
            assert got[k].dtype == v.dtype and got[k].shape == v.shape
            np.testing.assert_array_equal(got[k], v)
    fresh = TrainingState(0, None, None, seed=1)
    save_state(path, fresh)
    again = load_state(path)
    assert again.weights is None and again.optimizer_state is None
    assert again.best_score == -np.inf and again.epoch == 0
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(FedsegError, match="unreadable checkpoint"):
        load_state(path)


KILL_SCRIPT = """
import sys
import time
from pathlib import Path
from fedseg.data.cases import discover_cases
from fedseg.train.config import RecipeConfig
import fedseg.federation.commands.central_training as central
from fedseg.federation.commands.central_training import SiteData, run_training
cases = discover_cases(Path(sys.argv[1]))
resume = sys.argv[4] == "resume"
if sys.argv[4] == "cut":  # epoch 2 has started (its round row): say so, wait to be killed
    fit = central.fit_epoch
    def fit_or_hang(*args, **kwargs):
        if kwargs["epoch"] == 1:
            (Path(sys.argv[2]) / "in_epoch_2").touch()
            time.sleep(600)
        return fit(*args, **kwargs)
    central.fit_epoch = fit_or_hang
recipe = None if resume else RecipeConfig.from_yaml(Path(sys.argv[3]))
run_training(Path(sys.argv[2]), [SiteData("s", cases[:4], cases[4:])], 2, recipe=recipe,
             resume=resume, progress=False)
"""


@pytest.mark.slow
def test_kill_9_in_the_middle_of_an_epoch_then_resume(
    tmp_path: Path, site: list[Case], recipe: RecipeConfig
) -> None:
    root = site[0].folder.parent  # type: ignore[union-attr]
    (tmp_path / "recipe.yaml").write_text(recipe.to_yaml())
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    src = str(Path(__file__).parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}

    def launch(out: str, mode: str) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, str(script), str(root), str(tmp_path / out)]
        return subprocess.Popen([*cmd, str(tmp_path / "recipe.yaml"), mode], env=env)

    assert launch("straight", "new").wait(timeout=300) == 0
    # epoch 2 hangs once under way: the kill lands inside it, however fast the epochs are
    # (a poll of the store for round 2 raced a tiny epoch to its checkpoint)
    proc = launch("cut", "cut")
    deadline = time.time() + 300
    while time.time() < deadline and not (tmp_path / "cut" / "in_epoch_2").exists():
        assert proc.poll() is None, "the cut run ended before epoch 2"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert load_state(tmp_path / "cut" / CHECKPOINT).epoch == 1
    assert launch("cut", "resume").wait(timeout=300) == 0
    a = load_state(tmp_path / "straight" / CHECKPOINT)
    b = load_state(tmp_path / "cut" / CHECKPOINT)
    assert a.epoch == b.epoch == 2
    for k in a.weights:  # type: ignore[union-attr]
        np.testing.assert_allclose(b.weights[k], a.weights[k], rtol=0, atol=1e-6)  # type: ignore[index]
