"""Centralized training (``fedseg train``): one model on the pooled training cases of one
or more sites, validated on their validation cases every epoch, resumable after a crash.

Run folder::

    recipe.yaml          the recipe used (network + train)
    run.sqlite           RunStore: epochs as rounds; site_rounds row "central" (its extra
                         says the device and precision of the epoch, as a federation's
                         rows do; meta ``compute`` the latest); validation summaries and
                         per-case metrics per data folder (plus "central" pooled when
                         there are several); model_round = epoch trained; the row's
                         extra also says the epoch's lr (``train.lr_schedule`` with an
                         epoch as its round, over the run's ``epochs``)
    checkpoints/last.ckpt  training state after the last finished epoch (weights, Adam
                         state, epoch, best score, seed), one npz (``save_arrays``) with
                         the weights under ``weights/``, the Adam state under
                         ``optimizer/`` and the numbers as 0-d arrays: the data order of
                         epoch e is a function of (seed, e), so this is all a resume needs
    last.pt, best.pt     model files (model_file.save_model) of the last / best-Dice epoch

The recipe's ``train.compute`` gives the device and precision; ``compute`` (``fedseg train
--device/--precision``) overrides them for this machine and this invocation (a resume takes
its own: ``recipe.yaml`` keeps the recipe, the store what each epoch used).

An epoch's rows are written before its checkpoint and the round is marked done after it,
so a run killed at any point resumes from the last checkpoint and discards later rows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from fedseg.data.cases import Case
from fedseg.data.labels import REGIONS
from fedseg.errors import FedsegError
from fedseg.model.compute import ComputeOverrides, compute_used
from fedseg.model.evaluate import CaseResult, summarize_cases
from fedseg.model.model_file import ModelFile, save_model
from fedseg.model.registry import new_network
from fedseg.model.summary import Summary
from fedseg.model.weights import Weights, get_weights, load_arrays, nest, save_arrays, unnest
from fedseg.run_folder import (
    BEST_MODEL,
    CHECKPOINT,
    LAST_MODEL,
    LR_USED,
    RECIPE_FILE,
    STORE_FILE,
    ComputeUsed,
    RoundStatus,
    SiteRoundStatus,
)
from fedseg.tracking.plateau_stop import plateau_stop
from fedseg.tracking.store import RunStore, SiteRound
from fedseg.train.config import RecipeConfig
from fedseg.train.loader import CaseStore, EpochLoader
from fedseg.train.local import (
    OptimizerState,
    fit_epoch,
    load_optimizer_state,
    new_optimizer,
    optimizer_state_dict,
    place_for_training,
    train_progress,
)
from fedseg.train.lr_schedule import round_lr
from fedseg.train.plateau import PlateauConfig
from fedseg.train.validate import validate_network

CENTRAL = "central"


@dataclass(frozen=True)
class SiteData:
    """One data folder's split: ``name`` labels its validation rows in the store."""

    name: str
    train: list[Case]
    val: list[Case]
    root: Path | None = None


@dataclass
class TrainingState:
    """What a resume needs: the state after ``epoch`` finished epochs (0: none yet)."""

    epoch: int
    weights: Weights | None
    optimizer_state: OptimizerState | None
    seed: int
    best_score: float = -math.inf
    best_epoch: int = 0


@dataclass
class RunResult:
    """A finished (or resumed and finished) run: epochs done, best epoch and its mean Dice."""

    out: Path
    epochs: int
    best_epoch: int
    best_score: float
    history: list[dict[str, Any]] = field(default_factory=list)


#: the numbers of a ``TrainingState`` in its checkpoint, as 0-d arrays of these dtypes
_SCALARS: dict[str, type[np.generic]] = {
    "epoch": np.int64, "seed": np.int64, "best_score": np.float64, "best_epoch": np.int64,
}  # fmt: skip


def save_state(path: Path, state: TrainingState) -> None:
    """Write the training state atomically (``save_arrays``: temp file, fsync, rename)."""
    scalars = {k: np.array(getattr(state, k), dtype=t) for k, t in _SCALARS.items()}
    weights, opt = nest("weights", state.weights), nest("optimizer", state.optimizer_state)
    save_arrays(path, {**scalars, **weights, **opt})


def load_state(path: Path) -> TrainingState:
    """Read a state written by ``save_state``."""
    try:
        arrays = load_arrays(path)
        scalars = {k: arrays[k].item() for k in _SCALARS}
    except Exception as exc:
        raise FedsegError(
            f"{path}: unreadable checkpoint ({exc.__class__.__name__}); "
            "start a new run with another --out"
        ) from None
    return TrainingState(
        epoch=int(scalars["epoch"]),
        weights=unnest("weights", arrays) or None,
        optimizer_state=unnest("optimizer", arrays) or None,
        seed=int(scalars["seed"]),
        best_score=float(scalars["best_score"]),
        best_epoch=int(scalars["best_epoch"]),
    )


def site_names(roots: Sequence[Path]) -> list[str]:
    """Folder names as site names, made unique with a ``-2``, ``-3`` suffix."""
    names: list[str] = []
    for r in roots:
        base = Path(r).resolve().name or "site"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def _case_ids(sites: Sequence[SiteData]) -> dict[str, dict[str, list[str]]]:
    return {
        s.name: {"train": [c.case_id for c in s.train], "val": [c.case_id for c in s.val]}
        for s in sites
    }


def _dice_line(summaries: dict[str, dict[str, Summary]]) -> str:
    parts = [f"{r} {summaries[r]['dice'].mean:.3f}" for r in REGIONS if r in summaries]
    return "Dice " + " ".join(parts) if parts else "no validation cases"


def run_training(
    out: Path,
    sites: Sequence[SiteData],
    epochs: int,
    *,
    recipe: RecipeConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    console: Console | None = None,
    compute: ComputeOverrides | None = None,
) -> RunResult:
    """Train ``epochs`` epochs in total in run folder ``out`` (continuing it when ``resume``).

    A new run needs ``recipe`` and an ``out`` without a run in it; a resumed run reads its
    recipe from the folder and must see the same training and validation cases.
    ``compute``: this machine's choices over the recipe's ``train.compute``.
    """
    out = Path(out)
    console = console or Console()
    ckpt = out / CHECKPOINT
    if resume:
        if not (out / STORE_FILE).is_file() or not (out / RECIPE_FILE).is_file():
            raise FedsegError(f"{out}: no run to resume (no {RECIPE_FILE} / {STORE_FILE} there)")
        recipe = RecipeConfig.from_yaml(out / RECIPE_FILE)
    else:
        if recipe is None:
            raise FedsegError("a new run needs a recipe (--config FILE or --config cpu)")
        if (out / STORE_FILE).exists() or ckpt.exists():
            raise FedsegError(f"{out} already holds a run; continue it with --resume {out}")
    train = recipe.train.with_compute(compute)
    # a GPU this machine lacks: one line, before anything is written
    used = compute_used(train.compute)
    if not resume:
        out.mkdir(parents=True, exist_ok=True)
        (out / RECIPE_FILE).write_text(recipe.to_yaml())
    train_cases = [c for s in sites for c in s.train]
    if not train_cases:
        raise FedsegError("no training cases in the given data folders; check their splits")
    with RunStore(out) as store:
        ids = _case_ids(sites)
        if resume:
            recorded = store.meta.cases()
            if recorded is not None and recorded != ids:
                raise FedsegError(
                    f"{out}: the data folders' splits differ from the run's; resume with the "
                    "same data, or start a new run"
                )
            state = load_state(ckpt) if ckpt.exists() else TrainingState(0, None, None, train.seed)
            store.discard_after(state.epoch)
            done = {r["round"]: r["status"] for r in store.rounds()}
            if state.epoch and done.get(state.epoch) != RoundStatus.DONE:
                store.finish_round(state.epoch, n_sites=len(sites), note="finished on resume")
            store.log(f"resumed after epoch {state.epoch}")
            console.print(f"resuming {out} after epoch {state.epoch}")
        else:
            state = TrainingState(0, None, None, train.seed)
            store.meta.set_centralized(
                [s.name for s in sites], [str(s.root) if s.root else None for s in sites], ids
            )
        store.meta.set_epochs(epochs)
        store.meta.set_compute(used)
        recipe = recipe.model_copy(update={"train": train})  # this machine's compute
        return _loop(out, store, recipe, sites, train_cases, epochs, state, progress, console,
                     used)  # fmt: skip


def _record_checkpoints(store: RunStore, out: Path, epoch: int, best_epoch: int) -> None:
    """The checkpoint rows of a centralized run name the files that hold those epochs'
    weights: ``last.pt`` the latest epoch, ``best.pt`` the best one; the other epochs'
    weights were overwritten, so they have no row (``fedseg select`` picks among these)."""
    keep = {epoch: out / LAST_MODEL}
    if best_epoch and best_epoch != epoch:
        keep[best_epoch] = out / BEST_MODEL
    store.forget_checkpoints([r for r in store.checkpoints() if r not in keep])
    for r, path in keep.items():
        store.record_checkpoint(r, path)


def _plateaued(store: RunStore, cfg: PlateauConfig, sites: Sequence[SiteData], trained: int,
               epochs: int, console: Console) -> bool:  # fmt: skip
    """``train.plateau`` over the epochs' scores (the pooled ones with several sites); a
    stop is recorded, logged and printed."""
    pooled = [CENTRAL] if len(sites) > 1 else None
    stop = plateau_stop(store, cfg, trained, epochs, sites=pooled)
    if stop is None:
        return False
    line = (f"stopped after epoch {trained} of {epochs}: the validation score has not gained "
            f"more than {cfg.min_delta:g} since epoch {stop.best_round} in {cfg.rounds} "
            "epochs (train.plateau)")  # fmt: skip
    store.log(line)
    console.print(line, highlight=False)
    return True


def _loop(
    out: Path,
    store: RunStore,
    recipe: RecipeConfig,
    sites: Sequence[SiteData],
    train_cases: list[Case],
    epochs: int,
    state: TrainingState,
    progress: bool,
    console: Console,
    used: ComputeUsed,
) -> RunResult:
    train = recipe.train
    net = new_network(recipe.network, state.weights, state.seed)
    setup = place_for_training(net, train.compute)  # once: a compiled network stays compiled
    opt = new_optimizer(net, train)
    if state.optimizer_state:
        load_optimizer_state(opt, net, state.optimizer_state)
    case_store = CaseStore(train_cases, train.patch_size, train.cache_mb)
    n_val = sum(len(s.val) for s in sites)
    history: list[dict[str, Any]] = []
    bar = train_progress() if progress else None
    if bar is not None:
        bar.start()
    data = EpochLoader(case_store, train, state.seed, pin_memory=setup.device.type == "cuda")
    try:
        for epoch in range(state.epoch + 1, epochs + 1):
            if _plateaued(store, train.plateau, sites, state.epoch, epochs, console):
                break
            t0 = time.perf_counter()
            store.start_round(epoch)
            lr = round_lr(train.lr, train.lr_schedule, epoch, epochs)
            for group in opt.param_groups:  # the recipe's schedule, a round being an epoch
                group["lr"] = lr
            stats = fit_epoch(net, opt, data, epoch=epoch - 1, progress=bar, setup=setup)
            pooled: list[CaseResult] = []
            with torch.inference_mode():
                for s in sites:
                    if not s.val:
                        continue
                    results = validate_network(net, train, s.val, progress=bar)
                    for r in results:
                        store.record_case_metrics(epoch, s.name, r.case_id, r.metrics)
                    store.record_validation(epoch, s.name, summarize_cases(results))
                    pooled += results
            summaries = summarize_cases(pooled)
            if len(sites) > 1 and pooled:
                store.record_validation(epoch, CENTRAL, summaries)
            score = summaries["mean"]["dice"].mean if pooled else math.nan
            weights = get_weights(net)
            meta = {"run": str(out), "epoch": epoch, "mean_dice": score}
            model = ModelFile(recipe.network, weights, train.val_roi, meta=meta)
            save_model(out / LAST_MODEL, model)
            if score > state.best_score:
                save_model(out / BEST_MODEL, model)
                state.best_score, state.best_epoch = score, epoch
            wall = time.perf_counter() - t0
            store.record_site_round(
                SiteRound(
                    epoch, CENTRAL, SiteRoundStatus.OK, n_train=len(case_store), n_val=n_val,
                    train_loss=stats.loss, wall_s=wall,
                    extra={"steps": stats.steps, "data_wait_s": stats.data_wait_s,
                           "compute_s": stats.compute_s, LR_USED: lr, **used.extra()},
                )
            )  # fmt: skip
            _record_checkpoints(store, out, epoch, state.best_epoch)
            state.epoch, state.weights = epoch, weights
            state.optimizer_state = optimizer_state_dict(opt, net)
            save_state(out / CHECKPOINT, state)
            store.finish_round(epoch, n_sites=len(sites))
            history.append({"epoch": epoch, "loss": stats.loss, "mean_dice": score})
            line = (
                f"epoch {epoch}/{epochs}  loss {stats.loss:.4f}  {_dice_line(summaries)}  "
                f"(mean {score:.3f})  {wall:.1f} s"
            )
            if bar is not None:
                bar.console.print(line, highlight=False)
            else:
                console.print(line, highlight=False)
    finally:
        data.close()
        if bar is not None:
            bar.stop()
    return RunResult(out, state.epoch, state.best_epoch, state.best_score, history)
