"""Parallel plans through the round loop: FedProx's mu, averaged optimizer state,
participation, server state surviving a restart, poisoned-site robustness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedseg.federation.engine.messages import (
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)
from fedseg.federation.rounds.coordinator import Coordinator, initial_weights
from fedseg.federation.rounds.optimizer_state import average_states
from fedseg.federation.rounds.tasks import TaskReply, TaskRequest
from fedseg.model.model_file import load_model
from fedseg.plan import load_plan
from fedseg.run_folder import model_path
from fedseg.train.local import optimizer_steps
from tests.federation.fed_helpers import DyingTransport
from tests.strategies.strategy_helpers import (
    SITES,
    ArrayTransport,
    float_keys,
    tiny_plan,
    write_run,
)

OFFSETS = {"site1": 0.1, "site2": 0.2, "site3": 0.4}
N_TRAIN = {"site1": 1, "site2": 2, "site3": 5}


def _run(tmp_path: Path, name: str, rounds: int = 2, transport=None, bounds=None, **params):  # type: ignore[no-untyped-def]
    sites = {s: tmp_path / s for s in SITES}
    extra = {"bounds": bounds} if bounds is not None else {}
    plan = tiny_plan(sites, rounds=rounds, strategy={"name": name, "params": params}, **extra)
    run = write_run(tmp_path / name, plan)
    t = transport or ArrayTransport(OFFSETS, N_TRAIN)
    Coordinator(run, t).run()
    return run, t


def test_fedprox_sends_mu_and_averages_like_fedavg(tmp_path: Path) -> None:
    run, t = _run(tmp_path, "fedprox", rounds=1, mu=0.5)
    req = t.requests[0]["site1"]
    assert (req.optimizer_mode, req.proximal_mu) == ("keep-local", 0.5)
    w0 = initial_weights(load_plan(run / "plan.yaml"))
    w1 = load_model(model_path(run, 1)).weights
    step = sum(N_TRAIN[s] * OFFSETS[s] for s in SITES) / sum(N_TRAIN.values())
    for k in float_keys(w0):
        np.testing.assert_allclose(w1[k], w0[k] + step, atol=1e-5)


def test_average_optimizer_state_goes_back_out_weighted(tmp_path: Path) -> None:
    _, t = _run(tmp_path, "fedavg", rounds=2, optimizer_state="average")
    assert t.requests[0]["site1"].optimizer_state is None
    st = t.requests[1]["site2"].optimizer_state
    assert st is not None
    expect = sum(N_TRAIN[s] * OFFSETS[s] for s in SITES) / sum(N_TRAIN.values())
    np.testing.assert_allclose(st["exp_avg/w"], expect, rtol=1e-6)
    assert int(st["step"]) == round(sum(N_TRAIN[s] * 10 * N_TRAIN[s] for s in SITES) / 8)
    # reset and keep-local send no state
    _, t2 = _run(tmp_path, "fedadam", rounds=2, optimizer_state="reset")
    assert t2.requests[1]["site1"].optimizer_state is None
    assert t2.requests[1]["site1"].optimizer_mode == "reset"


def test_fedadam_state_survives_a_restart(tmp_path: Path) -> None:
    straight, _ = _run(tmp_path / "a", "fedadam", rounds=3, server_lr=0.05)
    sites = {s: tmp_path / s for s in SITES}
    plan = tiny_plan(sites, rounds=3, strategy={"name": "fedadam", "params": {"server_lr": 0.05}})
    run = write_run(tmp_path / "b" / "fedadam", plan)
    with pytest.raises(RuntimeError, match="killed"):
        Coordinator(run, DyingTransport(3, OFFSETS, N_TRAIN)).run()
    assert model_path(run, 2).with_suffix(".strategy.npz").is_file()
    Coordinator(run, ArrayTransport(OFFSETS, N_TRAIN)).run()
    a, b = load_model(model_path(straight, 3)).weights, load_model(model_path(run, 3)).weights
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_partial_participation_in_the_loop(tmp_path: Path) -> None:
    _, t = _run(tmp_path, "fedavg", rounds=4, sites_per_round=1, participation_seed=1)
    trainers = [[s for s, r in reqs.items() if r.epochs > 0] for reqs in t.requests[:4]]
    assert all(len(x) == 1 for x in trainers)
    assert all(len(reqs) == 3 for reqs in t.requests)  # the others still validate
    assert len({x[0] for x in trainers}) > 1


def test_median_resists_a_scaled_update_fedavg_does_not(tmp_path: Path) -> None:
    def scale_site3(site: str, w):  # type: ignore[no-untyped-def]
        return (
            {k: v * 50 if v.dtype.kind == "f" else v for k, v in w.items()}
            if site == "site3"
            else w
        )

    res = {}
    no_clip = {"update_norm_ratio": None}  # the strategies alone, without the norm bound
    for name in ("fedavg", "median", "krum", "fedavg-bounded"):
        strategy = name.removesuffix("-bounded")
        run, _ = _run(tmp_path / name, strategy, rounds=1,
                      transport=ArrayTransport(OFFSETS, N_TRAIN, tamper=scale_site3),
                      bounds=None if name.endswith("-bounded") else no_clip)  # fmt: skip
        w0 = initial_weights(load_plan(run / "plan.yaml"))
        w1 = load_model(model_path(run, 1)).weights
        res[name] = max(float(np.abs(w1[k] - w0[k]).max()) for k in float_keys(w0))
    assert res["median"] < 1.0 and res["krum"] < 1.0
    assert res["fedavg"] > 5 * res["median"]
    # the default norm bound clips site3's x50 update to 3x the round's median change
    assert res["fedavg-bounded"] < 0.1 * res["fedavg"]


def test_messages_carry_options_and_optimizer_state() -> None:
    w = {"a": np.arange(3, dtype=np.float32)}
    opt = {"step": np.array(4, np.int64), "exp_avg/a": np.ones(3, np.float32)}
    req = TaskRequest(1, 0, True, 1, 3, "r", "{}", w, optimizer_mode="average", proximal_mu=0.1,
                      optimizer_state=opt)  # fmt: skip
    back = decode_request(encode_request(req))
    assert (back.optimizer_mode, back.proximal_mu) == ("average", 0.1)
    assert optimizer_steps(back.optimizer_state) == 4
    np.testing.assert_array_equal(back.optimizer_state["exp_avg/a"], 1.0)  # type: ignore[index]
    rep = decode_reply(encode_reply(TaskReply("s", weights=w, optimizer_state=opt)))
    assert optimizer_steps(rep.optimizer_state) == 4
    plain = decode_request(encode_request(TaskRequest(1, 0, True, 1, 3, "r", "{}", w)))
    assert (plain.optimizer_mode, plain.proximal_mu) == ("keep-local", 0.0)
    assert plain.optimizer_state is None


def test_average_states_by_hand() -> None:
    a = {"step": np.array(2, np.int64), "exp_avg/w": np.array([1.0, 2.0], np.float32)}
    b = {"step": np.array(6, np.int64), "exp_avg/w": np.array([3.0, 6.0], np.float32)}
    never = {"step": np.array(0, np.int64)}
    avg = average_states([a, b, never], [1.0, 3.0, 5.0])
    assert avg is not None
    np.testing.assert_allclose(avg["exp_avg/w"], [2.5, 5.0])
    assert int(avg["step"]) == 5  # 0.25 * 2 + 0.75 * 6
    assert average_states([never], [1.0]) is None
    assert optimizer_steps(never) == 0
