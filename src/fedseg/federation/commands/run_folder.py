"""A federation's run folder: created once from a plan, then continued by restarts.

``<run>/plan.yaml`` (site paths absolute), ``<run>/run.sqlite`` (meta ``run_id``: the name
the sites file their private state under), later ``models/``, ``best.pt``, ``logs/``,
``flwr-home/`` and the Flower app bundle ``flwr-app/``: the names and meta keys are the
contract in ``fedseg.run_folder``.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from fedseg.errors import FedsegError
from fedseg.federation.engine.app_bundle import ConfigValue, run_config, write_app
from fedseg.plan import PlanConfig, load_plan, save_plan
from fedseg.run_folder import PLAN_FILE
from fedseg.tracking.store import RunStore


def prepare_run(plan_path: Path, out: Path, *, simulation: bool = True) -> PlanConfig:
    """Create the run folder ``out`` with its plan (site paths made absolute) and store.
    A simulation needs every site's data folder; a deployment's sites keep theirs."""
    plan = load_plan(plan_path)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FedsegError(
            f"{out} exists and is not empty: pick a new --out, or continue that run with "
            f"`fedseg resume {out}`"
        )
    for name, site in plan.sites.items() if simulation else ():
        if site.data is None:
            raise FedsegError(f"plan site {name} has no data folder; simulation needs one")
        if not site.data.is_dir():
            raise FedsegError(f"plan site {name}: data folder {site.data} not found")
    out.mkdir(parents=True, exist_ok=True)
    save_plan(out / PLAN_FILE, plan)
    with RunStore(out) as store:
        store.meta.set_created(f"{out.resolve().name}-{uuid.uuid4().hex[:8]}")
    return plan


def deployment_app(
    plan_path: Path | None, run_dir: Path
) -> tuple[Path, dict[str, ConfigValue], Path]:
    """For ``fedseg server start``: the Flower app folder, run config and run folder of a
    deployed federation. ``plan_path`` None continues the run folder (resume)."""
    run_dir = Path(run_dir)
    if plan_path is not None:
        prepare_run(plan_path, run_dir, simulation=False)
    elif not (run_dir / PLAN_FILE).is_file():
        raise FedsegError(f"{run_dir} has no {PLAN_FILE}: start it with a plan first")
    load_plan(run_dir / PLAN_FILE)
    with RunStore(run_dir) as store:
        run_id = store.meta.run_id() or run_dir.name
        store.meta.set_aggregator_pid(None)
    return write_app(run_dir), run_config(run_dir, run_id), run_dir.resolve()
