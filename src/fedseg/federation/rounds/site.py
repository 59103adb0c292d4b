"""A site's side of a round, engine-free: validate the global model, train, summarize.

Per-case validation values stay on the site: they go to a site-local run store inside
the site's workspace (default ``<data>/.fedseg/<run_id>/``), next to the site's Adam state,
which is carried from round to round locally (``optimizer_<round>.npz``) and never sent.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from fedseg.data.splits import load_split
from fedseg.errors import FedsegError
from fedseg.federation.rounds.tasks import TaskReply, TaskRequest, recipe_from_json
from fedseg.model.evaluate import summarize_cases
from fedseg.model.weights import load_arrays, save_arrays
from fedseg.tracking.store import RunStore
from fedseg.train.local import OptimizerState, train_local
from fedseg.train.validate import validate_cases

WORKSPACE = ".fedseg"


def site_workspace(data: Path, run_id: str, workspace: Path | None = None) -> Path:
    """Where a site keeps its private state for one federation run."""
    return Path(workspace) if workspace is not None else Path(data) / WORKSPACE / run_id


def run_task(site: str, data: Path, req: TaskRequest, workspace: Path | None = None) -> TaskReply:
    """Do ``req`` on the site's data folder: validate (per-case values kept locally, summaries
    returned), then train on the training split and return the new weights."""
    data = Path(data)
    if not data.is_dir():
        raise FedsegError(f"site {site}: data folder {data} not found or not a folder")
    network, train = recipe_from_json(req.recipe)
    split = load_split(data)
    ws = site_workspace(data, req.run_id, workspace)
    ws.mkdir(parents=True, exist_ok=True)
    reply = TaskReply(site=site, n_train=len(split.train), n_val=len(split.val))
    if req.validate and split.val:
        t0 = time.perf_counter()
        per_case = validate_cases(network, train, req.weights, split.val)
        with RunStore(ws) as local:
            for c in per_case:
                local.record_case_metrics(req.model_round, site, c.case_id, c.metrics)
        reply.validation = summarize_cases(per_case)
        reply.val_wall_s = time.perf_counter() - t0
    if req.epochs > 0:
        if not split.train:
            raise FedsegError(f"site {site}: no training cases in {data}")
        # Optimizer treatment of the plan (rounds.optimizer_state).
        mode = req.optimizer_mode
        state: OptimizerState | None = None
        if mode == "average":
            state = req.optimizer_state
        elif mode == "keep-local":
            state = _load_optimizer(ws, req.round)
        result = train_local(
            network, train, req.weights, state, split.train, req.epochs,
            seed=req.seed, proximal_mu=req.proximal_mu,
        )  # fmt: skip
        if mode == "keep-local":
            _save_optimizer(ws, req.round, result.optimizer_state)
        elif mode == "average":
            reply.optimizer_state = result.optimizer_state
        reply.weights = result.weights
        reply.n_train = result.n_train
        reply.train_loss = result.train_loss
        reply.train_wall_s = result.wall_s
    return reply


def _optimizer_files(ws: Path) -> dict[int, Path]:
    out = {}
    for p in ws.glob("optimizer_*.npz"):
        with contextlib.suppress(ValueError):
            out[int(p.stem.split("_")[1])] = p
    return out


def _load_optimizer(ws: Path, rnd: int) -> OptimizerState | None:
    """Adam state after the latest round before ``rnd`` (a redone round, after the aggregator
    was restarted, starts from the same state as the first attempt)."""
    files = {r: p for r, p in _optimizer_files(ws).items() if r < rnd}
    return load_arrays(files[max(files)]) if files else None


def _save_optimizer(ws: Path, rnd: int, state: OptimizerState) -> None:
    """Keep the states after rounds ``rnd`` and ``rnd - 1`` (enough to redo round ``rnd``)."""
    save_arrays(ws / f"optimizer_{rnd:04d}.npz", state)
    for r, p in _optimizer_files(ws).items():
        if r < rnd - 1:
            p.unlink(missing_ok=True)
