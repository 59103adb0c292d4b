"""mAdaFM (the modulated convolution) and the generator's weight names, checked against hand
computations; the generator core other synthesis modules build on."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedseg.errors import FedsegError
from fedseg.model.config import NetworkConfig
from fedseg.model.generator import (
    GeneratorConfig,
    generator_module,
    identity_banks,
    kernel_moments,
    new_generator_names,
    new_generator_weights,
    param_group,
    trainable_names,
)
from fedseg.model.generator_file import GeneratorFile, load_generator, save_generator
from fedseg.model.generator_net import modulated_kernel
from fedseg.model.model_file import ModelFile, save_model
from fedseg.synth.render import render_volume

TINY = GeneratorConfig(base_filters=4, depth=2)


def test_hand_computation_of_the_modulated_kernel_and_bias() -> None:
    # W = [[1, 2], [3, 6]]: M = 3, S = sqrt(((1-3)^2 + (2-3)^2 + 0 + (6-3)^2) / 4) = sqrt(3.5)
    w = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]]]])
    gamma, beta = torch.tensor([[2.0]]), torch.tensor([[-1.0]])
    s = math.sqrt(3.5)
    expected = [2 * (v - 3) / s - 1 for v in (1.0, 2.0, 3.0, 6.0)]
    assert expected == pytest.approx([-3.13809, -2.06905, -1.0, 2.20713], abs=1e-5)
    w_hat = modulated_kernel(w, gamma, beta)
    assert w_hat.flatten().tolist() == pytest.approx(expected, abs=1e-6)
    # b̂ = b_i + b_conv = 0.25 + 0.5; a 2x2 ones input through Ŵ: sum(Ŵ) + b̂ = -4 + 0.75
    out = F.conv2d(torch.ones(1, 1, 2, 2), w_hat, torch.tensor([0.25 + 0.5]))
    assert out.item() == pytest.approx(-3.25, abs=1e-5)


def test_one_element_kernels_use_m0_s1_and_constant_kernels_do_not_divide_by_zero() -> None:
    w = torch.tensor([[[[3.0]]], [[[-2.0]]]])  # two 1x1 kernels (C_out 2, C_in 1)
    out = modulated_kernel(w, torch.tensor([[2.0], [0.5]]), torch.tensor([[1.0], [0.0]]))
    assert out.flatten().tolist() == [7.0, -1.0]  # Γ ⊙ W + B
    const = torch.full((1, 1, 3, 3), 0.7)
    assert torch.isfinite(modulated_kernel(const, torch.ones(1, 1), torch.zeros(1, 1))).all()
    m, s = kernel_moments(const.numpy())  # the identity bank of a constant kernel
    hat = modulated_kernel(const, torch.from_numpy(s), torch.from_numpy(m))
    assert torch.allclose(hat, const, atol=1e-6)
    m, s = kernel_moments(np.ones((2, 3, 1, 1), np.float32))
    assert (m == 0).all() and (s == 1).all()


@pytest.mark.parametrize("dims", [2, 3])
def test_identity_banks_leave_every_modalitys_kernel_equal_to_w(dims: int) -> None:
    cfg = GeneratorConfig(base_filters=4, depth=2, spatial_dims=dims)  # type: ignore[arg-type]
    weights = new_generator_weights(cfg, seed=3)
    net = generator_module(cfg, weights)
    for spec in net.specs:
        w = net.kernel[spec.name].weight
        for m in cfg.modalities:
            mod = net.bank[m][spec.name]
            assert torch.allclose(modulated_kernel(w, mod.gamma, mod.beta), w, atol=1e-6)
            assert (mod.bias == 0).all()
    # resetting to identity after a change of the banks restores the same output everywhere
    moved = {k: (v + 0.1 if k.startswith("bank.") else v) for k, v in weights.items()}
    again = identity_banks(cfg, moved)
    assert all(np.array_equal(again[k], weights[k]) for k in weights)


def test_weight_names_have_one_group_each_and_trainable_sets_follow_the_phase() -> None:
    names = new_generator_names(TINY)
    assert names == list(new_generator_weights(TINY, 0))
    groups = {param_group(n) for n in names}
    assert groups == {"kernel", "bank:t1", "bank:t1ce", "bank:t2", "bank:flair"}
    bank = trainable_names(TINY, "bank", ["t1", "t2"])
    assert {param_group(n) for n in bank} == {"bank:t1", "bank:t2"}
    pre = trainable_names(TINY, "pretrain", ["t1"])
    assert {param_group(n) for n in pre} == {"kernel", "bank:t1"}
    with pytest.raises(FedsegError, match="not a generator weight name"):
        param_group("enc0.weight")


def test_gradient_reaches_only_the_trainable_arrays() -> None:
    net = generator_module(TINY, new_generator_weights(TINY, 1))
    wanted = trainable_names(TINY, "bank", ["flair"])
    for name, p in net.named_parameters():
        p.requires_grad_(name in wanted)
    cond = torch.zeros(2, 4, 16, 16)
    cond[:, 0, 2:14, 2:14] = 1
    cond[:, 2, 6:10, 6:10] = 1
    net(cond, "flair").mean().backward()
    for name, p in net.named_parameters():
        assert (p.grad is not None) == (name in wanted), name


def test_generator_file_round_trip_and_refusals(tmp_path: Path) -> None:
    gf = GeneratorFile(TINY, new_generator_weights(TINY, 2), ["t1", "t2"], meta={"round": "3"})
    back = load_generator(save_generator(tmp_path / "g.pt", gf))
    assert back.weights_hash == gf.weights_hash and back.trained == ["t1", "t2"]
    assert back.config == TINY and back.meta == {"round": "3"}
    seg = save_model(
        tmp_path / "seg.pt", ModelFile(NetworkConfig(base_filters=2, depth=2), {}, (8, 8, 8))
    )
    with pytest.raises(FedsegError, match="a segmentation model, not a generator"):
        load_generator(seg)
    with pytest.raises(FedsegError, match="generator file not found"):
        load_generator(tmp_path / "none.pt")


@pytest.mark.parametrize("dims", [2, 3])
def test_render_volume_is_zero_outside_the_brain_and_in_range(dims: int) -> None:
    cfg = GeneratorConfig(base_filters=2, depth=2, spatial_dims=dims)  # type: ignore[arg-type]
    gf = GeneratorFile(cfg, new_generator_weights(cfg, 0), ["t1"])
    label = np.zeros((21, 18, 9), np.uint8)
    label[8:12, 8:12, 3:6] = 4
    brain = np.zeros(label.shape, bool)
    brain[2:19, 2:16, 1:8] = True
    img = render_volume(gf, label, brain, "t1")
    assert img.shape == label.shape and img.dtype == np.float32
    assert (img[~brain] == 0).all() and 0 < img.max() <= 1
    only_t1 = cfg.model_copy(update={"modalities": ["t1"]})
    t1_file = GeneratorFile(only_t1, new_generator_weights(only_t1, 0), ["t1"])
    with pytest.raises(FedsegError, match="no flair bank"):
        render_volume(t1_file, label, brain, "flair")
