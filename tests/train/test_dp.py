"""DP-SGD with Opacus on the tiny ResUNet (base 4, depth 2, 16^3): per-case gradients,
clipping, noise scale, the network changes (and the ones refused), the fp32 fallback."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from fedseg.data.cases import Case
from fedseg.errors import FedsegError
from fedseg.model.compute import ComputeConfig
from fedseg.model.config import NetworkConfig
from fedseg.model.losses import mirrored_dice_loss
from fedseg.model.registry import new_network
from fedseg.train.config import TrainConfig
from fedseg.train.dp import (
    BATCH_NORM_REFUSED,
    CaseDp,
    DpEpochs,
    DpSgd,
    dp_compute,
    dp_network,
    steps_per_epoch,
)
from fedseg.train.loader import CaseStore
from fedseg.train.local import new_optimizer, place_for_training, proximal_term, train_local

TINY = NetworkConfig(base_filters=4, depth=2)
CPU = torch.device("cpu")


def _batch(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(n, 4, 16, 16, 16, generator=g)
    target = (torch.rand(n, 3, 16, 16, 16, generator=g) > 0.7).float()
    return image, target


def _one_sample_grads(net: nn.Module, image: torch.Tensor, target: torch.Tensor):
    """Per-sample gradients the slow way: one backward pass per sample, plain autograd."""
    out = []
    for i in range(len(image)):
        net.zero_grad(set_to_none=True)
        mirrored_dice_loss(net(image[i : i + 1]), target[i : i + 1]).backward()
        out.append({n: p.grad.detach().clone() for n, p in net.named_parameters()})
    return out


def _sgd(net: nn.Module, dp: CaseDp, n_cases: int) -> DpSgd:
    train = TrainConfig.cpu(patch_size=(16, 16, 16), val_roi=(16, 16, 16))
    return DpSgd(dp_network(net), new_optimizer(net, train), dp, n_cases, CPU)


def test_per_case_gradients_equal_one_case_backward_passes() -> None:
    """Opacus's per-case gradients (hooks; functorch for ConvTranspose3d) equal one-case
    backward passes for every parameter. The conv biases whose output only reaches the loss
    through an instance norm have true gradient 0 (the norm removes a per-channel constant):
    both sides are float noise there, and compare as ~0 under the absolute tolerance."""
    net = new_network(TINY, None, seed=0)
    reference = copy.deepcopy(net)
    sgd = _sgd(net, CaseDp(1.0, 1.0, 0.5), n_cases=6)
    image, target = _batch(3)
    mirrored_dice_loss(sgd.module(image), target).backward()  # the batch's mean loss
    expected = _one_sample_grads(reference, image, target)
    kinds = {type(m).__name__ for m in net.modules()}
    assert {"ConvTranspose3d", "InstanceNorm3d", "Conv3d"} <= kinds  # functorch + hooks
    scale = max(float(g.abs().max()) for e in expected for g in e.values())
    atol = 1e-5 * scale
    compared = near_zero = 0
    for name, p in net.named_parameters():
        got = p.grad_sample
        assert got.shape == (3, *p.shape), name
        for i in range(3):
            want = expected[i][name]
            torch.testing.assert_close(got[i], want, rtol=1e-3, atol=atol, msg=name)
            if float(want.abs().max()) < atol:  # a bias before a norm
                assert float(got[i].abs().max()) < 2 * atol, name
                near_zero += 1
            else:
                compared += 1
    assert near_zero > 0 and compared > 2 * near_zero


def test_dp_network_switches_inplace_off_and_keeps_the_weight_keys() -> None:
    net = new_network(TINY, None, seed=0)
    keys = list(net.state_dict())
    assert any(getattr(m, "inplace", False) for m in net.modules())  # the built ResUNet's
    dp_network(net)
    assert not any(getattr(m, "inplace", False) for m in net.modules())
    assert list(net.state_dict()) == keys
    sgd = _sgd(net, CaseDp(1.0, 1.0, 0.5), n_cases=2)
    assert list(net.state_dict()) == keys  # Opacus wraps it, the module's names stay
    sgd.close()
    assert list(net.state_dict()) == keys


def test_batch_norm_is_refused_in_one_line() -> None:
    net = new_network(NetworkConfig(base_filters=4, depth=2, norm="batch"), None, seed=0)
    with pytest.raises(FedsegError) as info:
        dp_network(net)
    assert str(info.value) == BATCH_NORM_REFUSED
    assert "\n" not in BATCH_NORM_REFUSED
    for norm in ("instance", "group", "none"):  # per-sample norms (or none) are fine
        dp_network(new_network(NetworkConfig(base_filters=4, depth=2, norm=norm), None, 0))


def test_the_per_case_clip_holds() -> None:
    """With a clip far below the gradients' norms, every case's gradient is scaled to norm
    C: the step's sum equals the sum of the clipped one-case gradients, each of norm <= C."""
    clip = 1e-3
    net = new_network(TINY, None, seed=1)
    reference = copy.deepcopy(net)
    sgd = _sgd(net, CaseDp(0.0, clip, 0.5), n_cases=6)
    image, target = _batch(3, seed=1)
    sgd.accumulate(image, target)
    per_case = _one_sample_grads(reference, image, target)
    names = [n for n, _ in net.named_parameters()]
    norms = [float(torch.sqrt(sum((g[n] ** 2).sum() for n in names))) for g in per_case]
    assert min(norms) > clip  # every case is clipped
    clipped = [
        {n: g[n] * min(1.0, clip / norm) for n in names}
        for g, norm in zip(per_case, norms, strict=True)
    ]
    for c in clipped:
        assert float(torch.sqrt(sum((c[n] ** 2).sum() for n in names))) <= clip * (1 + 1e-5)
    for name, p in net.named_parameters():
        want = sum(c[name] for c in clipped)
        torch.testing.assert_close(p.summed_grad, want, rtol=1e-3, atol=clip * 1e-4, msg=name)
    total = float(torch.sqrt(sum((p.summed_grad**2).sum() for p in net.parameters())))
    assert total <= 3 * clip * (1 + 1e-5)


def test_noise_std_is_sigma_times_clip_over_the_expected_cases() -> None:
    """A step that draws no case (a zero gradient): the gradient is pure noise of std
    noise_multiplier * clip / (sample_rate * cases), mean 0."""
    sigma, clip, q, n = 2.0, 0.5, 0.25, 8  # expected cases 2: std 0.5
    net = new_network(TINY, None, seed=0)
    sgd = _sgd(net, CaseDp(sigma, clip, q), n_cases=n)
    sgd.noisy_gradient()
    noise = torch.cat([p.grad.flatten() for p in net.parameters()])
    assert noise.numel() > 10_000
    want = sigma * clip / (q * n)
    assert float(noise.std()) == pytest.approx(want, rel=0.03)
    assert abs(float(noise.mean())) < 4 * want / noise.numel() ** 0.5


def test_the_proximal_gradient_is_added_after_the_noise() -> None:
    """FedProx under DP-SGD: with no noise and no case drawn, the step follows the
    proximal gradient alone: every parameter moves towards the reference."""
    net = new_network(TINY, None, seed=0)
    ref = {n: (p.detach() + 0.1).numpy().copy() for n, p in net.named_parameters()}
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    sgd = _sgd(net, CaseDp(0.0, 1.0, 0.5), n_cases=4)
    sgd.step(proximal_term(net, ref, mu=1.0))
    for n, p in net.named_parameters():
        assert torch.all(p.detach() > before[n]), n


def test_dp_compute_falls_back_to_fp32_without_compile() -> None:
    same, line = dp_compute(ComputeConfig())
    assert same == ComputeConfig() and line is None
    changed, line = dp_compute(ComputeConfig(precision="bf16", compile=True, channels_last=True))
    assert changed == ComputeConfig(precision="fp32", compile=False, channels_last=True)
    assert line is not None and "bf16" in line and "compile" in line and "\n" not in line


def test_steps_per_epoch_draw_each_case_once_in_expectation() -> None:
    assert [steps_per_epoch(q) for q in (1.0, 0.5, 1 / 3, 0.4, 0.01)] == [1, 2, 3, 3, 100]


def test_train_local_with_dp_sgd(site: list[Case], tiny_train: TrainConfig) -> None:
    """Two epochs of DP-SGD (physical batch 1; bf16 asked, fp32 used): the same weight keys,
    the expected number of steps, an Adam state for every parameter. The draws and the noise
    come from the OS, not from the seed: the same seed gives other weights (plain training
    with one seed is repeatable, ``test_local``)."""
    train = tiny_train.model_copy(
        update={"patches_per_case": 1, "compute": ComputeConfig(precision="bf16")}
    )
    dp = CaseDp(noise_multiplier=1.0, clip_norm=1.0, sample_rate=0.4, max_physical_batch=1)
    w0 = {
        k: v.copy()
        for k, v in train_local(TINY, train, None, None, site, 0, seed=3).weights.items()
    }
    a = train_local(TINY, train, w0, None, site, 2, seed=3, dp=dp, case_cache=False)
    b = train_local(TINY, train, w0, None, site, 2, seed=3, dp=dp, case_cache=False)
    assert list(a.weights) == list(w0) and a.steps == 2 * steps_per_epoch(0.4) == 6
    assert int(a.optimizer_state["step"]) == 6
    assert {k.split("/", 1)[1] for k in a.optimizer_state if "/" in k} == {
        k for k in w0 if np.issubdtype(w0[k].dtype, np.floating)
    }
    assert any(not np.array_equal(a.weights[k], b.weights[k]) for k in w0)
    assert any(not np.array_equal(a.weights[k], w0[k]) for k in w0)


def test_drawn_cases_go_through_the_network_at_most_max_physical_batch_at_a_time(
    site: list[Case], tiny_train: TrainConfig
) -> None:
    """Rate 1: every step draws all 5 cases, which pass in physical batches of 2, 2, 1 (one
    logical step each: one Adam step per logical batch)."""
    train = tiny_train.model_copy(update={"patches_per_case": 1})
    net = dp_network(new_network(TINY, None, seed=0))
    setup = place_for_training(net, train.compute)
    opt = new_optimizer(net, train)
    store = CaseStore(site, train.patch_size, 64, disk=False)
    epochs = DpEpochs(net, opt, store, train, 0, CaseDp(1.0, 1.0, 1.0, 2), setup)
    seen: list[int] = []
    net.register_forward_pre_hook(lambda _m, args: seen.append(len(args[0])))
    stats = epochs.fit_epoch(0)
    epochs.close()
    assert stats.steps == 1 and seen == [2, 2, 1]
    assert int(opt.state[next(iter(net.parameters()))]["step"]) == 1
