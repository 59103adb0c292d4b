"""The options of the commands that can train until the validation curve plateaus
(``train.plateau``): ``fedseg train`` and ``fedseg compare``, whose epochs or budget are
then the cap."""

from __future__ import annotations

import typer

from fedseg.train.config import TrainConfig
from fedseg.train.plateau import PlateauConfig

UNTIL_PLATEAU = typer.Option(
    None, "--until-plateau", min=1,
    help="Stop once the validation Dice has gained no more than --min-delta in this many "
    "rounds (centralized: epochs); --epochs/--budget is then the cap (recipe train.plateau).",
)  # fmt: skip
MIN_DELTA = typer.Option(
    0.001, "--min-delta", min=0.0, help="With --until-plateau: the gain in mean Dice that counts."
)


def with_plateau(train: TrainConfig, until_plateau: int | None, min_delta: float) -> TrainConfig:
    """``train`` with the options' ``plateau`` (unchanged without --until-plateau)."""
    if until_plateau is None:
        return train
    plateau = PlateauConfig(rounds=until_plateau, min_delta=min_delta)
    return train.model_copy(update={"plateau": plateau})
