"""The federation unit (train_local) and validation (validate_cases) on real NIfTI cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedseg.data.cases import Case
from fedseg.data.labels import REGIONS
from fedseg.model.config import NetworkConfig
from fedseg.model.evaluate import summarize_cases
from fedseg.model.metrics import METRICS
from fedseg.model.registry import build_network, new_network
from fedseg.model.weights import get_weights
from fedseg.train.config import TrainConfig
from fedseg.train.local import (
    load_optimizer_state,
    new_optimizer,
    optimizer_state_dict,
    optimizer_steps,
    train_local,
)
from fedseg.train.validate import validate_cases


def _assert_weights_close(a: dict, b: dict, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=atol, err_msg=k)


def test_train_local_changes_weights_and_reports(
    site: list[Case], tiny_net: NetworkConfig, tiny_train: TrainConfig
) -> None:
    init = get_weights(new_network(tiny_net, None, seed=5))
    res = train_local(tiny_net, tiny_train, None, None, site, 1, seed=5)
    assert res.n_train == len(site)
    assert res.steps == 5  # 5 cases x 2 patches / batch 2
    assert math.isfinite(res.train_loss) and 0 < res.train_loss < 1
    assert res.wall_s > 0 and res.compute_s > 0
    assert res.weights.keys() == init.keys()
    moved = [k for k in init if not np.array_equal(init[k], res.weights[k])]
    assert len(moved) > len(init) // 2
    assert res.optimizer_state["step"] == 5
    params = dict(build_network(tiny_net).named_parameters())
    for name, p in params.items():
        assert res.optimizer_state[f"exp_avg/{name}"].shape == tuple(p.shape)
        assert isinstance(res.optimizer_state[f"exp_avg_sq/{name}"], np.ndarray)


def test_training_with_persistent_workers_equals_training_in_process(
    site: list[Case], tiny_net: NetworkConfig, tiny_train: TrainConfig
) -> None:
    """Two loader workers kept across three epochs: the same steps as no workers."""
    a = train_local(tiny_net, tiny_train, None, None, site[:3], 3, seed=4)
    two = tiny_train.model_copy(update={"num_workers": 2})
    b = train_local(tiny_net, two, None, None, site[:3], 3, seed=4)
    assert a.epoch_losses == b.epoch_losses
    _assert_weights_close(a.weights, b.weights, atol=0)


def test_fresh_init_and_training_are_deterministic_under_the_seed(
    site: list[Case], tiny_net: NetworkConfig, tiny_train: TrainConfig
) -> None:
    a = train_local(tiny_net, tiny_train, None, None, site[:2], 1, seed=9)
    b = train_local(tiny_net, tiny_train, None, None, site[:2], 1, seed=9)
    c = train_local(tiny_net, tiny_train, None, None, site[:2], 1, seed=10)
    _assert_weights_close(a.weights, b.weights, atol=0)
    assert a.train_loss == b.train_loss
    assert any(not np.array_equal(a.weights[k], c.weights[k]) for k in a.weights)


def test_continuing_with_the_optimizer_state_equals_training_straight(
    site: list[Case], tiny_net: NetworkConfig, tiny_train: TrainConfig
) -> None:
    cases = site[:2]
    straight = train_local(tiny_net, tiny_train, None, None, cases, 2, seed=2)
    first = train_local(tiny_net, tiny_train, None, None, cases, 1, seed=2)
    second = train_local(
        tiny_net, tiny_train, first.weights, first.optimizer_state, cases, 1, seed=2, first_epoch=1
    )
    _assert_weights_close(second.weights, straight.weights)
    assert second.optimizer_state["step"] == straight.optimizer_state["step"] == 4
    # Without the optimizer state (a reset Adam) the result differs: the state matters.
    reset = train_local(tiny_net, tiny_train, first.weights, None, cases, 1, seed=2, first_epoch=1)
    diff = max(float(np.abs(reset.weights[k] - straight.weights[k]).max()) for k in reset.weights)
    assert diff > 1e-4


def test_optimizer_state_round_trips_through_numpy(tiny_net: NetworkConfig) -> None:
    import torch

    net = new_network(tiny_net, None, seed=0)
    opt = new_optimizer(net, TrainConfig.cpu())
    fresh = optimizer_state_dict(opt, net)
    assert list(fresh) == ["step"] and optimizer_steps(fresh) == 0
    net(torch.randn(1, 4, 8, 8, 8)).mean().backward()
    opt.step()
    state = optimizer_state_dict(opt, net)
    opt2 = new_optimizer(net, TrainConfig.cpu())
    load_optimizer_state(opt2, net, state)
    again = optimizer_state_dict(opt2, net)
    assert again.keys() == state.keys() and again["step"] == 1
    assert state["step"].shape == () and state["step"].dtype == np.int64
    for k in state:
        np.testing.assert_array_equal(again[k], state[k])


def test_validate_cases_returns_metrics_per_case(
    site: list[Case], tiny_net: NetworkConfig, tiny_train: TrainConfig
) -> None:
    weights = get_weights(new_network(tiny_net, None, seed=0))
    results = validate_cases(tiny_net, tiny_train, weights, site[:2])
    assert [r.case_id for r in results] == [c.case_id for c in site[:2]]
    for r in results:
        assert set(r.metrics) == set(REGIONS)
        for region in REGIONS:
            assert set(r.metrics[region]) == set(METRICS)
            assert 0 <= r.metrics[region]["dice"] <= 1
    summary = summarize_cases(results)
    assert summary["WT"]["dice"].n == 2
    expected = np.mean([r.metrics["WT"]["dice"] for r in results])
    assert abs(summary["WT"]["dice"].mean - expected) < 1e-12
    assert set(summary) == {*REGIONS, "mean"}


def test_a_fixed_number_of_steps_cuts_the_last_epoch_and_equals_the_straight_run(
    site: list[Case], tiny_net: NetworkConfig, tiny_train: TrainConfig
) -> None:
    """``steps``: 7 steps over 2 cases (2 steps an epoch) take epochs 0-2 and one step of
    epoch 3, the very batches of a 4-epoch run's first 7 steps; one case gets as many."""
    cases = site[:2]
    seven = train_local(tiny_net, tiny_train, None, None, cases, 1, seed=3, steps=7)
    assert seven.steps == 7 and seven.optimizer_state["step"] == 7
    assert len(seven.epoch_losses) == 4
    # the same 7 steps as whole epochs 0-2 and then one step: weights match exactly
    three = train_local(tiny_net, tiny_train, None, None, cases, 3, seed=3)
    one = train_local(tiny_net, tiny_train, three.weights, three.optimizer_state, cases, 1,
                      seed=3, first_epoch=3, steps=1)  # fmt: skip
    _assert_weights_close(seven.weights, one.weights, atol=0)
    four = train_local(tiny_net, tiny_train, None, None, cases, 4, seed=3)
    assert any(not np.array_equal(four.weights[k], seven.weights[k]) for k in four.weights)
    small = train_local(tiny_net, tiny_train, None, None, site[:1], 1, seed=3, steps=7)
    assert small.steps == 7 and len(small.epoch_losses) == 7  # 1 step an epoch


def test_zero_steps_are_refused(
    site: list[Case], tiny_net: NetworkConfig, tiny_train: TrainConfig
) -> None:
    with pytest.raises(ValueError, match="steps"):
        train_local(tiny_net, tiny_train, None, None, site[:1], 1, seed=3, steps=0)
