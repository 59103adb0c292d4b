"""The ModalityBank generator: a label-conditioned image generator whose convolutions are
modulated per MRI modality (mAdaFM, Chang et al.).

Every convolution and transposed convolution has a frozen kernel W and bias b_conv and, per
modality i, learnable Γ_i, B_i (C_out x C_in) and b_i (C_out):
``Ŵ_i = Γ_i ⊙ (W - M) / S + B_i``, ``b̂_i = b_i + b_conv``, M and S the mean and population std
of W over each kernel's spatial extent (for a transposed conv, in its stored C_in x C_out
layout). A kernel with one spatial element has M := 0, S := 1; S is clamped at 1e-8 so a
constant kernel never divides by zero.

Weight names are the contract the aggregation reads (``param_group``):
``kernel.<layer>.{weight,bias}`` (W, b_conv), ``bank.<modality>.<layer>.{gamma,beta,bias}``
(Γ_i, B_i, b_i), ``shared.<...>`` (trainable parts common to all modalities). The
condition input is 4 channels (brain mask, NCR, ED, ET one-hot; ``synth.data``); the output
one image channel in [0, 1], zero outside the brain mask.

This module is torch-free (configs, names, the bank's numpy identity); the network itself
is ``generator_net``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedseg.data.cases import MODALITIES
from fedseg.errors import FedsegError

if TYPE_CHECKING:
    from fedseg.model.generator_net import ModalityGenerator
    from fedseg.model.weights import Weights

KERNEL = "kernel"
BANK = "bank"
SHARED = "shared"
#: channels of the condition map: brain mask, NCR, ED, ET (BraTS 2021 labels 1, 2, 4)
CONDITION_CHANNELS = 4
#: floor of a kernel's spatial std S (a constant kernel must not divide by zero)
MIN_STD = 1e-8


class GeneratorConfig(BaseModel):
    """The generator's shape (plan key ``synthesis.generator``). Default: the CPU recipe,
    2D axial slices (64 x 64 at 4 mm); ``spatial_dims: 3`` works on patches."""

    model_config = ConfigDict(extra="forbid")

    spatial_dims: Literal[2, 3] = 2
    base_filters: int = Field(16, ge=1)
    depth: int = Field(3, ge=1, le=6, description="resolution levels of the U-Net")
    modalities: list[str] = Field(default_factory=lambda: list(MODALITIES))
    condition: Literal["label"] = Field(
        "label", description="the input: brain mask + NCR/ED/ET (the paper's label map)"
    )

    @field_validator("modalities")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [m for m in v if m not in MODALITIES]
        if bad or not v or len(set(v)) != len(v):
            raise ValueError(f"modalities: give distinct names out of {', '.join(MODALITIES)}")
        return v


def param_group(name: str) -> str:
    """``'kernel'``, ``'shared'`` or ``'bank:<modality>'`` for a generator weight name."""
    head, _, rest = name.partition(".")
    if head in (KERNEL, SHARED) and rest:
        return head
    if head == BANK:
        modality, _, tail = rest.partition(".")
        if modality in MODALITIES and tail:
            return f"{BANK}:{modality}"
    raise FedsegError(
        f"{name!r} is not a generator weight name (kernel.*, bank.<modality>.*, shared.*)"
    )


def bank_group(modality: str) -> str:
    """The group name of ``modality``'s bank (``param_group``'s value for its arrays)."""
    return f"{BANK}:{modality}"


@dataclass(frozen=True)
class LayerSpec:
    """One modulated convolution: ``kind`` conv or up (transposed), channels, kernel size
    (the same along every axis), stride and padding."""

    name: str
    kind: Literal["conv", "up"]
    c_in: int
    c_out: int
    size: int
    stride: int = 1
    padding: int = 0

    def kernel_shape(self, spatial_dims: int) -> tuple[int, ...]:
        """W's stored shape: (C_out, C_in, k...) for a conv, (C_in, C_out, k...) for an up."""
        lead = (self.c_out, self.c_in) if self.kind == "conv" else (self.c_in, self.c_out)
        return (*lead, *([self.size] * spatial_dims))


def layer_specs(cfg: GeneratorConfig) -> list[LayerSpec]:
    """The generator's layers in forward order: a U-Net of ``depth`` levels with
    ``base_filters * 2**level`` channels, two 3-wide convs per level, 4-wide stride-2
    convs down, 2-wide stride-2 transposed convs up, a 1-wide head to one channel."""
    ch = [cfg.base_filters * 2**level for level in range(cfg.depth)]
    specs: list[LayerSpec] = []
    c_prev = CONDITION_CHANNELS
    for level, c in enumerate(ch):
        if level > 0:
            specs.append(LayerSpec(f"down{level}", "conv", c_prev, c, 4, 2, 1))
            c_prev = c
        specs.append(LayerSpec(f"enc{level}a", "conv", c_prev, c, 3, 1, 1))
        specs.append(LayerSpec(f"enc{level}b", "conv", c, c, 3, 1, 1))
        c_prev = c
    for level in range(cfg.depth - 2, -1, -1):
        c = ch[level]
        specs.append(LayerSpec(f"up{level}", "up", ch[level + 1], c, 2, 2, 0))
        specs.append(LayerSpec(f"dec{level}a", "conv", 2 * c, c, 3, 1, 1))
        specs.append(LayerSpec(f"dec{level}b", "conv", c, c, 3, 1, 1))
    specs.append(LayerSpec("head", "conv", ch[0], 1, 1))
    return specs


def kernel_moments(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """M and S of a stored kernel (lead x lead x k...) over its spatial extent: mean and
    population std, S clamped at ``MIN_STD``; a one-element kernel has M = 0, S = 1."""
    lead = w.shape[:2]
    flat = w.reshape(*lead, -1).astype(np.float64)
    if flat.shape[-1] == 1:
        return np.zeros(lead, np.float32), np.ones(lead, np.float32)
    return flat.mean(-1).astype(np.float32), np.maximum(flat.std(-1), MIN_STD).astype(np.float32)


def new_generator_weights(cfg: GeneratorConfig, seed: int) -> Weights:
    """Fresh generator weights: W drawn from ``seed`` (PyTorch's default conv init), every
    bank at identity on it."""
    import torch

    from fedseg.model.weights import get_weights

    torch.manual_seed(seed)
    return identity_banks(cfg, get_weights(generator_module(cfg)))


def identity_banks(cfg: GeneratorConfig, weights: Weights) -> Weights:
    """The same kernel, every bank reset to identity on it (Γ=S, B=M, b=0: Ŵ_i = W for
    every modality, so the output is unchanged): the step from pre-training to the bank
    phase. Returns a new dict; ``weights`` is not changed."""
    out = dict(weights)
    for spec in layer_specs(cfg):
        m, s = kernel_moments(weights[f"{KERNEL}.{spec.name}.weight"])
        for modality in cfg.modalities:
            head = f"{BANK}.{modality}.{spec.name}"
            out[f"{head}.gamma"] = s.copy()
            out[f"{head}.beta"] = m.copy()
            out[f"{head}.bias"] = np.zeros(spec.c_out, np.float32)
    return out


def trainable_names(
    cfg: GeneratorConfig, phase: Literal["pretrain", "bank"], modalities: Sequence[str]
) -> set[str]:
    """Weight names a site trains: pre-training the kernel and the bank of the (one)
    reference modality; the bank phase the banks of ``modalities`` and the shared part."""
    names = set(new_generator_names(cfg))
    wanted = {bank_group(m) for m in modalities if m in cfg.modalities}
    wanted |= {KERNEL} if phase == "pretrain" else {SHARED}
    return {n for n in names if param_group(n) in wanted}


def new_generator_names(cfg: GeneratorConfig) -> list[str]:
    """The generator's weight names in state-dict order (no torch needed)."""
    names: list[str] = []
    specs = layer_specs(cfg)
    for spec in specs:
        names += [f"{KERNEL}.{spec.name}.weight", f"{KERNEL}.{spec.name}.bias"]
    for modality in cfg.modalities:
        for spec in specs:
            head = f"{BANK}.{modality}.{spec.name}"
            names += [f"{head}.gamma", f"{head}.beta", f"{head}.bias"]
    return names


def generator_module(cfg: GeneratorConfig, weights: Weights | None = None) -> ModalityGenerator:
    """The generator network (torch ``nn.Module``) with ``weights`` loaded (strict)."""
    from fedseg.model.generator_net import ModalityGenerator as Net
    from fedseg.model.weights import set_weights

    net = Net(cfg)
    if weights is not None:
        set_weights(net, weights)
    return net
