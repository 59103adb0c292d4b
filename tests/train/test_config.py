"""TrainConfig / RecipeConfig: FeTS defaults, the CPU preset, YAML round trip, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fedseg.errors import FedsegError
from fedseg.model.config import NetworkConfig
from fedseg.train.config import RecipeConfig, TrainConfig, check_shapes


def test_defaults_are_the_fets_recipe() -> None:
    t = TrainConfig()
    assert (t.lr, t.patch_size, t.patches_per_case, t.batch_size) == (5e-5, (128,) * 3, 1, 1)
    a = t.augment
    assert (a.noise_sigma, a.noise_p, a.rot90_p, a.rot180_p, a.flip_p) == (0.1, 0.2, 0.5, 0.5, 1)
    check_shapes(NetworkConfig(), t)  # 128 is a multiple of 2 ** 4


def test_cpu_preset_is_small_and_valid() -> None:
    r = RecipeConfig.cpu()
    assert max(r.train.patch_size) <= 64 and r.network.base_filters < 30
    assert TrainConfig.cpu(lr=0.1).lr == 0.1


def test_yaml_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    r = RecipeConfig.cpu()
    path.write_text(r.to_yaml())
    assert RecipeConfig.from_yaml(path) == r
    path.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(FedsegError, match="learning_rate"):
        RecipeConfig.from_yaml(path)
    path.write_text("network: {depth: 3}\ntrain: {patch_size: [32, 32, 20]}\n")
    with pytest.raises(FedsegError, match="multiples of 8"):
        RecipeConfig.from_yaml(path)
    with pytest.raises(FedsegError, match="not found"):
        RecipeConfig.from_yaml(tmp_path / "missing.yaml")
    with pytest.raises(ValidationError):
        TrainConfig(sampler="everywhere")  # type: ignore[arg-type]
