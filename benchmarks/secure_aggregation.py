"""Secure aggregation's cost per round against the plain round: wall time and bytes per site.

In process, with the real code of both sides (``secure_aggregation_site`` handlers and
``mask_update``, the aggregator's ``SecureAggregation``), for each model size:

- site: the key and share stages (``secagg_keys``, ``secagg_shares``), the masking after
  training (clip, fixed point, 1 + (n - 1) ChaCha20 masks), the unmask answer;
- aggregator: the key/share relays and the unmask + decode (``combine``: the self masks of
  the n sites, the pairwise masks of a dropped site when ``--drop``), against the plain
  FedAvg mean of the same n updates (``aggregation.weighted_average``);
- bytes per site: what each stage's payload weighs (arrays' bytes plus bytes values),
  against the plain update (float32 weights).

With ``--compare``, the aggregator's Shamir reconstruction of the same round (``rebuild``
on the sites' real unmask answers) side by side: per secret with pycryptodome's
``Shamir.combine`` on each block (the path before ``combine_many``) against ``combine_many``
(Lagrange coefficients once per index set), with the ratio; the secrets must be equal.

Optionally (``--simulate``), one real ``fedseg simulate`` of 3 tiny synthetic sites, one
round, plain then secure, with each run's round wall time and bytes per site from its store.

    python benchmarks/secure_aggregation.py                        # demo net and FeTS (30.2 M)
    python benchmarks/secure_aggregation.py --models tiny --sites 3    # smoke test, seconds
    python benchmarks/secure_aggregation.py --models demo --simulate   # + a real 3-site round
    python benchmarks/secure_aggregation.py --models demo --sites 24 --compare
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import fedseg.federation.rounds.secure_aggregation as secure_aggregation_module
from fedseg.federation.rounds.aggregation import n_bytes, weighted_average
from fedseg.federation.rounds.coordinator import SiteFailure
from fedseg.federation.rounds.secure_aggregation import SecureAggregation
from fedseg.federation.rounds.site_queries import SiteContext, answer
from fedseg.federation.rounds.tasks import Payload, TaskReply, TaskRequest
from fedseg.federation.rounds.update_protection import protect_update
from fedseg.federation.security.pki import throwaway_site_creds
from fedseg.model.config import NetworkConfig
from fedseg.model.registry import new_network
from fedseg.model.weights import Weights, get_weights
from fedseg.plan import PlanConfig, SiteConfig
from fedseg.privacy.secagg import protocol
from fedseg.privacy.secagg.shamir import combine_secret
from fedseg.run_folder import DeclaredCases
from fedseg.tracking.store import RunStore

MODELS = {
    "tiny": NetworkConfig(base_filters=4, depth=2),
    "demo": NetworkConfig(base_filters=8, depth=2),  # `fedseg demo`'s network
    "fets": NetworkConfig(),  # 30.2 M parameters
}


def payload_bytes(p: Payload) -> int:
    return sum(v.nbytes if isinstance(v, np.ndarray) else len(v) if isinstance(v, bytes | str)
               else 8 for v in p.values())  # fmt: skip


class Timed:
    """An in-process transport for the query stages that times each site's answer."""

    def __init__(self, contexts: dict[str, SiteContext]) -> None:
        self.contexts = contexts
        self.site_s: dict[str, float] = {}
        self.bytes: dict[str, int] = {}

    def query(self, kind: str, payloads: dict[str, Payload], timeout_s: float):
        out: dict[str, Payload | SiteFailure] = {}
        t_site = []
        for site, p in payloads.items():
            t0 = time.perf_counter()
            out[site] = answer(kind, self.contexts[site], p)
            t_site.append(time.perf_counter() - t0)
            self.bytes[kind] = payload_bytes(p) + payload_bytes(out[site])  # type: ignore[arg-type]
        self.site_s[kind] = float(np.mean(t_site))
        return out


def per_secret(shares: dict[Any, dict[int, bytes]], threshold: int) -> dict[Any, bytes]:
    """``combine_many``'s job done the old way: ``Shamir.combine`` per block per secret."""
    return {k: combine_secret(s, threshold) for k, s in shares.items()}


def compare_rebuild(args: tuple[Any, ...]) -> dict[str, float]:
    """``rebuild`` on one round's captured arguments, per secret then with ``combine_many``."""
    with mock.patch.object(protocol, "combine_many", per_secret):
        t0 = time.perf_counter()
        old = protocol.rebuild(*args)
        old_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    new = protocol.rebuild(*args)
    new_s = time.perf_counter() - t0
    assert old == new, "combine_many and the per-secret combine disagree"
    return {"rebuild_per_secret_s": old_s, "rebuild_combine_many_s": new_s}


def bench(
    name: str, net: NetworkConfig, n: int, drop: bool, work: Path, compare: bool = False
) -> dict[str, float]:
    g = get_weights(new_network(net, None, 0))
    sites = [f"s{i}" for i in range(n)]
    creds = throwaway_site_creds(work / f"ca-{name}", sites)
    rng = np.random.default_rng(0)
    updates: dict[str, Weights] = {
        s: {k: (v + 1e-3 * rng.standard_normal(v.shape).astype(v.dtype)) if v.dtype.kind == "f"
            else v.copy() for k, v in g.items()} for s in sites
    }  # fmt: skip
    plan = PlanConfig.model_validate({
        "sites": {s: SiteConfig(data=work) for s in sites}, "network": net,
        "privacy": {"secure_aggregation": True, "secagg": {"clip_norm": 100.0}},
    })  # fmt: skip
    run = work / f"run-{name}"
    run.mkdir()
    out: dict[str, float] = {"params": sum(v.size for v in g.values() if v.dtype.kind == "f")}
    with RunStore(run) as store:
        agg = SecureAggregation(plan, run, store)
        t = Timed({s: SiteContext(s, creds=creds[s]) for s in sites})
        declared = {s: DeclaredCases(n_train=10 + i, n_val=2) for i, s in enumerate(sites)}
        t0 = time.perf_counter()
        secure = agg.prepare(1, sites, declared, g, t)
        out["agg_prepare_s"] = time.perf_counter() - t0 - sum(t.site_s.values()) * n
        out["site_keys_s"], out["site_shares_s"] = (
            t.site_s["secagg_keys"],
            t.site_s["secagg_shares"],
        )
        out["bytes_keys"], out["bytes_shares"] = t.bytes["secagg_keys"], t.bytes["secagg_shares"]
        masked = sites[:-1] if drop else sites
        mask_s = []
        for s in masked:
            req = TaskRequest(round=1, model_round=0, validate=False, epochs=1, seed=0,
                              run_id="bench", recipe="{}", weights=g, privacy=plan.privacy,
                              secure=secure[s])  # fmt: skip
            rep = TaskReply(site=s, weights=updates[s])
            t0 = time.perf_counter()
            protect_update(t.contexts[s], req, rep)
            mask_s.append(time.perf_counter() - t0)
            assert rep.hidden is not None
            out["bytes_masked"] = payload_bytes(rep.hidden)
            out["bytes_secure_part"] = payload_bytes(secure[s])
            agg.take(s, rep.hidden, 10)
        out["site_mask_s"] = float(np.mean(mask_s))
        captured: list[tuple[Any, ...]] = []

        def capture(*args: Any) -> protocol.Rebuilt:
            captured.append(args)
            return protocol.rebuild(*args)

        t0 = time.perf_counter()
        with mock.patch.object(secure_aggregation_module, "rebuild", capture):
            mean = agg.combine(1, g, t)
        out["site_unmask_s"] = t.site_s["secagg_unmask"]
        out["agg_unmask_s"] = time.perf_counter() - t0 - t.site_s["secagg_unmask"] * len(masked)
        out["bytes_unmask"] = t.bytes["secagg_unmask"]
        assert mean is not None
        t0 = time.perf_counter()
        plain = weighted_average(
            [updates[s] for s in masked], [10.0 + i for i in range(len(masked))]
        )
        out["agg_plain_mean_s"] = time.perf_counter() - t0
        out["bytes_plain_update"] = n_bytes(updates[sites[0]])
        err = [np.abs(mean.weights[k].astype(np.float64) - plain[k]).max() for k in plain
               if plain[k].dtype.kind == "f"]  # fmt: skip
        out["max_abs_err"] = float(max(err))
        if compare:
            out |= compare_rebuild(captured[0])
    return out


def simulate_rounds(work: Path) -> dict[str, dict[str, float]]:
    """One round of 3 tiny synthetic sites through ``fedseg simulate``, plain and secure."""
    from fedseg.data.synth.generate import make_tiny_dataset
    from fedseg.federation.commands.simulate import simulate
    from fedseg.plan import save_plan
    from fedseg.train.config import TrainConfig

    root = work / "data"
    sites = make_tiny_dataset(root, sites=3, cases_per_site=4)
    out = {}
    secure = {"min_summary_cases": 1, "secure_aggregation": True}
    for label, privacy in (("plain", {"min_summary_cases": 1}), ("secure", secure)):
        plan = PlanConfig.model_validate({
            "name": label, "sites": {s: SiteConfig(data=root / s) for s in sites}, "rounds": 1,
            "min_sites": 3, "network": MODELS["demo"], "privacy": privacy,
            "train": TrainConfig.cpu(patch_size=(16, 16, 16), val_roi=(32, 32, 32)),
        })  # fmt: skip
        run = work / label
        simulate(save_plan(work / f"{label}.yaml", plan), run, live=False)
        with RunStore(run) as store:
            srs = [s for s in store.site_rounds() if s.round == 1]
            r = store.rounds()[0]
            out[label] = {
                "round_wall_s": float(r["wall_s"] or r["finished"] - r["started"]),
                "bytes_sent_per_site": float(np.mean([s.bytes_sent for s in srs])),
                "bytes_received_per_site": float(np.mean([s.bytes_received for s in srs])),
            }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["demo", "fets"], choices=list(MODELS))
    ap.add_argument("--sites", type=int, default=4)
    ap.add_argument("--drop", action="store_true", help="the last site drops before masking")
    ap.add_argument("--simulate", action="store_true", help="plus a real 3-site round")
    ap.add_argument("--compare", action="store_true",
                    help="Shamir rebuild per secret against combine_many")  # fmt: skip
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            r = bench(name, MODELS[name], args.sites, args.drop, Path(tmp), args.compare)
            dropped = ", one dropped" if args.drop else ""
            title = f"{name} network ({r.pop('params'):.0f} parameters), {args.sites} sites"
            tab = Table(title=f"secure aggregation, {title}{dropped}")
            tab.add_column("measure")
            tab.add_column("value", justify="right")
            for k, v in r.items():
                tab.add_row(k, f"{v:.4g}")
            console.print(tab)
            if args.compare:
                old, new = r["rebuild_per_secret_s"], r["rebuild_combine_many_s"]
                console.print(f"{name}, {args.sites} sites: Shamir rebuild per secret "
                              f"{old:.3f} s, combine_many {new:.3f} s, "
                              f"{old / new:.1f}x; unmask with combine_many "
                              f"{r['agg_unmask_s']:.3f} s")  # fmt: skip
        if args.simulate:
            for label, row in simulate_rounds(Path(tmp)).items():
                console.print(label, row)


if __name__ == "__main__":
    main()
