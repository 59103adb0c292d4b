"""How weights travel: one encoding of the round's model for all sites, decoding without
copies at the aggregator, and the plan's optional float16 transfer (half the bytes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedseg.errors import FedsegError
from fedseg.federation.commands.simulate import simulate
from fedseg.federation.engine.messages import (
    WIRE,
    content_bytes,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    encode_requests,
)
from fedseg.federation.rounds.aggregation import check_update
from fedseg.federation.rounds.tasks import TaskReply, TaskRequest, recipe_json
from fedseg.federation.rounds.transfer import round_trip, to_wire
from fedseg.model.config import NetworkConfig
from fedseg.model.model_file import load_model
from fedseg.model.registry import new_network
from fedseg.model.weights import Weights, get_weights
from fedseg.plan import PlanConfig, load_plan, save_plan
from fedseg.run_folder import SPOOL_DIR, model_path
from fedseg.tracking.store import RunStore
from fedseg.train.config import TrainConfig
from tests.federation.fed_helpers import tiny_plan

RECIPE = recipe_json(NetworkConfig(base_filters=4, depth=2), TrainConfig.cpu())


def _weights() -> Weights:
    w = get_weights(new_network(NetworkConfig(base_filters=4, depth=2), None, 0))
    w["counter"] = np.array(3, np.int64)
    w["mask"] = np.array([True, False])
    w["double"] = np.ones(4, np.float64)
    return w


def _request(w: Weights, transfer: str = "float32", state: Weights | None = None) -> TaskRequest:
    return TaskRequest(1, 0, True, 1, 7, "run", RECIPE, w, optimizer_mode="average",
                       optimizer_state=state, transfer=transfer)  # type: ignore[arg-type]  # fmt: skip


def test_the_rounds_model_is_encoded_once_for_all_sites() -> None:
    w = _weights()
    state = {"step": np.array(4, np.int64), "exp_avg_sq/x": np.full(3, 1e-9, np.float32)}
    contents = encode_requests({s: _request(w, state=state) for s in ("a", "b", "c")})
    assert contents["a"]["global"] is contents["b"]["global"] is contents["c"]["global"]
    assert contents["a"]["optimizer"] is contents["c"]["optimizer"]
    assert contents["a"]["task"] is not contents["b"]["task"]
    # each site still counts the model it receives
    assert len({content_bytes(c) for c in contents.values()}) == 1


def test_the_aggregator_decodes_without_copies_and_a_site_gets_writable_arrays() -> None:
    w = _weights()
    got = decode_reply(encode_reply(TaskReply("s", w, n_train=1)))
    assert got.weights is not None
    for k, v in got.weights.items():
        np.testing.assert_array_equal(v, w[k])
        assert v.dtype == w[k].dtype and v.shape == w[k].shape
        assert not v.flags.writeable and not v.flags.owndata  # a view of the message's bytes
    req = decode_request(encode_request(_request(w)))
    for k, v in req.weights.items():
        np.testing.assert_array_equal(v, w[k])
        assert v.flags.writeable and v.flags.c_contiguous  # torch loads them at the site


def test_float16_transfer_halves_the_bytes_and_arrives_as_float32() -> None:
    w = _weights()
    state = {"step": np.array(4, np.int64), "exp_avg_sq/x": np.full(3, 1e-9, np.float32)}
    c32 = encode_request(_request(w, "float32", state))
    c16 = encode_request(_request(w, "float16", state))
    floats = sum(v.nbytes for v in w.values() if v.dtype == np.float32)
    # half the float32 bytes saved, less the names of the cast arrays (record ``wire``)
    assert content_bytes(c32) - content_bytes(c16) == pytest.approx(floats / 2, rel=0.05)
    assert content_bytes(c16) < 0.55 * content_bytes(c32)
    req = decode_request(c16)
    assert req.transfer == "float16"
    check_update(req.weights, w)  # float32 again: the dtype check holds
    for k, v in w.items():
        if v.dtype == np.float32:
            np.testing.assert_allclose(req.weights[k], v, rtol=1e-3, atol=1e-4)
        else:  # integer, boolean and float64 arrays travel as they are
            np.testing.assert_array_equal(req.weights[k], v)
    # the optimizer state keeps float32: Adam's small second moments would vanish in float16
    assert req.optimizer_state is not None
    np.testing.assert_array_equal(req.optimizer_state["exp_avg_sq/x"], state["exp_avg_sq/x"])

    rep = TaskReply("s", w, n_train=1, optimizer_state=state)
    r32, r16 = encode_reply(rep), encode_reply(rep, "float16")
    assert r16["weights"].count_bytes() < 0.55 * r32["weights"].count_bytes()
    assert WIRE in r16 and WIRE not in r32
    back = decode_reply(r16)
    assert back.weights is not None
    check_update(back.weights, w)


def test_arrays_outside_float16s_range_travel_as_float32() -> None:
    w = {"big": np.array([1e6, 1.0], np.float32), "ok": np.array([0.5], np.float32)}
    wire, cast = to_wire(w, "float16")
    assert cast == ["ok"] and wire["big"].dtype == np.float32
    back, sent = round_trip(w, "float16")
    np.testing.assert_array_equal(back["big"], w["big"])
    assert back["ok"].dtype == np.float32 and sent == 8 + 2


def test_transfer_is_a_typed_plan_key(tmp_path: Path) -> None:
    plan = PlanConfig.model_validate({"sites": {"a": {}}, "transfer": {"weights": "float16"}})
    assert plan.transfer.weights == "float16"
    assert PlanConfig.model_validate({"sites": {"a": {}}}).transfer.weights == "float32"
    bad = tmp_path / "plan.yaml"
    bad.write_text("sites: {a: {}}\ntransfer: {weights: int8}\n")
    with pytest.raises(FedsegError, match=r"transfer\.weights") as err:
        load_plan(bad)
    assert "\n" not in str(err.value)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_float16_transfer_through_real_flower_processes(
    tmp_path: Path, tiny_sites: dict[str, Path]
) -> None:
    """One round over the engine with float16 transfer: every update arrives as float32 and
    is aggregated, and each way carries about half the model's bytes."""
    plan = tiny_plan(tiny_sites, rounds=1, transfer={"weights": "float16"})
    run = tmp_path / "run"
    res = simulate(save_plan(tmp_path / "plan.yaml", plan), run, live=False)
    assert res.rounds_done == 1
    model_bytes = sum(v.nbytes for v in load_model(model_path(run, 0)).weights.values())
    with RunStore(run) as store:
        srs = store.site_rounds()
    assert len(srs) == 3
    for s in srs:
        assert s.status == "ok", s  # float32 again on arrival: check_update accepted it
        assert 0.5 * model_bytes <= s.bytes_sent < 0.6 * model_bytes
        assert 0.5 * model_bytes <= s.bytes_received < 0.6 * model_bytes
    assert not (run / SPOOL_DIR).exists()
