"""Federation overhead: fedseg over Flower's deployment engine vs a bare Flower exchange.

For one model and one set of synthetic sites, in one run:
- per-round wall time of ``fedseg simulate`` (validate + train + checks + store + model
  files) and of a bare Flower app that sends the same arrays to the same number of
  SuperNodes and gets them back (``benchmarks/bare_flower_app``: no training, no checks);
- bytes sent to / received from each site per round, against the model's size;
- Flower's deployment-engine floor per round (the SuperNode's sleep after an empty pull,
  one ClientApp process per message; found in the installed flwr) next to the ratio.

The bare app runs first, on plain SuperNodes with Flower's own ``--isolation subprocess``
(a fedseg site's app guard refuses any app but fedseg's); a node that replies with an error
stops the benchmark at once with one line.

    python benchmarks/federation.py [--rounds 2] [--sites 3] [--base-filters 8] [--depth 2]
                                    [--bare-timeout 600] [--keep DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fedseg.data.synth.generate import make_tiny_dataset
from fedseg.federation.commands.simulate import simulate
from fedseg.federation.engine.app_bundle import config_arg
from fedseg.federation.engine.launcher import Launcher, free_port
from fedseg.federation.engine.processes import Proc, flower_program, spawn, stop_all
from fedseg.federation.rounds.aggregation import n_bytes
from fedseg.federation.rounds.coordinator import initial_weights
from fedseg.model.config import NetworkConfig
from fedseg.plan import PlanConfig, SiteConfig, save_plan
from fedseg.tracking.store import RunStore
from fedseg.train.config import TrainConfig

BARE_APP = Path(__file__).resolve().parent / "bare_flower_app"


def start_plain_node(launcher: Launcher, name: str) -> Proc:
    """A plain Flower SuperNode on ``launcher``'s SuperLink (loopback, insecure): Flower's own
    ``--isolation subprocess``, no app guard (a fedseg site refuses any app but fedseg's).
    Started by the one process wrapper with the launcher's environment (its run marker: the
    launcher's reaper sweeps it too)."""
    cmd = [flower_program("flower-supernode"), "--superlink", launcher.site_address,
           "--insecure", "--host", "127.0.0.1", "--port", str(free_port()),
           "--isolation", "subprocess",
           "--node-config", config_arg({"site-name": name})]  # fmt: skip
    return spawn(f"bare:{name}", cmd, launcher.env, launcher.logs / f"bare-{name}.log")


def bare_exchange(workdir: Path, arrays: Path, rounds: int, n_sites: int,
                  timeout_s: int) -> dict:  # fmt: skip
    """Run the bare app on a fresh SuperLink + ``n_sites`` plain SuperNodes; its JSON result.
    Exits with one line if a node replies with an error, a node dies, or ``timeout_s``
    passes."""
    result = workdir / "bare.json"
    result.unlink(missing_ok=True)
    launcher = Launcher(workdir)
    nodes: list[Proc] = []
    try:
        launcher.start_superlink()
        nodes = [start_plain_node(launcher, f"site{i + 1}") for i in range(n_sites)]
        launcher.submit(BARE_APP, {"arrays": str(arrays), "rounds": rounds, "nodes": n_sites,
                                   "result": str(result), "timeout_s": timeout_s})  # fmt: skip
        end = time.monotonic() + timeout_s + 30
        while not result.is_file():
            dead = [p for p in nodes if not p.alive()]
            if dead:
                raise SystemExit(f"bare exchange: {dead[0].role} exited: {dead[0].tail(2)} "
                                 f"(log {dead[0].log})")  # fmt: skip
            if time.monotonic() > end:
                raise SystemExit(
                    f"bare exchange: no result within {timeout_s} s (logs {launcher.logs})"
                )
            time.sleep(0.5)
    finally:
        stop_all(nodes)
        launcher.stop()
    out = json.loads(result.read_text())
    if "error" in out:
        raise SystemExit(f"bare exchange failed: {out['error']} (logs {launcher.logs})")
    return out


@dataclass(frozen=True)
class EngineFloor:
    """Flower's deployment-engine floor per round, read from the installed flwr."""

    flwr_version: str
    idle_sleep_s: float | None  #: a SuperNode's sleep after an empty pull
    idle_sleep_at: str  #: where (file:line), or why it was not found
    one_message_at: str  #: where a ClientApp process exits after its one message
    clientapp_import_s: float  #: a fresh interpreter importing Flower's ClientApp runner

    @property
    def floor_s(self) -> float:
        return (self.idle_sleep_s or 0.0) + self.clientapp_import_s


def _find(module: str, pattern: str, after: str | None = None) -> tuple[str, re.Match[str] | None]:
    """``file:line`` of the first line of ``module``'s source matching ``pattern`` (after the
    first line containing ``after``, if given), and the match."""
    path = Path(importlib.util.find_spec(module).origin)  # type: ignore[union-attr, arg-type]
    lines = path.read_text().splitlines()
    start = next((i for i, ln in enumerate(lines) if after in ln), 0) if after else 0
    rel = path.relative_to(path.parents[len(module.split(".")) - 1])
    for i in range(start, len(lines)):
        if m := re.search(pattern, lines[i]):
            return f"{rel}:{i + 1}", m
    return f"{rel}: no line matching {pattern!r}", None


def engine_floor() -> EngineFloor:
    """Where Flower's deployment engine puts a floor under every round: the SuperNode's
    hard-coded sleep after an empty pull, and one ClientApp process per message (its
    start-up measured here, imports only). The lines are found in the installed flwr."""
    import flwr

    sleep_at, sleep = _find("flwr.supernode.start_client_internal", r"time\.sleep\(([\d.]+)\)",
                            after="If no message was received")  # fmt: skip
    exit_at, _ = _find("flwr.supernode.runtime.run_clientapp", r"flwr_exit\(",
                       after="reply_message = client_app(")  # fmt: skip
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", "import flwr.supernode.runtime.run_clientapp"],
                   check=True)  # fmt: skip
    return EngineFloor(
        flwr_version=flwr.__version__,
        idle_sleep_s=float(sleep.group(1)) if sleep else None,
        idle_sleep_at=sleep_at,
        one_message_at=exit_at,
        clientapp_import_s=time.monotonic() - t0,
    )


def print_floor(console: Console, f: EngineFloor, rounds: str, bare_s: float, fed_s: float,
                slowest_site_s: float) -> None:  # fmt: skip
    """The floor next to the measured ratio, and what it means for the issue's goals."""
    sleep = f"{f.idle_sleep_s:.1f} s" if f.idle_sleep_s is not None else "(not found)"
    overhead = fed_s - slowest_site_s
    lines = [
        f"Flower {f.flwr_version} deployment-engine floor per round:",
        f"  - a SuperNode sleeps {sleep} after an empty pull ({f.idle_sleep_at}):",
        "    the site that replies last has pulled (empty) before the next round's message",
        "    exists, so it sees that message about that much later, every round after the first;",
        f"  - one message per ClientApp process ({f.one_message_at} exits after one task):",
        "    every message starts a fresh process; importing Flower's runner alone took "
        f"{f.clientapp_import_s:.1f} s here;",
        "  - plus polls of up to 0.5 s (SuperNode reply wait), 0.25 s (ServerApp), "
        "0.2 s (SuperExec).",
        f"  floor ~ {f.floor_s:.1f} s per round; measured (mean of rounds {rounds}): bare Flower "
        f"{bare_s:.1f} s, fedseg {fed_s:.1f} s.",
        "Goals of issue 19 on this engine:",
        f"  - fedseg round - slowest site's compute <= 1.5 s: measured {overhead:.1f} s; the floor "
        f"alone is {f.floor_s:.1f} s: unreachable;",
        f"  - fedseg / bare <= 1.1x: measured {fed_s / bare_s:.2f}x ({overhead / bare_s:.2f}x "
        "without the slowest site's compute);",
        "    a fedseg round pays what a bare one pays plus the sites' compute "
        f"({slowest_site_s:.1f} s slowest)",
        "    plus its guarded task process per message (site-code imports): at least "
        f"{(bare_s + slowest_site_s) / bare_s:.2f}x here.",
    ]
    console.print("\n".join(lines), soft_wrap=True, highlight=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--base-filters", type=int, default=8)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--bare-timeout", type=int, default=600,
                    help="seconds the bare exchange may take before it is given up")  # fmt: skip
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: tmp)")
    args = ap.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 120)  # a log keeps the table whole
    work = args.keep or Path(tempfile.mkdtemp(prefix="fedseg-bench-"))
    work.mkdir(parents=True, exist_ok=True)

    console.print(f"work folder {work}: writing {args.sites} synthetic sites")
    sites = make_tiny_dataset(work / "data", sites=args.sites, cases_per_site=4, seed=0)
    d = 2**args.depth
    patch = max(16, d)
    plan = PlanConfig(
        name="bench",
        sites={s: SiteConfig(data=work / "data" / s) for s in sites},
        rounds=args.rounds,
        min_sites=1,
        round_timeout_s=1800,
        network=NetworkConfig(base_filters=args.base_filters, depth=args.depth),
        train=TrainConfig.cpu(
            patch_size=(patch,) * 3,
            val_roi=(32, 32, 32),
            val_overlap=0.0,
            val_batch_size=4,
            cache_mb=64,
        ),
    )
    plan_path = save_plan(work / "plan.yaml", plan)
    weights = initial_weights(plan)
    model_bytes = n_bytes(weights)
    arrays = work / "arrays.npz"
    np.savez(arrays, **weights)

    console.print("bare Flower exchange (plain SuperNodes, Flower's subprocess isolation) ...")
    bare = bare_exchange(work / "bare", arrays, args.rounds, args.sites, args.bare_timeout)
    bare_rounds = {r["round"]: r["wall_s"] for r in bare["rounds"]}
    console.print("fedseg simulate ...")
    res = simulate(plan_path, work / "run", live=False, console=console)
    with RunStore(res.run_dir) as store:
        fed_rounds = {r["round"]: r["wall_s"] for r in store.rounds()}
        srs = store.site_rounds()
    floor = engine_floor()

    t = Table(title=f"seconds per round, {args.sites} sites, model {model_bytes / 1e6:.2f} MB "
                    "(site compute: its training + validation wall)")  # fmt: skip
    for c in ("round", "fedseg", "bare Flower", "fedseg / bare", "site compute (mean)",
              "site compute (max)", "fedseg - max site"):  # fmt: skip
        t.add_column(c, justify="right")
    slowest: dict[int, float] = {}
    for r in sorted(fed_rounds):
        work_s = [
            (s.extra or {}).get("train_wall_s", 0) + (s.extra or {}).get("val_wall_s", 0)
            for s in srs
            if s.round == r
        ]
        slowest[r] = max(work_s, default=0.0)
        b = bare_rounds.get(r, float("nan"))
        t.add_row(str(r), f"{fed_rounds[r]:.1f}", f"{b:.1f}", f"{fed_rounds[r] / b:.2f}",
                  f"{np.mean(work_s):.1f}", f"{slowest[r]:.1f}",
                  f"{fed_rounds[r] - slowest[r]:.1f}")  # fmt: skip
    console.print(t)
    later = [r for r in sorted(fed_rounds) if r > 1 and r in bare_rounds] or sorted(fed_rounds)
    print_floor(console, floor, ", ".join(map(str, later)),
                bare_s=float(np.mean([bare_rounds[r] for r in later])),
                fed_s=float(np.mean([fed_rounds[r] for r in later])),
                slowest_site_s=float(np.mean([slowest[r] for r in later])))  # fmt: skip

    b = Table(title="bytes per site per round")
    for c in ("", "sent (mean)", "received (mean)", "model size", "sent / model"):
        b.add_column(c, justify="right")
    sent = np.mean([s.bytes_sent for s in srs])
    recv = np.mean([s.bytes_received for s in srs])
    b.add_row(
        "fedseg", f"{sent:,.0f}", f"{recv:,.0f}", f"{model_bytes:,}", f"{sent / model_bytes:.4f}"
    )
    bare_recv = np.mean([x for r in bare["rounds"] for x in r["bytes"]])
    b.add_row("bare", f"{bare['sent_bytes']:,}", f"{bare_recv:,.0f}", f"{model_bytes:,}",
              f"{bare['sent_bytes'] / model_bytes:.4f}")  # fmt: skip
    console.print(b)
    console.print(
        f"startup of a site's app process per message (mean): "
        f"{np.mean([(s.extra or {}).get('startup_s', 0) for s in srs]):.1f} s"
    )


if __name__ == "__main__":
    main()
