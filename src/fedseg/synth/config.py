"""The synthesis recipe (plan key ``synthesis``, with ``task: synthesis``). Defaults are the
CPU recipe: 2D axial slices of 64 x 64 at 4 mm, a 16-filter generator; the full-size
configuration (BraTS 1 mm, 256 x 256 slices or ``spatial_dims: 3`` patches, base 32+) is a
config away. Loss weights are dimensionless; learning rates per optimizer step."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fedseg.model.generator import GeneratorConfig


class DiscriminatorConfig(BaseModel):
    """One MONAI ``PatchDiscriminator`` per (site, present modality); it never leaves its
    site (not even its weights)."""

    model_config = ConfigDict(extra="forbid")

    layers: int = Field(2, ge=1, le=5)
    channels: int = Field(16, ge=1)
    norm: Literal["instance", "batch"] = "instance"


class LossConfig(BaseModel):
    """G's loss per present modality: ``l1``·L1 + ``ssim``·(1 - SSIM) + ``adversarial``·GAN."""

    model_config = ConfigDict(extra="forbid")

    l1: float = Field(1.0, ge=0)
    ssim: float = Field(1.0, ge=0)
    adversarial: float = Field(0.05, ge=0)
    criterion: Literal["least_squares", "hinge", "bce"] = "least_squares"


class SynthOptimizerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lr_generator: float = Field(2.0e-3, gt=0)
    lr_discriminator: float = Field(2.0e-4, gt=0)
    betas: tuple[float, float] = (0.5, 0.999)


class SynthDataConfig(BaseModel):
    """How cases become training samples: each modality scaled per case to [0, 1] by its
    ``intensity_percentile`` brain percentile and clipped; 2D: axial slices with at least
    ``min_brain_fraction`` brain, zero-padded/cropped to ``slice_size``; 3D: ``patch_size``."""

    model_config = ConfigDict(extra="forbid")

    slice_size: tuple[int, int] = (64, 64)
    patch_size: tuple[int, int, int] = (64, 64, 40)
    min_brain_fraction: float = Field(0.15, ge=0, lt=1)
    batch_size: int = Field(8, ge=1)
    intensity_percentile: float = Field(99.5, gt=50, le=100)


class PretrainConfig(BaseModel):
    """Federated pre-training of the frozen kernel W on one modality (rounds 1..``rounds``
    of the run), then W is frozen and every bank reset to identity on it."""

    model_config = ConfigDict(extra="forbid")

    rounds: int = Field(2, ge=0, description="0: no pre-training (random frozen W)")
    modality: str = Field("auto", description="auto: the modality most sites have, ties -> t1")
    steps_per_round: int = Field(40, ge=1)


class SamplesConfig(BaseModel):
    """Phantom label maps (nobody's) the aggregator renders each round for the report."""

    model_config = ConfigDict(extra="forbid")

    label_seed: int = 1234
    n: int = Field(4, ge=0)


class SynthesisConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["federated", "central"] = Field(
        "federated",
        description="central (the paper's central generator; label maps would leave the "
        "sites) is refused: not implemented",
    )
    generator: GeneratorConfig = GeneratorConfig()
    discriminator: DiscriminatorConfig = DiscriminatorConfig()
    loss: LossConfig = LossConfig()
    optimizer: SynthOptimizerConfig = SynthOptimizerConfig()
    data: SynthDataConfig = SynthDataConfig()
    pretrain: PretrainConfig = PretrainConfig()
    steps_per_round: int = Field(20, ge=1, description="bank phase, per site and round")
    initial_generator: str | None = Field(
        None, description="a generator file: its kernel is frozen and pre-training skipped"
    )
    samples: SamplesConfig = SamplesConfig()
    seed: int = 0
