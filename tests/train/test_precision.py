"""Training and validation where ``train.compute`` says: bf16/fp16 autocast on the CPU,
channels-last, torch.compile, and what leaves ``train_local`` (float32 on the host)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedseg.data.cases import Case, load_case
from fedseg.model.compute import ComputeConfig
from fedseg.model.config import NetworkConfig
from fedseg.model.losses import mirrored_dice_loss
from fedseg.model.registry import new_network
from fedseg.model.segmenter import Member, ModelSet
from fedseg.model.torch_backend import torch_predictor
from fedseg.model.weights import get_weights
from fedseg.train.config import TrainConfig
from fedseg.train.loader import CaseStore, EpochLoader, PatchDataset, make_loader
from fedseg.train.local import (
    epoch_seed,
    fit_epoch,
    new_optimizer,
    place_for_training,
    train_local,
)


def _on(train: TrainConfig, **compute: object) -> TrainConfig:
    return train.model_copy(update={"compute": ComputeConfig.model_validate(compute)})


def _assert_float32_host(result_arrays: dict[str, np.ndarray]) -> None:
    for k, v in result_arrays.items():
        assert isinstance(v, np.ndarray), k
        if v.dtype.kind == "f":
            assert v.dtype == np.float32, k
            assert np.isfinite(v).all(), k
            assert v.flags.c_contiguous, k


def test_cpu_fp32_steps_are_exactly_the_plain_loop(
    site: list[Case], tiny_net: NetworkConfig, tiny_train: TrainConfig
) -> None:
    """On the CPU in fp32 the device, autocast and scaler plumbing changes nothing: the
    weights equal (bit for bit) a plain forward/backward/Adam loop over the same batches."""
    res = train_local(tiny_net, _on(tiny_train, device="cpu"), None, None, site[:3], 1, seed=4)
    assert res.device == "cpu"
    net = new_network(tiny_net, None, seed=4)
    opt = new_optimizer(net, tiny_train)
    store = CaseStore(site[:3], tiny_train.patch_size, tiny_train.cache_mb)
    net.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(epoch_seed(4, 0))
        for batch in make_loader(PatchDataset(store, tiny_train, 4, 0)):
            opt.zero_grad(set_to_none=True)
            mirrored_dice_loss(net(batch["image"]), batch["target"]).backward()
            opt.step()
    ref = get_weights(net)
    assert ref.keys() == res.weights.keys()
    for k in ref:
        np.testing.assert_array_equal(ref[k], res.weights[k], err_msg=k)


def test_bf16_training_on_cpu_learns_like_fp32_and_returns_float32(
    site: list[Case], tiny_net: NetworkConfig, tiny_train: TrainConfig
) -> None:
    train = tiny_train.model_copy(update={"lr": 3e-3})
    fp32 = train_local(tiny_net, _on(train, device="cpu"), None, None, site, 3, seed=3)
    bf16 = train_local(
        tiny_net, _on(train, device="cpu", precision="bf16"), None, None, site, 3, seed=3
    )
    # Measured (seed 3): fp32 0.5675, 0.5273, 0.5176; bf16 0.5675, 0.5271, 0.5175.
    assert bf16.epoch_losses[-1] < bf16.epoch_losses[0]
    np.testing.assert_allclose(bf16.epoch_losses, fp32.epoch_losses, atol=0.01)
    assert bf16.weights.keys() == fp32.weights.keys()
    assert bf16.optimizer_state.keys() == fp32.optimizer_state.keys()
    for k in fp32.weights:
        assert bf16.weights[k].dtype == fp32.weights[k].dtype, k
        assert bf16.weights[k].shape == fp32.weights[k].shape, k
    _assert_float32_host(bf16.weights)
    _assert_float32_host(bf16.optimizer_state)
    assert bf16.optimizer_state["step"] == fp32.optimizer_state["step"] == 15


def test_fp16_with_grad_scaler_on_cpu_returns_finite_float32(
    site: list[Case], tiny_net: NetworkConfig, tiny_train: TrainConfig
) -> None:
    res = train_local(
        tiny_net, _on(tiny_train, device="cpu", precision="fp16"), None, None, site[:2], 1, seed=2
    )
    assert math.isfinite(res.train_loss) and res.steps == 2
    _assert_float32_host(res.weights)
    _assert_float32_host(res.optimizer_state)
    # A scaler-skipped step (inf gradients) does not advance Adam; none is expected here,
    # but the count may only be lower, never higher.
    assert 0 <= int(res.optimizer_state["step"]) <= res.steps
    # Continuing from the returned state (Adam moments loaded back) works in fp16 too.
    more = train_local(
        tiny_net, _on(tiny_train, device="cpu", precision="fp16"), res.weights,
        res.optimizer_state, site[:2], 1, seed=2, first_epoch=1,
    )  # fmt: skip
    _assert_float32_host(more.weights)


def test_channels_last_gives_the_contiguous_gradients_and_weights(
    site: list[Case], tiny_net: NetworkConfig, tiny_train: TrainConfig
) -> None:
    store = CaseStore(site[:2], tiny_train.patch_size, tiny_train.cache_mb)
    batch = next(iter(make_loader(PatchDataset(store, tiny_train, 0, 0))))
    grads = []
    for channels_last in (False, True):
        net = new_network(tiny_net, None, seed=1)
        setup = place_for_training(net, ComputeConfig(device="cpu", channels_last=channels_last))
        image, target = batch["image"], batch["target"]
        if channels_last:
            image = image.contiguous(memory_format=torch.channels_last_3d)
            conv = [p for p in net.parameters() if p.dim() == 5]
            assert conv and all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in conv)
        assert setup.device == torch.device("cpu")
        mirrored_dice_loss(net(image), target).backward()
        grads.append({n: p.grad.detach().clone() for n, p in net.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-4, atol=1e-6, msg=n)
    # Through train_local: one Adam step lands on the same weights. Adam's first step moves
    # each parameter by about lr whatever its gradient's size, so a parameter whose gradient
    # is ~0 (float noise) may step either way: the bound is 2 lr, most agree to 1e-5.
    a = train_local(tiny_net, _on(tiny_train, device="cpu"), None, None, site[:1], 1, seed=3)
    b = train_local(
        tiny_net, _on(tiny_train, device="cpu", channels_last=True), None, None, site[:1], 1,
        seed=3,
    )  # fmt: skip
    _assert_float32_host(b.weights)
    _assert_float32_host(b.optimizer_state)
    close = total = 0
    for k in a.weights:
        np.testing.assert_allclose(b.weights[k], a.weights[k], atol=2 * tiny_train.lr, err_msg=k)
        diff = np.abs(b.weights[k].astype(np.float64) - a.weights[k])
        close += int((diff <= 1e-5).sum())
        total += diff.size
    assert close / total > 0.95  # measured: 33145 of 33203 (99.8 %)


def test_fit_epoch_without_setup_places_by_the_recipe(
    site: list[Case], tiny_net: NetworkConfig, tiny_train: TrainConfig
) -> None:
    """``fit_epoch`` without a setup places the network (and an optimizer state loaded on
    the host) by ``train.compute`` itself."""
    train = _on(tiny_train, device="cpu", precision="bf16", channels_last=True)
    net = new_network(tiny_net, None, seed=0)
    opt = new_optimizer(net, train)
    store = CaseStore(site[:2], train.patch_size, train.cache_mb)
    with EpochLoader(store, train, seed=0) as data:
        stats = fit_epoch(net, opt, data, epoch=0)
    assert stats.steps == 2 and math.isfinite(stats.loss)
    conv = [p for p in net.parameters() if p.dim() == 5]
    assert conv and all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in conv)
    _assert_float32_host(get_weights(net))


@pytest.mark.slow
def test_compiled_network_trains_a_step(
    site: list[Case], tiny_net: NetworkConfig, tiny_train: TrainConfig
) -> None:
    """torch.compile on the CPU (gcc present): 16 to 40 s to compile even a tiny 3D U-Net
    on this 2-core machine, hence slow. Names and values come back as the eager ones."""
    eager = train_local(tiny_net, _on(tiny_train, device="cpu"), None, None, site[:1], 1, seed=0)
    res = train_local(
        tiny_net, _on(tiny_train, device="cpu", compile=True), None, None, site[:1], 1, seed=0
    )
    assert res.steps == 1 and math.isfinite(res.train_loss)
    assert res.weights.keys() == eager.weights.keys()
    assert res.optimizer_state.keys() == eager.optimizer_state.keys()
    _assert_float32_host(res.weights)
    for k in eager.weights:  # one Adam step: at most lr apart per element (see above)
        np.testing.assert_allclose(res.weights[k], eager.weights[k], atol=2 * tiny_train.lr)


def test_bf16_inference_is_close_to_fp32(
    site: list[Case], tiny_net: NetworkConfig, tiny_train: TrainConfig
) -> None:
    """Validation/inference under bf16 autocast: probabilities within 0.05 of fp32 and the
    same labels on nearly every voxel; float32 numpy comes back either way."""
    trained = train_local(
        tiny_net, _on(tiny_train.model_copy(update={"lr": 3e-3}), device="cpu"), None, None,
        site, 2, seed=3,
    )  # fmt: skip
    image = load_case(site[0], with_label=False).image
    out = {}
    for precision, channels_last in (("fp32", False), ("bf16", False), ("fp32", True)):
        net = new_network(tiny_net, trained.weights, seed=0)
        compute = ComputeConfig(device="cpu", precision=precision, channels_last=channels_last)
        models = ModelSet((Member(torch_predictor(net, compute), tiny_train.val_roi, "net"),))
        probs = models.predict(image, overlap=0.25).values
        assert probs.dtype == np.float32 and probs.flags.c_contiguous
        out[precision, channels_last] = probs
    ref = out["fp32", False]
    np.testing.assert_allclose(out["fp32", True], ref, atol=1e-5)
    bf16 = out["bf16", False]
    assert float(np.abs(bf16 - ref).max()) < 0.05
    assert float(((bf16 > 0.5) == (ref > 0.5)).mean()) > 0.99
