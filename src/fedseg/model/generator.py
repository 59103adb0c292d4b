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

The top of this module is torch-free (configs, names); torch is imported inside the
functions that build the network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedseg.data.cases import MODALITIES
from fedseg.errors import FedsegError

if TYPE_CHECKING:
    from fedseg.model.weights import Weights

KERNEL = "kernel"
BANK = "bank"
SHARED = "shared"
#: channels of the condition map: brain mask, NCR, ED, ET (BraTS 2021 labels 1, 2, 4)
CONDITION_CHANNELS = 4


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


def new_generator_weights(cfg: GeneratorConfig, seed: int) -> Weights:
    """Fresh generator weights (random W from ``seed``, every bank at identity on it)."""
    raise NotImplementedError  # helper A


def identity_banks(cfg: GeneratorConfig, weights: Weights) -> Weights:
    """The same kernel, every bank reset to identity on it (Γ=S, B=M, b=0: Ŵ_i = W for
    every modality, so the output is unchanged): the step from pre-training to the bank
    phase."""
    raise NotImplementedError  # helper A
