"""Typed training configuration. Defaults are the FeTS recipe; ``cpu()`` presets are small."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedseg.config_files import first_error, read_yaml_mapping
from fedseg.errors import FedsegError
from fedseg.model.compute import ComputeConfig, ComputeOverrides
from fedseg.model.config import NetworkConfig
from fedseg.train.plateau import PlateauConfig

Shape3 = tuple[int, int, int]


class AugmentConfig(BaseModel):
    """Patch augmentation of the FeTS recipe; probabilities are per patch."""

    model_config = ConfigDict(extra="forbid")

    noise_sigma: float = Field(0.1, ge=0.0, description="std of additive Gaussian noise (z units)")
    noise_p: float = Field(0.2, ge=0.0, le=1.0)
    rot90_p: float = Field(0.5, ge=0.0, le=1.0, description="rotate 90 deg about a random axis")
    rot180_p: float = Field(0.5, ge=0.0, le=1.0, description="rotate 180 deg about a random axis")
    flip_p: float = Field(1.0, ge=0.0, le=1.0, description="flip along one random axis")

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation at all."""
        return cls(noise_p=0.0, rot90_p=0.0, rot180_p=0.0, flip_p=0.0)


class LrScheduleConfig(BaseModel):
    """The learning rate over a federation's global rounds (``train.lr_schedule``), the same
    for every site; in a centralized run (``fedseg train``, compare's baselines) a round is
    an epoch. ``kind``: ``constant`` (``lr`` throughout), ``cosine`` (from ``lr`` down
    towards 0 over the rounds after the warmup, never 0 in the last round) or ``step``
    (``lr`` times ``step_factor`` every ``step_every`` rounds after the warmup).
    ``warmup_rounds`` W: round r <= W trains at ``lr * r / (W + 1)`` (linear). The formula
    is ``train.lr_schedule.round_lr``. In a plan, ``lr_schedule: cosine`` is short for
    ``lr_schedule: {kind: cosine}``."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["constant", "cosine", "step"] = "constant"
    warmup_rounds: int = Field(0, ge=0, description="rounds of linear warmup before the schedule")
    step_every: int | None = Field(None, ge=1, description="step: rounds between two decays")
    step_factor: float = Field(0.5, gt=0.0, le=1.0, description="step: the lr's factor per step")

    @model_validator(mode="before")
    @classmethod
    def _kind_only(cls, raw: object) -> object:
        return {"kind": raw} if isinstance(raw, str) else raw

    @model_validator(mode="after")
    def _step_keys(self) -> LrScheduleConfig:
        if self.kind == "step" and self.step_every is None:
            raise ValueError("kind step needs step_every (rounds between two decays)")
        if self.kind != "step" and (self.step_every is not None or self.step_factor != 0.5):
            raise ValueError(f"step_every and step_factor apply to kind step, not {self.kind}")
        return self


class TrainConfig(BaseModel):
    """How a site trains and validates (FeTS defaults: Adam 5e-5, one 128^3 patch per case).

    ``patch_size`` and ``val_roi`` are in voxels and must be multiples of the network's
    ``divisor`` (2 ** depth). ``sampler="tumor"`` centres a patch on a tumor (WT) voxel with
    probability ``tumor_p``, else anywhere in the cropped brain.
    """

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(5e-5, gt=0.0, description="Adam learning rate (before the schedule)")
    lr_schedule: LrScheduleConfig = Field(
        default_factory=LrScheduleConfig,
        description="the lr over the rounds (constant | cosine | step, warmup_rounds)",
    )
    plateau: PlateauConfig = Field(
        default_factory=PlateauConfig,
        description="stop early once the validation score stops rising (rounds; "
        "centralized: epochs); the run's rounds or epochs stay the cap",
    )
    weight_decay: float = Field(0.0, ge=0.0)
    patch_size: Shape3 = (128, 128, 128)
    patches_per_case: int = Field(1, ge=1, description="patches drawn per case per epoch")
    batch_size: int = Field(1, ge=1)
    sampler: Literal["random", "tumor"] = "random"
    tumor_p: float = Field(0.5, ge=0.0, le=1.0)
    augment: AugmentConfig = AugmentConfig()
    num_workers: int = Field(2, ge=0, description="loader processes (0: in the training process)")
    cache_mb: int = Field(
        4096,
        ge=0,
        description="where the site's case cache (<data>/.fedseg/cache, memory-mapped) cannot "
        "be written: prepared cases kept in memory up to this size, the rest prepared again "
        "at every use",
    )
    seed: int = Field(0, ge=0, description="default seed of runs (train_local takes its own)")
    val_roi: Shape3 = (128, 128, 128)
    val_overlap: float = Field(0.5, ge=0.0, lt=1.0)
    val_batch_size: int = Field(1, ge=1)
    compute: ComputeConfig = Field(
        default_factory=ComputeConfig,
        description="device and precision defaults; a machine overrides them for itself",
    )

    def with_compute(self, overrides: ComputeOverrides | None) -> TrainConfig:
        """This recipe on one machine: its ``compute`` with the machine's ``overrides``
        applied (``--device``, ``--precision``, ...); nothing else changes."""
        if overrides is None or overrides.empty:
            return self
        return self.model_copy(update={"compute": overrides.apply(self.compute)})

    @classmethod
    def cpu(cls, **overrides: object) -> TrainConfig:
        """A small preset for CPU tests and demos: 32^3 patches, tumor-biased, 1e-3."""
        base: dict[str, object] = {
            "lr": 1e-3,
            "patch_size": (32, 32, 32),
            "sampler": "tumor",
            "num_workers": 0,
            "val_roi": (32, 32, 32),
            "val_overlap": 0.25,
            "val_batch_size": 2,
        }
        base.update(overrides)
        return cls.model_validate(base)


def check_shapes(network: NetworkConfig, train: TrainConfig) -> None:
    """Patch and validation tile sides must be multiples of the network's divisor."""
    d = network.divisor
    for name, shape in (("patch_size", train.patch_size), ("val_roi", train.val_roi)):
        if any(s % d for s in shape):
            raise FedsegError(
                f"{name} {list(shape)} must be multiples of {d} (2 ** network depth "
                f"{network.depth}); change it in the recipe"
            )


class RecipeConfig(BaseModel):
    """Network + training: what a run needs to be repeated (stored as ``recipe.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    network: NetworkConfig = NetworkConfig()
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _shapes(self) -> RecipeConfig:
        try:
            check_shapes(self.network, self.train)
        except FedsegError as exc:
            raise ValueError(str(exc)) from None
        return self

    @classmethod
    def cpu(cls) -> RecipeConfig:
        """Tiny network (8 filters, depth 3) with ``TrainConfig.cpu()``: a demo on a laptop."""
        return cls(network=NetworkConfig(base_filters=8, depth=3), train=TrainConfig.cpu())

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def from_yaml(cls, path: Path) -> RecipeConfig:
        """Read a recipe file; unknown keys and bad values are one-line errors."""
        path = Path(path)
        raw = read_yaml_mapping(path, "recipe")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise FedsegError(f"{path}: {first_error(exc, 'recipe')}") from None
