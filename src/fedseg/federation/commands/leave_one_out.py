"""``fedseg contributions --loso``: the run's federation once without each site.

Each reduced federation (``fedseg.plan.plan_without``) is simulated into
``<base>/without_SITE`` (its plan beside it, ``<base>/plan_without_SITE.yaml``); a finished
one is reused, an unfinished one is an error (resume or remove it). The contribution of a
site is then computed from the run stores (``tracking.contributions.leave_one_site_out``).
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from fedseg.errors import FedsegError
from fedseg.federation.commands.simulate import simulate
from fedseg.plan import load_plan, plan_without, save_plan
from fedseg.run_folder import LOSO_DIR, PLAN_FILE, STORE_FILE, RunStatus, loso_plan, loso_run
from fedseg.tracking.contributions import leave_one_site_out
from fedseg.tracking.status import open_run


def run_without(run: Path, site: str, base: Path, console: Console | None = None) -> Path:
    """The run folder of ``run``'s federation without ``site`` (simulated when missing)."""
    out = loso_run(base, site)
    if (out / STORE_FILE).is_file():
        with open_run(out) as store:
            if store.meta.status() == RunStatus.DONE:
                return out
        raise FedsegError(f"{out} holds an unfinished run; remove it or `fedseg resume` it")
    reduced = plan_without(load_plan(Path(run) / PLAN_FILE), site)
    plan_path = save_plan(loso_plan(base, site), reduced)
    (console or Console(stderr=True)).print(
        f"leave-one-site-out: federation without {site} -> {out}"
    )
    simulate(plan_path, out, live=False)
    return out


def loso_values(
    run: Path, base: Path | None = None, console: Console | None = None
) -> dict[str, float]:
    """Per site: the leave-one-site-out contribution (``<run>/loso`` by default for the
    reduced runs)."""
    run = Path(run)
    folder = Path(base) if base is not None else run / LOSO_DIR
    return leave_one_site_out(run, lambda site: run_without(run, site, folder, console))
