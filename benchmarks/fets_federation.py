"""End-to-end: a federation of the full FeTS network, with and without model retention.

Issue 13's end-to-end number: 3 sites train the FeTS network (30 base filters, depth 4,
30.2 M parameters) for 2 rounds through ``fedseg simulate`` (real Flower processes). On a
CPU with 64^3 patches on 2 mm synthetic cases (BraTS 240x240x155 at 1 mm is 120x120x78 at
2 mm), a few cases per site. Printed per run:

- wall time per round (the run store's ``rounds.wall_s``) and the sites' train/validate time;
- peak memory per process: the aggregator (the ServerApp process, which runs the
  coordinator), the SuperLink (it relays every model), each site's SuperNode and its
  ClientApp processes (one per message; the max over them), and this launcher. Read as
  the kernel's peak resident set, ``VmHWM`` in ``/proc/PID/status``, sampled every 0.2 s
  for every process whose environment carries the run's ``FLWR_HOME`` (the engine's own
  marker), so a process's last 0.2 s may be missed; the launcher's own is ``ru_maxrss``;
- bytes per round: the store's ``site_rounds.bytes_sent``/``bytes_received`` summed over
  the sites, against the model's size;
- the run folder's size (and its ``models/``) with every model kept (``retention:
  keep_every: null``) and with the default retention, and what 500 rounds would keep.

The real measurement (minutes on a CPU; run it on a quiet machine)::

    python benchmarks/fets_federation.py                 # FeTS: 30 filters, depth 4, 64^3, 2 mm
    python benchmarks/fets_federation.py --threads-per-site 4 --cases 4

A smoke test with tiny settings (seconds)::

    python benchmarks/fets_federation.py --base-filters 4 --patch 32 --spacing 4 --cases 2

``--retention all`` or ``--retention default`` runs one of the two.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fedseg.data.synth.config import SynthConfig
from fedseg.data.synth.generate import generate_dataset
from fedseg.federation.commands.simulate import simulate
from fedseg.federation.rounds.aggregation import n_bytes
from fedseg.federation.rounds.coordinator import initial_weights
from fedseg.federation.rounds.retention import kept_rounds
from fedseg.model.config import NetworkConfig
from fedseg.plan import PlanConfig, RetentionConfig, SiteConfig, save_plan
from fedseg.run_folder import FLWR_HOME, MODELS_DIR
from fedseg.tracking.store import RunStore, SiteRound
from fedseg.train.config import TrainConfig

RETENTIONS = {"all": RetentionConfig(keep_every=None), "default": RetentionConfig()}


# -- peak memory of the engine's processes ----------------------------------------------
def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def _peak_kb(pid: int) -> int:
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith(b"VmHWM:"):
            return int(line.split()[1])
    return 0


def _ppid(pid: int) -> int:
    stat = _read(f"/proc/{pid}/stat")
    return int(stat.rsplit(b")", 1)[1].split()[1]) if stat else 0


def _cmdline(pid: int) -> str:
    return _read(f"/proc/{pid}/cmdline").replace(b"\0", b" ").decode(errors="replace")


def _site_of(cmd: str) -> str | None:
    found = re.search(r"site-name=[\"']?([^\"'\s,]+)", cmd)
    return found.group(1) if found else None


def role_of(pid: int, cmd: str) -> str:
    """``aggregator (ServerApp)``, ``superlink``, ``SITE supernode`` (the site's app guard
    and its SuperNode), ``SITE app`` (the per-message ClientApp processes) or the program's
    name (Flower's SuperExec, ``flwr run``)."""
    if "flwr-serverapp" in cmd:
        return "aggregator (ServerApp)"
    if "fleet_gateway" in cmd or "flower-superlink" in cmd:
        return "superlink"
    p, site, chain = pid, None, []
    while p > 1 and len(chain) < 8 and site is None:  # up to the site's app guard
        chain.append(_cmdline(p))
        site, p = _site_of(chain[-1]), _ppid(p)
    words = cmd.split()
    if site is not None and any("app_guard task" in c for c in chain):  # or its loader
        return f"{site} app (one per message; loader workers apart)"
    if site is not None:
        return f"{site} supernode"
    names = [Path(w).name for w in words]
    return next((n for n in names if not n.startswith("python")), "?")


@dataclass
class PeakSampler:
    """Samples ``VmHWM`` of every process whose environment carries ``marker``."""

    marker: bytes
    interval_s: float = 0.2
    peaks: dict[int, tuple[str, int]] = field(default_factory=dict)  # pid -> (role, kB)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _sample(self) -> None:
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            pid = int(name)
            if pid not in self.peaks and self.marker not in _read(f"/proc/{pid}/environ"):
                continue
            kb = _peak_kb(pid)
            if pid not in self.peaks:
                cmd = _cmdline(pid)
                if not cmd:
                    continue
                self.peaks[pid] = (role_of(pid, cmd), kb)
            role, old = self.peaks[pid]
            self.peaks[pid] = (role, max(old, kb))

    def run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> PeakSampler:
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def by_role(self) -> dict[str, tuple[int, int]]:
        """``role -> (max peak in MB, processes)``."""
        out: dict[str, tuple[int, int]] = {}
        for role, kb in self.peaks.values():
            mb, n = out.get(role, (0, 0))
            out[role] = (max(mb, kb // 1024), n + 1)
        return dict(sorted(out.items()))


# -- the runs ----------------------------------------------------------------------------
def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def make_plan(args: argparse.Namespace, data: Path, sites: list[str]) -> PlanConfig:
    patch = (args.patch,) * 3
    return PlanConfig(
        name="fets-bench",
        sites={s: SiteConfig(data=data / s) for s in sites},
        rounds=args.rounds,
        min_sites=len(sites),
        round_timeout_s=24 * 3600,
        network=NetworkConfig(base_filters=args.base_filters, depth=args.depth),
        train=TrainConfig(patch_size=patch, val_roi=patch),  # the FeTS recipe, smaller tiles
        privacy={"min_summary_cases": 1},
    )


def one_run(
    args: argparse.Namespace, work: Path, plan: PlanConfig, name: str, con: Console
) -> tuple[Path, dict[int, float], list[SiteRound], list[int], dict[str, tuple[int, int]]]:
    """One ``fedseg simulate`` with retention ``name``: its folder, each round's wall time,
    the site rounds, the model rounds kept and the peak memory by role."""
    run = work / f"run-{name}"
    shutil.rmtree(run, ignore_errors=True)  # this benchmark's own run of a previous call
    plan = plan.model_copy(update={"retention": RETENTIONS[name]})
    plan_path = save_plan(work / f"plan-{name}.yaml", plan)
    con.print(f"[bold]fedseg simulate[/] retention {name} -> {run}")
    marker = f"FLWR_HOME={(run / FLWR_HOME).resolve()}".encode()
    with PeakSampler(marker) as sampler:
        simulate(plan_path, run, live=False, console=con, threads_per_site=args.threads_per_site)
    with RunStore(run) as store:
        rounds = {r["round"]: r["wall_s"] for r in store.rounds()}
        srs = store.site_rounds()
        kept = sorted(store.checkpoints())
    return run, rounds, srs, kept, sampler.by_role()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--cases", type=int, default=3, help="cases per site")
    ap.add_argument("--base-filters", type=int, default=30)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--spacing", type=float, default=2.0, help="mm; 2: 120x120x78 voxels")
    ap.add_argument("--threads-per-site", type=int, default=1)
    ap.add_argument("--retention", choices=["both", *RETENTIONS], default="both")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: tmp)")
    args = ap.parse_args()
    con = Console()
    work = args.keep or Path(tempfile.mkdtemp(prefix="fedseg-fets-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    cfg = SynthConfig(sites=args.sites, cases_per_site=args.cases, seed=0, spacing=args.spacing)
    con.print(f"work folder {work}: {args.sites} sites x {args.cases} cases, "
              f"{'x'.join(map(str, cfg.grid_shape()))} voxels at {args.spacing:g} mm")  # fmt: skip
    if not (data / "synth.yaml").is_file():
        generate_dataset(data, cfg, workers=min(4, os.cpu_count() or 1))
    sites = cfg.site_names()
    plan = make_plan(args, data, sites)
    model_bytes = n_bytes(initial_weights(plan))
    con.print(
        f"network: {args.base_filters} base filters, depth {args.depth}, model "
        f"{model_bytes / 1e6:.1f} MB; patch {args.patch}^3; {args.rounds} rounds"
    )
    names = list(RETENTIONS) if args.retention == "both" else [args.retention]
    sizes = {}
    for name in names:
        run, rounds, srs, kept, peaks = one_run(args, work, plan, name, con)
        t = Table(title=f"retention {name}: per round")
        for c in ("round", "wall s", "site train s (mean)", "site val s (mean)",
                  "bytes sent (all sites)", "bytes received", "sent / model size"):  # fmt: skip
            t.add_column(c, justify="right")
        for r, wall in sorted(rounds.items()):
            rows = [s for s in srs if s.round == r]
            sent = sum(s.bytes_sent or 0 for s in rows)
            recv = sum(s.bytes_received or 0 for s in rows)
            ex = [s.extra or {} for s in rows]
            t.add_row(
                str(r), f"{wall:.1f}", f"{np.mean([e.get('train_wall_s', 0) for e in ex]):.1f}",
                f"{np.mean([e.get('val_wall_s', 0) for e in ex]):.1f}", f"{sent:,}",
                f"{recv:,}", f"{sent / model_bytes:.2f}",
            )  # fmt: skip
        con.print(t)
        m = Table(title=f"retention {name}: peak memory per process (VmHWM, MB)")
        for c in ("process", "peak MB", "processes"):
            m.add_column(c, justify="left" if c == "process" else "right")
        for role, (mb, n) in peaks.items():
            m.add_row(role, f"{mb:,}", str(n))
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        m.add_row("launcher (this process)", f"{own:,}", "1")
        con.print(m)
        sizes[name] = (folder_bytes(run), folder_bytes(run / MODELS_DIR), kept)
    s = Table(title="run folder size")
    for c in ("retention", "run folder MB", "models/ MB", "models kept"):
        s.add_column(c, justify="right")
    for name, (total, models, kept) in sizes.items():
        s.add_row(name, f"{total / 1e6:,.1f}", f"{models / 1e6:,.1f}", ", ".join(map(str, kept)))
    con.print(s)
    n500 = len(kept_rounds(range(501), 500, {0}, RetentionConfig()))
    con.print(
        f"500 rounds at this model size: every model {501 * model_bytes / 1e9:.1f} GB; the "
        f"default retention keeps {n500} (+ up to 4 best, 1 last while running) = "
        f"{(n500 + 5) * model_bytes / 1e9:.1f} GB at most"
    )


if __name__ == "__main__":
    main()
