"""Device and precision choices: specs, overrides, autocast and the gradient scaler."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from fedseg.errors import FedsegError
from fedseg.model.compute import (
    ComputeConfig,
    ComputeOverrides,
    autocast,
    grad_scaler,
    resolve_device,
)
from fedseg.train.config import TrainConfig


def test_device_specs_are_checked() -> None:
    for ok in ("auto", "cpu", "cuda", "cuda:3"):
        assert ComputeConfig(device=ok).device == ok
    for bad in ("gpu", "cuda:", "cuda:x", "CPU"):
        with pytest.raises(ValidationError, match="auto, cpu, cuda or cuda:N"):
            ComputeConfig(device=bad)
    with pytest.raises(ValidationError):
        ComputeOverrides(device="tpu")


def test_overrides_replace_only_what_the_machine_set() -> None:
    recipe = ComputeConfig(device="cuda", precision="bf16", channels_last=True)
    mine = ComputeOverrides(precision="fp32")
    out = mine.apply(recipe)
    assert (out.device, out.precision, out.channels_last) == ("cuda", "fp32", True)
    assert ComputeOverrides().empty and not mine.empty
    assert ComputeOverrides().apply(recipe) == recipe


def test_recipe_carries_compute_defaults() -> None:
    t = TrainConfig.cpu()
    assert t.compute == ComputeConfig()
    t2 = TrainConfig.model_validate({"compute": {"precision": "bf16"}})
    assert t2.compute.precision == "bf16"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only machine")
def test_cpu_machine_resolves_auto_and_refuses_cuda() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(FedsegError, match=r"has 0 CUDA device.*--device cpu"):
        resolve_device("cuda:1")


def test_bf16_autocast_on_cpu_runs_convolutions_in_bf16_and_fp32_does_not() -> None:
    conv = torch.nn.Conv3d(2, 2, 3)
    x = torch.randn(1, 2, 6, 6, 6)
    cpu = torch.device("cpu")
    with autocast(cpu, "bf16"):
        assert conv(x).dtype == torch.bfloat16
    with autocast(cpu, "fp32"):
        assert conv(x).dtype == torch.float32
    assert conv.weight.dtype == torch.float32  # master weights stay fp32


def test_grad_scaler_only_for_fp16() -> None:
    cpu = torch.device("cpu")
    assert grad_scaler(cpu, "fp16").is_enabled()
    assert not grad_scaler(cpu, "bf16").is_enabled()
    assert not grad_scaler(cpu, "fp32").is_enabled()
