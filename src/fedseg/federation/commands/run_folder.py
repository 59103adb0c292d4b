"""A federation's run folder: created once from a plan, then continued by restarts.

``<run>/plan.yaml`` (site paths absolute), ``<run>/run.sqlite`` (meta ``run_id``: the name
the sites file their private state under), later ``models/``, ``best.pt``, ``logs/``,
``flwr-home/`` and the Flower app bundle ``flwr-app/``: the names and meta keys are the
contract in ``fedseg.run_folder``.

:func:`check_plan_runs` is the whole plan check that runs before any engine process starts
(a new run and every restart): the strategy and its parameters, the task's combinations
(``check_task``: what ``task: synthesis`` cannot run with, one line each), cross-site
validation asked for where it cannot run (``rounds.cross_site.check_cross_site``), a straggler
cut of a sequential plan (``rounds.straggler.check_straggler``), the privacy
mechanisms' combinations (``privacy_refusals``), the initial model (or generator), a
writable run folder (or the folder it will be made in) that has the free space a round's
model files take (:func:`round_bytes`: parameters x 4 bytes x ``ROUND_FILES``, and a
streaming strategy's spool of the sites' updates).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch

from fedseg.errors import FedsegError, PlanError
from fedseg.federation.commands.privacy_refusals import check_privacy
from fedseg.federation.rounds.cross_site import check_cross_site
from fedseg.federation.rounds.straggler import check_straggler
from fedseg.federation.rounds.strategies.base import Strategy
from fedseg.federation.rounds.strategies.registry import plan_strategy
from fedseg.federation.rounds.strategies.sequential import SequentialStrategy
from fedseg.model.config import NetworkConfig
from fedseg.model.generator import GeneratorConfig, new_generator_weights
from fedseg.model.registry import build_network
from fedseg.plan import PlanConfig, load_plan, save_plan
from fedseg.run_folder import PLAN_FILE, Task, folder_problem
from fedseg.tracking.store import RunStore

#: Model-sized files a round writes: the round model, its strategy state (at most two
#: moment arrays), and ``best.pt`` with its temporary copy.
ROUND_FILES = 5


def network_parameters(network: NetworkConfig) -> int:
    """Values in the network's weights (parameters and buffers), counted without allocating
    them (the network is built on torch's meta device)."""
    with torch.device("meta"):
        net = build_network(network)
    return sum(t.numel() for t in net.state_dict().values())


def generator_parameters(cfg: GeneratorConfig) -> int:
    """Values in the generator's weights (kernel and every bank)."""
    return sum(v.size for v in new_generator_weights(cfg, 0).values())


def round_bytes(plan: PlanConfig) -> int:
    """Bytes of the model files one round writes: parameters x 4 bytes x ``ROUND_FILES``,
    plus, for a streaming strategy, its spool while the round is aggregated (one update per
    site, three with the optimizer state averaged: ``rounds.spool``). The parameters are
    the network's, or the generator's with ``task: synthesis``."""
    if plan.task == Task.SYNTHESIS:
        model = generator_parameters(plan.synthesis.generator) * 4
    else:
        model = network_parameters(plan.network) * 4
    strategy = plan_strategy(plan)
    spool = 0
    if strategy.streams:
        per_site = 3 if strategy.params.optimizer_state == "average" else 1
        spool = len(plan.sites) * per_site * model
    return model * ROUND_FILES + spool


def check_plan_runs(plan: PlanConfig, run_dir: Path) -> int:
    """Everything that would stop the plan once its processes run, checked now: the
    strategy and its parameters, the privacy combinations, the initial model file, a
    writable run folder (or the folder it will be made in) with room for a round. Returns
    :func:`round_bytes`; raises a one-line ``PlanError`` (the plan) or ``FedsegError`` (the
    folder)."""
    strategy = plan_strategy(plan)
    check_task(plan, strategy)
    check_cross_site(plan)
    check_straggler(plan, isinstance(strategy, SequentialStrategy))
    check_privacy(plan, strategy)
    init = plan.initial_model.path
    if init is not None and not init.is_file():
        raise PlanError(f"initial_model.path {init} not found: fix the plan's initial_model")
    needed = round_bytes(plan)
    problem = folder_problem(run_dir, needed)
    if problem is not None:
        raise FedsegError(problem.message)
    return needed


def check_task(plan: PlanConfig, strategy: Strategy[Any]) -> None:
    """The one-line ``PlanError`` of the first combination the plan's ``task`` cannot run
    with: a strategy made for the other task; with ``task: synthesis`` the paper's central
    generator, the generator's Adam state averaged, secure aggregation or HE (their hidden
    sum has one weight per site), DP, a pre-training modality the generator lacks, a
    missing initial generator."""
    name = plan.strategy.name
    if plan.task not in strategy.tasks:
        fix = (
            "set task: synthesis or choose another strategy"
            if plan.task == Task.SEGMENTATION
            else f"set strategy.name: modality-fedavg ({name} would average a site's "
            "untouched bank into the modalities it lacks)"
        )
        raise PlanError(
            f"strategy {name} trains task {' or '.join(strategy.tasks)}, the plan's task is "
            f"{plan.task}: {fix}"
        )
    if plan.task != Task.SYNTHESIS:
        return
    syn, p = plan.synthesis, plan.privacy
    if syn.mode == "central":
        raise PlanError(
            "synthesis.mode central is not implemented: it would send label maps off the "
            "sites; use synthesis.mode federated"
        )
    if strategy.params.optimizer_state == "average":
        raise PlanError(
            "strategy.params.optimizer_state average: the generator's Adam state stays at "
            "the sites with task synthesis; choose keep-local or reset"
        )
    for key, on in (("privacy.secure_aggregation", p.secure_aggregation),
                    ("privacy.he", p.he.scheme != "none")):  # fmt: skip
        if on:
            raise PlanError(
                f"{key} cannot run with task synthesis: the hidden sum has one weight per "
                "site; modality-fedavg needs one per site and modality"
            )
    if p.dp.level != "none":
        raise PlanError(
            f"privacy.dp level {p.dp.level} is not supported with task synthesis (the "
            "discriminators touch the images, G's gradient flows through them): set "
            "privacy.dp.level none"
        )
    ref, mods = syn.pretrain.modality, syn.generator.modalities
    if ref != "auto" and ref not in mods:
        raise PlanError(
            f"synthesis.pretrain.modality {ref} is not one of the generator's modalities "
            f"({', '.join(mods)}): choose one of them or auto"
        )
    init = syn.initial_generator
    if init is not None and not Path(init).is_file():
        raise PlanError(
            f"synthesis.initial_generator {init} not found: fix the plan's synthesis section"
        )


def prepare_run(
    plan_path: Path, out: Path, *, enrolled: Collection[str] | None = None
) -> PlanConfig:
    """Create the run folder ``out`` with its plan (site paths made absolute) and store.

    ``enrolled`` None is a simulation: every site needs its data folder. A deployment gives
    the enrolled site names: every plan site must be one, and the sites keep their data
    folders (a plan's ``data`` is ignored)."""
    plan = load_plan(plan_path)
    if enrolled is not None:
        missing = [name for name in plan.sites if name not in enrolled]
        if missing:
            raise FedsegError(
                f"plan site(s) {', '.join(missing)} not enrolled (enrolled: "
                f"{', '.join(enrolled)}); sign their requests with `fedseg pki sign` first"
            )
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FedsegError(
            f"{out} exists and is not empty: pick a new --out, or continue that run with "
            f"`fedseg resume {out}`"
        )
    for name, site in plan.sites.items() if enrolled is None else ():
        if site.data is None:
            raise FedsegError(f"plan site {name} has no data folder; simulation needs one")
        if not site.data.is_dir():
            raise FedsegError(f"plan site {name}: data folder {site.data} not found")
    needed = check_plan_runs(plan, out)
    out.mkdir(parents=True, exist_ok=True)
    save_plan(out / PLAN_FILE, plan)
    with RunStore(out) as store:
        store.meta.set_created(f"{out.resolve().name}-{uuid.uuid4().hex[:8]}")
        store.meta.set_round_bytes(needed)
    return plan
