"""A federation's run folder: created once from a plan, then continued by restarts.

``<run>/plan.yaml`` (site paths absolute), ``<run>/run.sqlite`` (meta ``run_id``: the name
the sites file their private state under), later ``models/``, ``best.pt``, ``logs/``,
``flwr-home/`` and the Flower app bundle ``flwr-app/``: the names and meta keys are the
contract in ``fedseg.run_folder``.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from pathlib import Path

from fedseg.errors import FedsegError
from fedseg.plan import PlanConfig, load_plan, save_plan
from fedseg.run_folder import PLAN_FILE
from fedseg.tracking.store import RunStore


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
    out.mkdir(parents=True, exist_ok=True)
    save_plan(out / PLAN_FILE, plan)
    with RunStore(out) as store:
        store.meta.set_created(f"{out.resolve().name}-{uuid.uuid4().hex[:8]}")
    return plan
