"""Homomorphic encryption (``privacy.he``, ``rounds.he_aggregation``, ``rounds.he_keys``),
engine-free: CKKS sums, the public context, layer selection, the round over an in-process
transport that answers queries, what the aggregator holds, the plan check."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tenseal")

from fedseg.errors import PlanError
from fedseg.federation.commands.compare_plans.local_transport import answer_here
from fedseg.federation.commands.run_folder import check_plan_runs
from fedseg.federation.rounds.coordinator import Coordinator, Exchanged, SiteFailure
from fedseg.federation.rounds.he_aggregation import HeAggregation
from fedseg.federation.rounds.he_keys import SECRET_FILE
from fedseg.federation.rounds.site_queries import SiteContext, answer
from fedseg.federation.rounds.tasks import Payload, TaskReply, TaskRequest
from fedseg.federation.rounds.update_protection import protect_update
from fedseg.model.config import NetworkConfig
from fedseg.model.model_file import load_model
from fedseg.plan import PlanConfig
from fedseg.privacy import he
from fedseg.privacy.config import HeConfig
from fedseg.run_folder import SiteRoundStatus, model_path
from fedseg.tracking.store import RunStore
from tests.federation.fed_helpers import SITES, ArrayTransport, tiny_plan, write_run

CFG = HeConfig(scheme="ckks")
OFFSETS = {"site1": 0.01, "site2": -0.02, "site3": 0.04}
N_TRAIN = {"site1": 3, "site2": 5, "site3": 2}


@pytest.fixture(scope="module")
def keys() -> he.HeKeys:
    return he.new_keys(CFG)


def test_decrypted_sum_equals_the_plain_sum_within_the_ckks_bound(keys: he.HeKeys) -> None:
    rng = np.random.default_rng(0)
    ctx, sk = he.public_context(keys.public), he.secret_context(keys.secret)
    n = 3 * he.slots(CFG) + 123  # several chunks, the last one short
    xs = [rng.normal(0, s, n) for s in (1e-3, 1.0, 100.0)]
    total = he.encrypt_array(ctx, xs[0], CFG)
    for x in xs[1:]:
        total = he.add_chunks(ctx, total, he.encrypt_array(ctx, x, CFG))
    got = he.decrypt_chunks(sk, he.unpack(*he.pack(total)))
    err = np.abs(got - sum(xs)).max()
    # 4 * N * 2^-scale per ciphertext: 3.0e-8 at N = 8192, scale 2^40 (measured ~1e-8 each)
    assert err <= he.error_bound(CFG, len(xs)) == pytest.approx(9.0e-8, rel=0.03)
    assert err > 0  # CKKS is approximate: the bound is not vacuous


def test_public_context_has_no_secret_key(keys: he.HeKeys) -> None:
    ts = he.tenseal()
    assert ts.context_from(keys.secret).is_private()
    assert not ts.context_from(keys.public).is_private()
    chunks = he.encrypt_array(he.public_context(keys.public), np.ones(5), CFG)
    with pytest.raises(ValueError, match="secret"):  # the public context cannot decrypt
        ts.ckks_vector_from(he.public_context(keys.public), chunks[0]).decrypt()
    with pytest.raises(Exception, match="secret key"):
        he.public_context(keys.secret)


def _tiny_weights() -> dict[str, np.ndarray]:
    from fedseg.model.registry import new_network
    from fedseg.model.weights import get_weights

    return get_weights(new_network(NetworkConfig(base_filters=4, depth=2), None, 0))


def test_layer_selection_encrypts_exactly_the_chosen_arrays(keys: he.HeKeys) -> None:
    w = _tiny_weights() | {"counter": np.array(3, np.int64)}
    new = {k: v + 1 if v.dtype.kind == "f" else v for k, v in w.items()}
    cfg = CFG.model_copy(update={"layers": ["ups.1.*", "head.*"]})
    out = he.encrypt_update(new, w, 2.0, keys.public, cfg)
    chosen = [k for k in w if (k.startswith("ups.1.") or k.startswith("head.")) and k != "counter"]
    assert chosen and len(chosen) < len(w) - 1
    assert he.encrypted_names(new, cfg.layers) == chosen
    clear = [k[len(he.CLEAR_PREFIX) :] for k in out if k.startswith(he.CLEAR_PREFIX)]
    assert clear == [k for k in w if k not in chosen]  # the integer counter travels clear too
    assert set(out) == {he.KEY, he.DATA, he.LENGTHS} | {he.CLEAR_PREFIX + k for k in clear}
    assert out[he.KEY] == keys.fingerprint
    for k in clear:
        np.testing.assert_array_equal(out[he.CLEAR_PREFIX + k], new[k])
    # the ciphertexts hold weight * (new - old) of the chosen arrays, and nothing else
    got = he.decrypt_chunks(he.secret_context(keys.secret), he.unpack(out[he.DATA],
                                                                      out[he.LENGTHS]))  # fmt: skip
    assert got.size == sum(w[k].size for k in chosen)
    np.testing.assert_allclose(got, 2.0, atol=he.error_bound(cfg))
    assert he.encrypted_names(w, "all") == [k for k in w if k != "counter"]


class HeTransport(ArrayTransport):
    """``ArrayTransport`` whose sites also answer queries (``site_queries.answer``, each
    with its own ``SiteContext`` and workspace) and protect their updates as the plan asks
    (``update_protection.protect_update``); ``lose`` drops sites' replies or breaks them."""

    def __init__(
        self, ws: Path, *args: object,
        tamper_hidden: Callable[[str, Payload], None] | None = None, **kwargs: object,
    ) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.contexts = {s: SiteContext(s, None, ws / s) for s in self.offsets}
        self.queries: list[tuple[str, str]] = []
        self.hidden_sizes: dict[str, int] = {}
        self.tamper_hidden = tamper_hidden

    def query(
        self, kind: str, payloads: dict[str, Payload], timeout_s: float
    ) -> dict[str, Payload | SiteFailure]:
        self.queries.extend((kind, site) for site in payloads)
        return answer_here(kind, self.contexts, payloads)

    def exchange(
        self, requests: dict[str, TaskRequest], timeout_s: float,
        on_result: Callable[[str, Exchanged], None],
    ) -> None:  # fmt: skip
        def protect(site: str, ex: Exchanged) -> None:
            rep = ex.result
            if isinstance(rep, TaskReply) and requests[site].epochs > 0:
                protect_update(self.contexts[site], requests[site], rep)
                assert rep.weights is None and rep.optimizer_state is None
                assert rep.hidden is not None
                self.hidden_sizes[site] = sum(v.nbytes for v in rep.hidden.values()
                                              if isinstance(v, np.ndarray))  # fmt: skip
                if self.tamper_hidden is not None:
                    self.tamper_hidden(site, rep.hidden)
            on_result(site, ex)

        super().exchange(requests, timeout_s, protect)


def _run(tmp_path: Path, name: str, privacy: dict, strategy: str = "fedavg",
         **kw: object) -> tuple[Path, ArrayTransport]:  # fmt: skip
    sites = {s: tmp_path / s for s in SITES}
    plan = tiny_plan(sites, privacy={"min_summary_cases": 1, **privacy},
                     strategy={"name": strategy}, retention={"keep_every": None})  # fmt: skip
    run = write_run(tmp_path / name, plan)
    t = (HeTransport(tmp_path / f"ws-{name}", OFFSETS, N_TRAIN, **kw) if privacy
         else ArrayTransport(OFFSETS, N_TRAIN))  # fmt: skip
    Coordinator(run, t).run()
    return run, t


def _assert_close(a: dict[str, np.ndarray], b: dict[str, np.ndarray], atol: float) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype
        # within the CKKS bound, plus one float32 step of the value either side
        tol = atol + 2 * np.spacing(np.abs(b[k]).astype(b[k].dtype)).astype(np.float64)
        assert (np.abs(a[k].astype(np.float64) - b[k]) <= tol).all(), k


@pytest.mark.parametrize("strategy", ["fedavg", "fedadam"])
def test_he_round_gives_the_plain_model(tmp_path: Path, strategy: str) -> None:
    plain, _ = _run(tmp_path, "plain", {}, strategy)
    run, t = _run(tmp_path, "he", {"he": "ckks"}, strategy)
    # the mean's error: 3 ciphertexts' bound over W = 10 training cases
    atol = he.error_bound(CFG, 3) / sum(N_TRAIN.values())
    for rnd in (1, 2):
        a, b = load_model(model_path(run, rnd)).weights, load_model(model_path(plain, rnd)).weights
        # FedAdam divides by sqrt(v): a difference in the mean grows by lr / |pseudo-gradient|
        _assert_close(a, b, atol if strategy == "fedavg" else 1e-5)
    with RunStore(run) as store:
        assert [r["status"] for r in store.rounds()] == ["done", "done"]
        assert all(sr.status == "ok" and sr.update_norm is None for sr in store.site_rounds())
        rec = store.meta.he()
        assert rec is not None and rec.key_holder == "site1" and rec.clear == []
        assert any("privacy.he: key holder site1" in e[2] for e in store.events())
    assert ("he_keys", "site1") in t.queries and t.queries.count(("he_decrypt", "site1")) == 2
    # ciphertexts are ~14x the float32 model (the module doc's ~57 bytes per value)
    model = sum(v.nbytes for v in load_model(model_path(run, 1)).weights.values())
    assert 10 < t.hidden_sizes["site2"] / model < 20


def test_layer_selection_round_averages_the_clear_layers(tmp_path: Path) -> None:
    plain, _ = _run(tmp_path, "plain", {})
    run, _ = _run(tmp_path, "he", {"he": {"scheme": "ckks", "layers": ["ups.*", "head.*"]}})
    atol = he.error_bound(CFG, 3) / sum(N_TRAIN.values())
    _assert_close(load_model(model_path(run, 2)).weights,
                  load_model(model_path(plain, 2)).weights, atol)  # fmt: skip
    with RunStore(run) as store:
        rec = store.meta.he()
    assert rec is not None and rec.clear and all(k.startswith(("stem", "downs")) for k in rec.clear)
    assert all(k.startswith(("ups", "head")) for k in rec.encrypted)


def test_the_aggregator_never_holds_the_secret_key(tmp_path: Path) -> None:
    sites = {s: tmp_path / s for s in SITES}
    run = write_run(tmp_path / "run", tiny_plan(sites, privacy={"min_summary_cases": 1,
                                                                "he": "ckks"}))  # fmt: skip
    t = HeTransport(tmp_path / "ws", OFFSETS, N_TRAIN)
    coord = Coordinator(run, t)
    coord.run()
    agg = coord.hidden
    assert isinstance(agg, HeAggregation)
    secret_file = tmp_path / "ws" / "site1" / SECRET_FILE
    secret = secret_file.read_bytes()
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
    assert he.tenseal().context_from(secret).is_private()
    # what the aggregator object holds: the public context only, and no secret bytes
    assert agg.public is not None and not he.tenseal().context_from(agg.public).is_private()
    # pieces of the secret serialisation found nowhere in the public one (the key's bytes)
    pieces = [secret[i : i + 48] for i in range(0, len(secret) - 48, 997)]
    pieces = [p for p in pieces if p not in agg.public]
    assert len(pieces) > 100
    held = [bytes(v) for v in vars(agg).values() if isinstance(v, (bytes, np.ndarray))]
    assert not any(p in h for p in pieces for h in held)
    # nor anything in the run folder (models, store, logs; the spool is gone)
    for f in run.rglob("*"):
        if f.is_file():
            raw = f.read_bytes()
            assert not any(p in raw for p in pieces), f
    # only site1 holds a key; the others made none
    assert not (tmp_path / "ws" / "site2" / SECRET_FILE).exists()
    assert not any(kind == "he_decrypt" and s != "site1" for kind, s in t.queries)


def test_a_malformed_encrypted_update_is_rejected_and_left_out(tmp_path: Path) -> None:
    def cut(site: str, hidden: Payload) -> None:
        if site == "site3":
            lengths, data = hidden[he.LENGTHS], hidden[he.DATA]
            assert isinstance(lengths, np.ndarray) and isinstance(data, np.ndarray)
            hidden[he.LENGTHS], hidden[he.DATA] = lengths[:-1], data[: -lengths[-1]]

    run, _ = _run(tmp_path, "he", {"he": "ckks"}, tamper_hidden=cut)
    with RunStore(run) as store:
        srs = {(s.round, s.site): s for s in store.site_rounds()}
    assert srs[(1, "site3")].status == "rejected" and "ciphertext" in srs[(1, "site3")].error
    # the round is the mean of site1 and site2 alone (nothing of site3 in the accumulator)
    w0 = load_model(model_path(run, 1)).weights  # compare round 2 against round 1
    w2 = load_model(model_path(run, 2)).weights
    step = (N_TRAIN["site1"] * OFFSETS["site1"] + N_TRAIN["site2"] * OFFSETS["site2"]) / 8
    k = next(iter(w0))
    np.testing.assert_allclose(w2[k], w0[k] + step, atol=1e-6)


def _check_he(plan: PlanConfig) -> None:
    he.check_plan(plan.privacy.he, plan.network, list(plan.sites))


def test_plan_check_refuses_too_many_ciphertext_bytes(tmp_path: Path) -> None:
    sites = {s: tmp_path / s for s in SITES}
    fets = {"base_filters": 30, "depth": 4}
    plan = tiny_plan(sites, network=fets, privacy={"he": "ckks"})
    with pytest.raises(PlanError, match=r"30,205,803 values .* 1\.93 GB per site per round"):
        check_plan_runs(plan, tmp_path / "run")
    selected = {"scheme": "ckks", "layers": ["ups.*", "head.*"]}
    # 9.5 M values, 0.61 GB: within the default 1 GiB
    _check_he(tiny_plan(sites, network=fets, privacy={"he": selected}))
    meant = {"scheme": "ckks", "max_bytes_per_site": 2 * 10**9}
    _check_he(tiny_plan(sites, network=fets, privacy={"he": meant}))
    with pytest.raises(PlanError, match="select no floating weight"):
        _check_he(tiny_plan(sites, privacy={"he": {"scheme": "ckks", "layers": ["enc*"]}}))
    with pytest.raises(PlanError, match="key_holder 'nobody' is not a plan site"):
        _check_he(tiny_plan(sites, privacy={"he": {"scheme": "ckks", "key_holder": "nobody"}}))


def test_missing_tenseal_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real = builtins.__import__

    def no_tenseal(name: str, *args: object, **kwargs: object) -> object:
        if name == "tenseal":
            raise ImportError("No module named 'tenseal'")
        return real(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_tenseal)
    with pytest.raises(
        Exception, match=r"^privacy.he needs the privacy extra: pip install 'fedseg\[privacy\]'$"
    ):
        he.new_keys(CFG)


def test_a_restarted_key_holder_answers_with_the_same_key(tmp_path: Path) -> None:
    ask: Payload = {"run_id": "run-1", "he": CFG.model_dump_json()}
    first = answer("he_keys", SiteContext("site1", None, tmp_path / "ws"), ask)
    again = answer("he_keys", SiteContext("site1", None, tmp_path / "ws"), ask)  # empty state
    assert first[he.KEY] == again[he.KEY]
    assert not he.tenseal().context_from(np.asarray(first["public"]).tobytes()).is_private()
    with pytest.raises(Exception, match="not a folder name"):
        answer("he_keys", SiteContext("site1", None, tmp_path / "ws"), {**ask, "run_id": "../x"})


class _KeyHolderLost(HeTransport):
    """``HeTransport`` whose ``gone`` sites fail every query and are not connected once
    ``disconnect`` is set."""

    def __init__(self, ws: Path, gone: set[str], disconnect: bool) -> None:
        super().__init__(ws, OFFSETS, N_TRAIN)
        self.gone, self.disconnect = gone, disconnect

    def connected_sites(self, wanted: list[str], wait_s: float) -> list[str]:
        here = super().connected_sites(wanted, wait_s)
        return [s for s in here if not (self.disconnect and s in self.gone)]

    def query(
        self, kind: str, payloads: dict[str, Payload], timeout_s: float
    ) -> dict[str, Payload | SiteFailure]:
        if kind == "he_decrypt" and set(payloads) & self.gone:
            return {s: SiteFailure(SiteRoundStatus.TIMEOUT, "no answer") for s in payloads}
        return super().query(kind, payloads, timeout_s)


def test_a_lost_key_holder_stops_the_run_in_one_line_and_a_resume_uses_another(
    tmp_path: Path,
) -> None:
    from fedseg.errors import FedsegError

    sites = {s: tmp_path / s for s in SITES}
    run = write_run(tmp_path / "run", tiny_plan(sites, privacy={"min_summary_cases": 1,
                                                                "he": "ckks"}))  # fmt: skip
    with pytest.raises(FedsegError, match=r"^round 1: privacy.he: the key holder did not "
                       r"answer to decrypt the sum \(no answer\); .* `fedseg resume`"):  # fmt: skip
        Coordinator(run, _KeyHolderLost(tmp_path / "ws", {"site1"}, False)).run()
    with RunStore(run) as store:
        assert store.last_done_round() == 0 and "key holder" in (store.meta.cause().message)  # type: ignore[union-attr]
    # site1 is gone for good: the restarted aggregator asks the next connected site
    t = _KeyHolderLost(tmp_path / "ws", {"site1"}, True)
    Coordinator(run, t).run()
    with RunStore(run) as store:
        assert store.last_done_round() == 2
        rec = store.meta.he()
    assert rec is not None and rec.key_holder == "site2"
    assert ("he_decrypt", "site2") in t.queries


@pytest.mark.parametrize(("level", "want"), [("none", N_TRAIN), ("site", dict.fromkeys(SITES, 1))])
def test_each_site_weight_is_the_aggregators_own_number(
    tmp_path: Path, level: str, want: dict[str, int]
) -> None:
    """w_i is the site's declared training cases (its hello), or 1 under site-level DP;
    never what a reply says."""
    from fedseg.federation.rounds.he_aggregation import WEIGHT
    from fedseg.run_folder import DeclaredCases

    sites = {s: tmp_path / s for s in SITES}
    plan = tiny_plan(sites, privacy={"min_summary_cases": 1, "he": "ckks", "dp": {"level": level}})
    run = write_run(tmp_path / "run", plan)
    t = HeTransport(tmp_path / "ws", OFFSETS, N_TRAIN)
    declared = {s: DeclaredCases(n_train=n, n_val=1) for s, n in N_TRAIN.items()}
    with RunStore(run) as store:
        agg = HeAggregation(plan, run, store)
        secure = agg.prepare(1, list(SITES), declared, _tiny_weights(), t)  # type: ignore[arg-type]
    assert {s: p[WEIGHT] for s, p in secure.items()} == {s: float(n) for s, n in want.items()}
