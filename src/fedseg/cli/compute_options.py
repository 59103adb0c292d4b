"""The options a command takes to choose this machine's device and precision.

Use them as defaults of a typer command's parameters and turn them into one
``ComputeOverrides`` with ``compute_overrides`` (None everywhere: the recipe's choices)::

    def train(..., device: str | None = DEVICE, precision: str | None = PRECISION,
              channels_last: bool | None = CHANNELS_LAST, compile_: bool | None = COMPILE):
        overrides = compute_overrides(device, precision, channels_last, compile_)
"""

from __future__ import annotations

import typer
from pydantic import ValidationError

from fedseg.model.compute import PRECISIONS, ComputeOverrides

DEVICE = typer.Option(
    None, "--device", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N; "
    "default: the recipe's train.compute.device",
)  # fmt: skip
PRECISION = typer.Option(
    None, "--precision", help=f"{', '.join(PRECISIONS)}: autocast precision of the forward "
    "pass and loss (weights, metrics and averages stay fp32); default: the recipe's",
)  # fmt: skip
CHANNELS_LAST = typer.Option(
    None, "--channels-last/--no-channels-last", help="channels-last 3D memory format "
    "(default: the recipe's)", show_default=False,
)  # fmt: skip
COMPILE = typer.Option(
    None, "--compile/--no-compile", help="torch.compile the network (default: the recipe's)",
    show_default=False,
)  # fmt: skip


def compute_overrides(
    device: str | None,
    precision: str | None,
    channels_last: bool | None = None,
    compile_: bool | None = None,
) -> ComputeOverrides:
    """The machine's choices as ``ComputeOverrides``; a bad value is a typer usage error
    naming the option."""
    if precision is not None and precision not in PRECISIONS:
        raise typer.BadParameter(f"use one of {', '.join(PRECISIONS)}", param_hint="--precision")
    try:
        return ComputeOverrides.model_validate(
            {"device": device, "precision": precision, "channels_last": channels_last,
             "compile": compile_}
        )  # fmt: skip
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise typer.BadParameter(msg, param_hint="--device") from None
