"""`fedseg train`: centralized training on one or more sites' splits, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from fedseg.cli.compute_options import (
    CHANNELS_LAST,
    COMPILE,
    DEVICE,
    PRECISION,
    compute_overrides,
)
from fedseg.cli.plateau_options import MIN_DELTA, UNTIL_PLATEAU, with_plateau
from fedseg.data.splits import load_split
from fedseg.errors import FedsegError
from fedseg.run_folder import RECIPE_FILE, STORE_FILE
from fedseg.tracking.store import RunStore
from fedseg.train.config import RecipeConfig

if TYPE_CHECKING:
    from fedseg.federation.commands.central_training import SiteData


def _recipe(config: str | None) -> RecipeConfig:
    if config is None:
        return RecipeConfig()
    if config == "cpu" and not Path(config).exists():
        return RecipeConfig.cpu()
    return RecipeConfig.from_yaml(Path(config))


def _sites(roots: list[Path]) -> list[SiteData]:
    # torch is imported by the runner: only when training, so `fedseg` starts without it.
    from fedseg.federation.commands.central_training import SiteData, site_names

    sites = []
    for name, root in zip(site_names(roots), roots, strict=True):
        if not root.is_dir():
            raise FedsegError(f"{root}: data folder not found")
        split = load_split(root)
        sites.append(SiteData(name, list(split.train), list(split.val), root.resolve()))
    return sites


def train(
    data: list[Path] = typer.Option(
        None, "--data", help="Site data folder (repeat to pool several: the centralized baseline)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Run folder to create."),
    config: str | None = typer.Option(
        None, "--config", help="Recipe YAML (network + train); 'cpu' for the small CPU preset."
    ),
    epochs: int | None = typer.Option(
        None, "--epochs", min=1, help="Total epochs (default 10; on --resume, the run's)."
    ),
    resume: Path | None = typer.Option(
        None, "--resume", help="Continue the run in this folder from its last checkpoint."
    ),
    until_plateau: int | None = UNTIL_PLATEAU,
    min_delta: float = MIN_DELTA,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    device: str | None = DEVICE,
    precision: str | None = PRECISION,
    channels_last: bool | None = CHANNELS_LAST,
    compile_: bool | None = COMPILE,
) -> None:
    """Train one model on the training splits of the --data folders, validating every epoch.

    Writes recipe.yaml, run.sqlite, checkpoints/last.ckpt, last.pt and best.pt into the run
    folder. Killed at any moment, `fedseg train --resume RUN` continues where it stopped.
    --device/--precision override the recipe's train.compute on this machine (a resume
    takes them again); the run store records what each epoch used.
    """
    compute = compute_overrides(device, precision, channels_last, compile_)
    from fedseg.federation.commands.central_training import run_training

    if resume is not None:
        if out is not None or config is not None or until_plateau is not None:
            raise FedsegError(
                "--resume takes the run's own recipe and folder; drop --out, --config "
                "and --until-plateau"
            )
        if not (resume / RECIPE_FILE).is_file() or not (resume / STORE_FILE).is_file():
            raise FedsegError(f"{resume}: no run to resume (no {RECIPE_FILE} / {STORE_FILE} there)")
        with RunStore(resume) as store:
            dirs = store.meta.data_dirs()
            total = epochs or store.meta.epochs() or 10
        if data:
            raise FedsegError("--resume uses the run's own data folders; drop --data")
        if not dirs or any(d is None for d in dirs):
            raise FedsegError(f"{resume}: the run does not record its data folders")
        run_training(resume, _sites([Path(d) for d in dirs]), total, resume=True,
                     progress=progress, compute=compute)  # fmt: skip
        return
    if not data:
        raise FedsegError("give at least one --data DIR (a site folder with a split)")
    if out is None:
        raise FedsegError("give the run folder with --out RUN")
    recipe = _recipe(config)
    recipe = recipe.model_copy(
        update={"train": with_plateau(recipe.train, until_plateau, min_delta)}
    )
    run_training(out, _sites(data), epochs or 10, recipe=recipe, progress=progress,
                 compute=compute)  # fmt: skip
