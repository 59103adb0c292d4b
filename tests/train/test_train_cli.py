"""`fedseg train` as a user runs it: a real process on a site folder with a split."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fedseg.data.cases import Case
from fedseg.model.config import NetworkConfig
from fedseg.tracking.store import RunStore
from fedseg.train.config import RecipeConfig, TrainConfig
from tests.helpers import run_fedseg


def _train_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``fedseg ARGS`` with one OpenMP thread (the training subprocess shares 2 cores)."""
    return run_fedseg(*args, env={"OMP_NUM_THREADS": "1"})


def _site_and_recipe(tmp_path: Path, site: list[Case], net: NetworkConfig,
                     train: TrainConfig) -> tuple[Path, Path]:  # fmt: skip
    """The tiny site's folder and a recipe file of the tiny network and training."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RecipeConfig(network=net, train=train).to_yaml())
    return site[0].folder.parent, recipe  # type: ignore[union-attr]


@pytest.mark.slow
def test_fedseg_train_writes_the_run_and_resumes(
    tmp_path: Path, site: list[Case], tiny_net: NetworkConfig, tiny_train: TrainConfig
) -> None:
    root, recipe = _site_and_recipe(tmp_path, site, tiny_net, tiny_train)
    out = tmp_path / "run"
    first = _train_cli("train", "--data", str(root), "--out", str(out), "--config", str(recipe),
                    "--epochs", "1", "--no-progress")  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "epoch 1/1" in first.stdout and "Dice ET" in first.stdout and "WT" in first.stdout
    for name in ("recipe.yaml", "run.sqlite", "last.pt", "best.pt", "checkpoints/last.ckpt"):
        assert (out / name).is_file(), name
    again = _train_cli("train", "--data", str(root), "--out", str(out), "--config", str(recipe))
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr
    resumed = _train_cli("train", "--resume", str(out), "--epochs", "2", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "epoch 2/2" in resumed.stdout and "epoch 1/" not in resumed.stdout
    with RunStore(out) as store:
        assert [r["status"] for r in store.rounds()] == ["done", "done"]
        sites = {v.site for v in store.validation()}
        assert sites == {root.resolve().name}
        n_val = store.site_rounds()[0].n_val
        assert n_val == 1 and store.site_rounds()[0].n_train == 4  # 4:1 split of 5 cases


def test_bad_recipe_is_one_line(tmp_path: Path, site: list[Case]) -> None:
    root = site[0].folder.parent  # type: ignore[union-attr]
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  patch_size: [30, 30, 30]\nnetwork:\n  depth: 2\n")
    res = _train_cli(
        "train", "--data", str(root), "--out", str(tmp_path / "r"), "--config", str(bad)
    )
    assert res.returncode == 2 and "multiples of 4" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_until_plateau_stops_the_run_and_is_kept_in_its_recipe(
    tmp_path: Path, site: list[Case], tiny_net: NetworkConfig, tiny_train: TrainConfig
) -> None:
    root, recipe = _site_and_recipe(tmp_path, site, tiny_net, tiny_train)
    out = tmp_path / "run"
    # no gain can exceed 1: epoch 1 stays the best, epoch 2 is the one round without
    res = _train_cli("train", "--data", str(root), "--out", str(out), "--config", str(recipe),
                     "--epochs", "6", "--until-plateau", "1", "--min-delta", "1",
                     "--no-progress")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "stopped after epoch 2 of 6" in res.stdout and "epoch 3/6" not in res.stdout
    kept = RecipeConfig.from_yaml(out / "recipe.yaml").train.plateau
    assert (kept.rounds, kept.min_delta) == (1, 1.0)
    again = _train_cli("train", "--resume", str(out), "--until-plateau", "3")
    assert again.returncode == 2 and "drop --out, --config and --until-plateau" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
