"""The ModalityBank generator network (torch): mAdaFM-modulated convolutions in a small
U-Net (``generator.layer_specs``), one output image per call for the modality asked.

Shapes: condition ``(B, 4, H, W)`` (2D) or ``(B, 4, X, Y, Z)`` (3D), every spatial size a
multiple of ``2**(depth-1)``; output ``(B, 1, ...)`` in [0, 1], times the brain channel so
the background is exactly 0 (as in skull-stripped MRI). Instance norm without affine
parameters: the only trainable arrays are the kernel and the banks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fedseg.model.generator import (
    BANK,
    KERNEL,
    MIN_STD,
    GeneratorConfig,
    LayerSpec,
    layer_specs,
)


def modulated_kernel(w: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Ŵ = Γ ⊙ (W - M) / S + B with M, S W's mean and population std over its spatial
    extent (shape lead x lead); a one-element kernel has M = 0, S = 1; S >= ``MIN_STD``."""
    lead = w.shape[:2]
    extra = (1,) * (w.dim() - 2)
    flat = w.reshape(*lead, -1)
    if flat.shape[-1] == 1:
        m = torch.zeros(lead, dtype=w.dtype, device=w.device)
        s = torch.ones(lead, dtype=w.dtype, device=w.device)
    else:
        m = flat.mean(-1)
        s = flat.std(-1, correction=0).clamp_min(MIN_STD)
    return gamma.view(*lead, *extra) * (w - m.view(*lead, *extra)) / s.view(
        *lead, *extra
    ) + beta.view(*lead, *extra)


class _Kernel(nn.Module):
    """W and b_conv of one layer (trained in pre-training, frozen after)."""

    def __init__(self, spec: LayerSpec, dims: int) -> None:
        super().__init__()
        # PyTorch's own conv init, so a fresh kernel is a sensible random feature bank
        conv_cls = {
            ("conv", 2): nn.Conv2d,
            ("conv", 3): nn.Conv3d,
            ("up", 2): nn.ConvTranspose2d,
            ("up", 3): nn.ConvTranspose3d,
        }[spec.kind, dims]
        ref = conv_cls(spec.c_in, spec.c_out, spec.size)
        self.weight = nn.Parameter(ref.weight.detach().clone())
        self.bias = nn.Parameter(ref.bias.detach().clone())  # type: ignore[union-attr]


class _Modulation(nn.Module):
    """Γ_i, B_i (lead x lead, W's stored layout) and b_i (C_out) of one layer and modality."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        lead = (spec.c_out, spec.c_in) if spec.kind == "conv" else (spec.c_in, spec.c_out)
        self.gamma = nn.Parameter(torch.ones(lead))
        self.beta = nn.Parameter(torch.zeros(lead))
        self.bias = nn.Parameter(torch.zeros(spec.c_out))


class ModalityGenerator(nn.Module):
    """``forward(cond, modality)``: the image of ``modality`` for the condition map."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.specs = layer_specs(cfg)
        dims = cfg.spatial_dims
        # attribute names are the weight-name prefixes (generator.KERNEL / BANK)
        kernel = nn.ModuleDict({s.name: _Kernel(s, dims) for s in self.specs})
        bank = nn.ModuleDict(
            {m: nn.ModuleDict({s.name: _Modulation(s) for s in self.specs}) for m in cfg.modalities}
        )
        self.add_module(KERNEL, kernel)
        self.add_module(BANK, bank)
        self._by_name = {s.name: s for s in self.specs}

    def _layer(self, name: str, x: torch.Tensor, modality: str) -> torch.Tensor:
        spec = self._by_name[name]
        k: _Kernel = getattr(self, KERNEL)[name]
        mod: _Modulation = getattr(self, BANK)[modality][name]
        w = modulated_kernel(k.weight, mod.gamma, mod.beta)
        b = mod.bias + k.bias
        dims = self.cfg.spatial_dims
        if spec.kind == "conv":
            conv = F.conv2d if dims == 2 else F.conv3d
            return conv(x, w, b, stride=spec.stride, padding=spec.padding)
        up = F.conv_transpose2d if dims == 2 else F.conv_transpose3d
        return up(x, w, b, stride=spec.stride, padding=spec.padding)

    def _block(self, name: str, x: torch.Tensor, modality: str) -> torch.Tensor:
        x = self._layer(name, x, modality)
        norm = F.instance_norm(x) if x[0, 0].numel() > 1 else x
        return F.leaky_relu(norm, 0.2)

    def forward(self, cond: torch.Tensor, modality: str) -> torch.Tensor:
        if modality not in self.cfg.modalities:
            raise ValueError(f"the generator has no bank for {modality!r}")
        depth = self.cfg.depth
        skips: list[torch.Tensor] = []
        x = cond
        for level in range(depth):
            if level > 0:
                x = self._block(f"down{level}", x, modality)
            x = self._block(f"enc{level}a", x, modality)
            x = self._block(f"enc{level}b", x, modality)
            skips.append(x)
        for level in range(depth - 2, -1, -1):
            x = self._block(f"up{level}", x, modality)
            x = torch.cat([x, skips[level]], dim=1)
            x = self._block(f"dec{level}a", x, modality)
            x = self._block(f"dec{level}b", x, modality)
        out = torch.sigmoid(self._layer("head", x, modality))
        return out * cond[:, :1]
