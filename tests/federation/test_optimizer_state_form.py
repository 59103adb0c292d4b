"""One form of the optimizer state: what ``train.local`` makes is what travels (engine
messages), what is saved (``save_arrays``) and what is averaged, with identical arrays and
a 0-d int64 ``step``; and it loads back into Adam as it was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedseg.federation.engine.messages import (
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)
from fedseg.federation.rounds.optimizer_state import average_states
from fedseg.federation.rounds.tasks import TaskReply, TaskRequest
from fedseg.model.weights import Weights, get_weights, load_arrays, save_arrays
from fedseg.train.local import OptimizerState, load_optimizer_state, optimizer_state_dict


def _trained_adam(steps: int = 3) -> tuple[nn.Module, OptimizerState]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(2, 3, 3), nn.BatchNorm3d(3), nn.Conv3d(3, 1, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        net(torch.randn(2, 2, 5, 5, 5)).square().mean().backward()
        opt.step()
    return net, optimizer_state_dict(opt, net)


def _assert_identical(got: Weights | None, want: Weights) -> None:
    assert got is not None and list(got) == list(want)
    for k, v in want.items():
        assert (got[k].dtype, got[k].shape) == (v.dtype, v.shape), k
        np.testing.assert_array_equal(got[k], v)


def test_the_state_is_arrays_with_a_0d_int64_step() -> None:
    net, state = _trained_adam()
    assert state["step"].shape == () and state["step"].dtype == np.int64 and int(state["step"]) == 3
    names = [n for n, _ in net.named_parameters()]
    assert list(state) == ["step", *(f"{m}/{n}" for n in names for m in ("exp_avg", "exp_avg_sq"))]
    assert all(isinstance(v, np.ndarray) for v in state.values())


def test_the_state_round_trips_through_wire_disk_and_averaging(tmp_path: Path) -> None:
    net, state = _trained_adam()
    weights = get_weights(net)  # 0-d num_batches_tracked counters too
    req = TaskRequest(2, 1, True, 1, 5, "run", "{}", weights, optimizer_mode="average",
                      optimizer_state=state)  # fmt: skip
    back = decode_request(encode_request(req))
    _assert_identical(back.optimizer_state, state)
    _assert_identical(back.weights, weights)
    rep = decode_reply(encode_reply(TaskReply("s", weights=weights, optimizer_state=state)))
    _assert_identical(rep.optimizer_state, state)
    save_arrays(tmp_path / "optimizer_0001.npz", state)
    _assert_identical(load_arrays(tmp_path / "optimizer_0001.npz"), state)
    _assert_identical(average_states([state], [3.0]), state)
    _assert_identical(average_states([state, state], [1.0, 2.0]), state)
    # and it goes back into Adam as it came out
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    load_optimizer_state(opt, net, rep.optimizer_state)  # type: ignore[arg-type]
    _assert_identical(optimizer_state_dict(opt, net), state)


def test_save_arrays_is_atomic_and_keeps_the_name(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "last.ckpt"  # any name: numpy adds no ".npz"
    arrays = {"epoch": np.array(3, np.int64), "optimizer/exp_avg/w": np.ones((2, 2), np.float32)}
    save_arrays(path, arrays)
    _assert_identical(load_arrays(path), arrays)
    save_arrays(path, {"epoch": np.array(4, np.int64)})  # replaced whole, not merged
    assert list(load_arrays(path)) == ["epoch"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]
