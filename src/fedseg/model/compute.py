"""Where and how a network computes: device, precision, memory format, compilation.

``ComputeConfig`` is part of the recipe (``train.compute``): the plan's defaults. A machine
overrides it for itself (``ComputeOverrides``: ``--device``, ``--precision``, ... on
``fedseg site start``, ``train``, ``segment``, ``evaluate``, ``compare``, ``simulate``)
without changing what is averaged: weights, optimizer state, metrics and aggregation stay
float32 whatever the precision, which only applies inside the forward pass and loss
(``autocast``), the way PyTorch's automatic mixed precision intends.

Conventions: ``device`` is ``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda``
(the current CUDA device) or ``cuda:N``; ``precision`` is ``fp32`` (no autocast),
``bf16`` (autocast to bfloat16, CPU or CUDA) or ``fp16`` (autocast to float16 with a
gradient scaler, meant for CUDA).

``place_network`` puts a network where a config says (device, memory format, compiled or
not) and ``to_device`` moves a batch after it: the one placement used by training
(``train.local``), validation and inference (``model.torch_backend``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedseg.errors import FedsegError
from fedseg.run_folder import ComputeUsed

if TYPE_CHECKING:  # torch is imported where a network runs: a CLI or an exported model needs none
    import torch
    from torch import nn

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "fp16")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device_spec(text: str) -> str:
    """``text`` if it is a device spec (auto, cpu, cuda, cuda:N), else a ValueError."""
    if not _DEVICE.match(text):
        raise ValueError(f"device {text!r} is unknown; use auto, cpu, cuda or cuda:N")
    return text


class ComputeConfig(BaseModel):
    """How a network computes on a machine (recipe key ``train.compute``)."""

    model_config = ConfigDict(extra="forbid")

    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda, cuda:N")
    precision: Precision = Field(
        "fp32", description="fp32, bf16 (autocast, CPU or CUDA) or fp16 (autocast + grad scaler)"
    )
    channels_last: bool = Field(False, description="channels-last 3D memory format")
    compile: bool = Field(False, description="torch.compile the network (slow first step)")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return check_device_spec(v)


class ComputeOverrides(BaseModel):
    """One machine's choices over the recipe's ``ComputeConfig`` (None: the recipe's)."""

    model_config = ConfigDict(extra="forbid")

    device: str | None = None
    precision: Precision | None = None
    channels_last: bool | None = None
    compile: bool | None = None

    @field_validator("device")
    @classmethod
    def _device(cls, v: str | None) -> str | None:
        return None if v is None else check_device_spec(v)

    def apply(self, config: ComputeConfig) -> ComputeConfig:
        """``config`` with the fields this machine set replaced."""
        return config.model_copy(update=self.model_dump(exclude_none=True))

    @property
    def empty(self) -> bool:
        return not self.model_dump(exclude_none=True)


def resolve_device(spec: str) -> torch.device:
    """The torch device of ``spec``; a ``FedsegError`` when it asks for a GPU that is not there."""
    import torch

    check_device_spec(spec)
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if spec == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if n else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    index = int(spec.split(":")[1]) if ":" in spec else (torch.cuda.current_device() if n else 0)
    if index >= n:
        raise FedsegError(
            f"device {spec} asked for, but this machine has {n} CUDA device(s); "
            "use --device cpu or --device auto"
        )
    return torch.device("cuda", index)


def check_device(spec: str) -> None:
    """Refuse, in one line, a CUDA device this machine lacks; ``auto`` and ``cpu`` always
    exist (and need no torch import: an exported model's CLI stays torch-free)."""
    if check_device_spec(spec).startswith("cuda"):
        resolve_device(spec)


def describe_device(device: torch.device) -> str:
    """What a run records about a device: ``cpu`` or ``cuda:0 (NVIDIA H200)``."""
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def compute_used(config: ComputeConfig) -> ComputeUsed:
    """What a run records about where it computes: ``config``'s device resolved on this
    machine (``describe_device``) and its precision; a ``FedsegError`` for a missing GPU."""
    return ComputeUsed.of(describe_device(resolve_device(config.device)), config.precision)


def autocast_dtype(precision: Precision) -> torch.dtype | None:
    """The autocast dtype of ``precision`` (None for fp32: no autocast)."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


@contextlib.contextmanager
def autocast(device: torch.device, precision: Precision) -> Iterator[None]:
    """Autocast for the forward pass and loss (nothing for fp32)."""
    import torch

    dtype = autocast_dtype(precision)
    if dtype is None:
        yield
        return
    with torch.autocast(device.type, dtype=dtype):
        yield


def grad_scaler(device: torch.device, precision: Precision) -> torch.amp.GradScaler:
    """The gradient scaler of ``precision``: enabled for fp16 only (bf16 has fp32's range)."""
    import torch

    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def place_network(net: nn.Module, config: ComputeConfig) -> torch.device:
    """Put ``net`` where ``config`` says, in place, and return the device.

    The parameters move to the device (keeping their identity, so an optimizer built on
    them stays valid), in channels-last 3D format when asked; ``compile`` compiles the
    module in place (``nn.Module.compile``: parameter and state names stay unprefixed),
    once. On CUDA, cuDNN autotuning is switched on for the process (3D convolutions of one
    patch size, the fastest algorithm is worth finding once).
    """
    import torch

    device = resolve_device(config.device)
    if config.channels_last:
        net.to(device, memory_format=torch.channels_last_3d)
    else:
        net.to(device)
    if config.compile and getattr(net, "_compiled_call_impl", None) is None:
        net.compile()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


def to_device(tensor: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """``tensor`` on ``device`` (asynchronous from pinned memory), channels-last 3D when
    asked and 5-D; the same tensor when nothing changes."""
    import torch

    if channels_last and tensor.dim() == 5:
        return tensor.to(device, non_blocking=True, memory_format=torch.channels_last_3d)
    return tensor.to(device, non_blocking=True)
