"""Homomorphic encryption's cost per round (plan ``privacy.he: ckks``) against the plain
round, for the demo network and the FeTS network.

Every step runs through fedseg's own code, in one process, one site after the other (as
replies reach the aggregator): the key holder makes the key (``he_keys`` query answered
by ``rounds.he_keys``); each site's reply (global model + seeded noise) is protected as a
site does after training (``update_protection.protect_update``: w_i * update encrypted)
and taken by the aggregator (``HeAggregation.take``: checked and folded into the sum on
disk); then ``HeAggregation.combine`` sends the sum to the key holder, which decrypts it,
and computes the mean. The plain round's cost is the FedAvg mean of the same updates in
memory (``aggregation.weighted_average``) and the float32 model on the wire.

Columns per configuration (network, selected layers): values encrypted, bytes per site
(encrypted, and the ratio to the plain float32 model), encrypt time per site, the
aggregator's add time per site, the decryption (with the mean), the plain mean's time and
the ratio of the aggregator's whole HE work to it, peak RSS growth of the process during
the configuration (TenSEAL allocates outside numpy, so tracemalloc would not see it), and
the largest error of the HE mean against the plain one. Single-threaded as TenSEAL is
called here (one ciphertext at a time).

    python benchmarks/homomorphic.py                          # demo, FeTS all, FeTS decoder
    python benchmarks/homomorphic.py --networks tiny --sites 2   # smoke test, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fedseg.federation.commands.compare_plans.local_transport import answer_here
from fedseg.federation.rounds.aggregation import n_bytes, weighted_average
from fedseg.federation.rounds.coordinator import SiteFailure
from fedseg.federation.rounds.he_aggregation import HeAggregation
from fedseg.federation.rounds.site_queries import SiteContext
from fedseg.federation.rounds.tasks import Payload, TaskReply, TaskRequest
from fedseg.federation.rounds.update_protection import protect_update
from fedseg.model.config import NetworkConfig
from fedseg.model.registry import new_network
from fedseg.model.weights import Weights, get_weights
from fedseg.plan import PlanConfig
from fedseg.run_folder import DeclaredCases
from fedseg.tracking.store import RunStore

NETWORKS = {
    "tiny": NetworkConfig(base_filters=4, depth=2),  # the tests' network (smoke test)
    "demo": NetworkConfig(base_filters=8, depth=2),  # `fedseg demo`
    "fets": NetworkConfig(base_filters=30, depth=4),  # the FeTS recipe, 30.2 M values
}
#: the layer selections measured: every array, and the decoder with the head
SELECTIONS: dict[str, str | list[str]] = {"all": "all", "decoder+head": ["ups.*", "head.*"]}


class QueryTransport:
    """Just enough of a ``Transport`` for a hidden sum: every site connected, queries
    answered in process by ``site_queries.answer`` with each site's own workspace."""

    def __init__(self, sites: list[str], work: Path) -> None:
        self.contexts = {s: SiteContext(s, None, work / s) for s in sites}

    def connected_sites(self, wanted: list[str], wait_s: float) -> list[str]:
        return [s for s in wanted if s in self.contexts]

    def query(
        self, kind: str, payloads: dict[str, Payload], timeout_s: float
    ) -> dict[str, Payload | SiteFailure]:
        return answer_here(kind, self.contexts, payloads)


def rss_peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def site_update(global_w: Weights, i: int) -> Weights:
    """The global model plus seeded noise (std 1e-3) on its floating arrays."""
    rng = np.random.default_rng(i)
    return {k: (v + 1e-3 * rng.standard_normal(v.shape, dtype=np.float32)).astype(v.dtype)
            if v.dtype.kind == "f" else v.copy() for k, v in global_w.items()}  # fmt: skip


@dataclasses.dataclass
class Row:
    config: str
    values: int
    site_bytes: float
    model_bytes: int
    encrypt_s: float
    add_s: float
    decrypt_s: float
    plain_s: float
    rss_growth: int
    max_error: float


def measure(name: str, net: NetworkConfig, layers: str | list[str], n_sites: int,
            work: Path) -> Row:  # fmt: skip
    rss0 = rss_peak_bytes()
    global_w = get_weights(new_network(net, None, 0))
    sites = [f"site{i + 1}" for i in range(n_sites)]
    n_train = {s: 3 + 2 * i for i, s in enumerate(sites)}
    plan = PlanConfig.model_validate({
        "name": "bench", "network": net, "sites": {s: {"data": work} for s in sites},
        "privacy": {"he": {"scheme": "ckks", "layers": layers, "max_bytes_per_site": 10**12}},
    })  # fmt: skip
    slug = name.replace(" ", "-").replace("+", "-")
    run = work / f"run-{slug}"
    run.mkdir(parents=True)
    transport = QueryTransport(sites, work / f"ws-{slug}")
    with RunStore(run) as store:
        agg = HeAggregation(plan, run, store)
        declared = {s: DeclaredCases(n_train=n, n_val=1) for s, n in n_train.items()}
        secure = agg.prepare(1, sites, declared, global_w, transport)  # type: ignore[arg-type]
        encrypt_s = add_s = 0.0
        site_bytes = 0
        for i, s in enumerate(sites):
            req = TaskRequest(round=1, model_round=0, validate=False, epochs=1, seed=0,
                              run_id=run.name, recipe="", weights=global_w,
                              privacy=plan.privacy, secure=secure[s])  # fmt: skip
            rep = TaskReply(site=s, weights=site_update(global_w, i), n_train=n_train[s])
            t0 = time.perf_counter()
            protect_update(transport.contexts[s], req, rep)
            encrypt_s += time.perf_counter() - t0
            assert rep.hidden is not None
            site_bytes += sum(v.nbytes for v in rep.hidden.values() if isinstance(v, np.ndarray))
            t0 = time.perf_counter()
            agg.take(s, rep.hidden, n_train[s])
            add_s += time.perf_counter() - t0
            del rep
        t0 = time.perf_counter()
        mean = agg.combine(1, global_w, transport)  # type: ignore[arg-type]
        decrypt_s = time.perf_counter() - t0
    assert mean is not None
    updates = [site_update(global_w, i) for i in range(n_sites)]
    t0 = time.perf_counter()
    plain = weighted_average(updates, [n_train[s] for s in sites])
    plain_s = time.perf_counter() - t0
    err = max(float(np.abs(mean.weights[k].astype(np.float64) - plain[k]).max()) for k in plain)
    values = sum(global_w[k].size for k in agg.encrypted)
    return Row(name, values, site_bytes / n_sites, n_bytes(global_w), encrypt_s / n_sites,
               add_s / n_sites, decrypt_s, plain_s, rss_peak_bytes() - rss0, err)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", nargs="+", default=["demo", "fets"], choices=list(NETWORKS))
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--selections", nargs="+", default=list(SELECTIONS), choices=list(SELECTIONS))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedseg-he-bench-") as tmp:
        for net in args.networks:
            for sel in args.selections:
                if net != "fets" and sel != "all":
                    continue  # small networks: everything is affordable
                name = f"{net} {sel}"
                print(f"measuring {name} ...", file=sys.stderr, flush=True)
                rows.append(measure(name, NETWORKS[net], SELECTIONS[sel], args.sites, Path(tmp)))
    t = Table(title=f"HE (CKKS N=8192, [60,40,60], 2^40) per round, {args.sites} sites, "
              "against the plain round")  # fmt: skip
    for col in ("config", "values enc.", "MB/site HE", "MB/site plain", "bytes x",
                "encrypt s/site", "add s/site", "decrypt+mean s", "plain mean s", "aggr. x",
                "peak RSS +MB", "max |err|"):  # fmt: skip
        t.add_column(col, justify="right")
    for r in rows:
        he_s = r.add_s * args.sites + r.decrypt_s
        t.add_row(r.config, f"{r.values:,}", f"{r.site_bytes / 1e6:.1f}",
                  f"{r.model_bytes / 1e6:.2f}", f"{r.site_bytes / r.model_bytes:.1f}",
                  f"{r.encrypt_s:.2f}", f"{r.add_s:.2f}", f"{r.decrypt_s:.2f}",
                  f"{r.plain_s:.3f}", f"{he_s / max(r.plain_s, 1e-9):.0f}",
                  f"{r.rss_growth / 1e6:.0f}", f"{r.max_error:.1e}")  # fmt: skip
    Console(width=200).print(t)


if __name__ == "__main__":
    main()
