"""The strategy registry (one class per name, no import circle), typed params, namespaced
state that round-trips for every strategy, and one optimizer-state average for all plans."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedseg.errors import FedsegError
from fedseg.federation.rounds.optimizer_state import average_states
from fedseg.federation.rounds.strategies import base
from fedseg.federation.rounds.strategies.base import SiteUpdate, Strategy, StrategyParams
from fedseg.federation.rounds.strategies.fedavg import FedAvg, FedAvgParams
from fedseg.federation.rounds.strategies.parallel import ParallelParams, ParallelStrategy
from fedseg.federation.rounds.strategies.registry import STRATEGIES, make_strategy
from fedseg.federation.rounds.strategies.robust import KrumParams
from fedseg.federation.rounds.strategies.sequential import Cyclic, CyclicParams, SinglePass
from fedseg.model.weights import load_arrays, nest, save_arrays, unnest
from fedseg.plan import StrategyConfig

SRC = Path(__file__).parents[2] / "src"
STRATEGY_MODULES = sorted((SRC / "fedseg/federation/rounds/strategies").glob("*.py"))


def _subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub, *_subclasses(sub)}
    return out


def test_one_class_per_name_and_fedavg_is_the_participation_aware_one() -> None:
    assert len(set(STRATEGIES.values())) == len(STRATEGIES)
    assert STRATEGIES["fedavg"] is FedAvg
    assert issubclass(FedAvg, ParallelStrategy) and FedAvg.params_model is FedAvgParams
    assert {"fraction", "sites_per_round", "optimizer_state", "weighted"} <= set(
        FedAvgParams.model_fields
    )
    fedavg = make_strategy(StrategyConfig(name="fedavg", params={"sites_per_round": 1}), 1)
    assert sum(t.train for t in fedavg.configure_round(1, ["a", "b", "c"]).values()) == 1
    # every concrete strategy class is reachable by exactly one name; bases are not
    concrete = {c for c in _subclasses(Strategy) if not c.__name__.startswith("_")}
    concrete = {c for c in concrete if c.__module__.startswith("fedseg.")}
    named_bases = ("SequentialStrategy", "MeanStrategy")
    bases = {ParallelStrategy, *(c for c in concrete if c.__name__ in named_bases)}
    assert concrete - bases == set(STRATEGIES.values())


def test_strategy_modules_do_not_import_the_registry() -> None:
    for path in STRATEGY_MODULES:
        tree = ast.parse(path.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        if path.stem != "registry":
            assert not {m for m in imported if m and m.endswith(".registry")}, path.name
    code = (
        "import sys, fedseg.federation.rounds.strategies.base as b, "
        "fedseg.federation.rounds.strategies.sequential as s\n"
        "assert 'fedseg.federation.rounds.strategies.registry' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(SRC)})


def test_params_are_typed_by_the_class_type_argument() -> None:
    assert STRATEGIES["krum"].params_model is KrumParams
    assert (
        Cyclic.params_model is CyclicParams and "cycles" not in SinglePass.params_model.model_fields
    )
    for name, cls in STRATEGIES.items():
        strat = make_strategy(StrategyConfig(name=name), 2)
        assert type(strat) is cls and isinstance(strat.params, cls.params_model), name
        assert issubclass(cls.params_model, StrategyParams)
        if issubclass(cls, ParallelStrategy):
            assert issubclass(cls.params_model, ParallelParams), name
    assert base.Strategy.params_model is StrategyParams


def test_registry_errors_are_one_line() -> None:
    with pytest.raises(FedsegError, match=r"unknown; choose one of .*fedavg.*single-pass") as e:
        make_strategy(StrategyConfig(name="nope"), 1)
    assert "\n" not in str(e.value)
    with pytest.raises(FedsegError, match=r"^strategy\.params\.mu: "):
        make_strategy(StrategyConfig(name="fedprox", params={"mu": -1}), 1)
    with pytest.raises(FedsegError, match=r"^strategy\.params: .*not both"):
        make_strategy(StrategyConfig(name="fedavg", params={"fraction": 0.5,
                                                            "sites_per_round": 1}), 1)  # fmt: skip


def test_nest_and_unnest() -> None:
    a = {"x": np.arange(3.0), "y/z": np.array(2, np.int64)}
    both = {**nest("m", a), **nest("mm", {"x": np.zeros(1)}), **nest("v", None)}
    assert list(both) == ["m/x", "m/y/z", "mm/x"]
    back = unnest("m", both)
    assert list(back) == ["x", "y/z"] and all(back[k] is a[k] for k in a)
    assert unnest("v", both) == {} and nest("v", {}) == {}


def _state(step: int, value: float) -> dict[str, np.ndarray]:
    return {"step": np.array(step, np.int64), "exp_avg/w": np.full(2, value, np.float32),
            "exp_avg_sq/w": np.full(2, value * value, np.float32)}  # fmt: skip


def _updates(x: dict[str, np.ndarray], rnd: int) -> list[SiteUpdate]:
    return [
        SiteUpdate(s, {"w": x["w"] + d * rnd, "k": x["k"] + 1}, n, 0.1, _state(10 * n, d))
        for s, d, n in (("a", 0.5, 1), ("b", -0.25, 3))
    ]


#: the strategies of segmentation models (``modality-fedavg`` averages a generator's named
#: weight groups and refuses ``optimizer_state: average``: tests/synthesis)
SEGMENTATION = sorted(n for n, cls in STRATEGIES.items() if "segmentation" in cls.tasks)


@pytest.mark.parametrize("name", SEGMENTATION)
def test_state_round_trips_for_every_strategy(name: str, tmp_path: Path) -> None:
    cfg = StrategyConfig(name=name, params={"optimizer_state": "average"})
    strat = make_strategy(cfg, 1)
    x = {"w": np.array([1.0, -2.0], np.float32), "k": np.array(5, np.int64)}
    for rnd in (1, 2):
        x = strat.aggregate(rnd, x, _updates(x, rnd))
    state = strat.state_dict()
    assert unnest("optimizer", state), name  # every plan keeps its optimizer average
    assert {k.split("/", 1)[0] for k in state} <= {"optimizer", "m", "v", "utility"}
    save_arrays(tmp_path / "s.strategy.npz", state)
    again = make_strategy(cfg, 1)
    again.load_state_dict(load_arrays(tmp_path / "s.strategy.npz"))
    back = again.state_dict()
    assert list(back) == list(state)
    for k, v in state.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        np.testing.assert_array_equal(back[k], v)
    # the restored strategy continues exactly as the one that never stopped
    a, b = strat.aggregate(3, x, _updates(x, 3)), again.aggregate(3, x, _updates(x, 3))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    ta = strat.training_task(1).optimizer_state
    tb = again.training_task(1).optimizer_state
    assert ta is not None and tb is not None
    for k in ta:
        np.testing.assert_array_equal(ta[k], tb[k])
    # without average there is no optimizer part (stateless plans keep nothing)
    plain = make_strategy(StrategyConfig(name=name), 1)
    plain.aggregate(1, x, _updates(x, 1))
    assert not unnest("optimizer", plain.state_dict())


def test_cyclic_average_passes_the_same_average_as_the_parallel_plans() -> None:
    avg = {"optimizer_state": "average"}
    cyclic = make_strategy(StrategyConfig(name="cyclic", params=avg), 1)
    fedavg = make_strategy(StrategyConfig(name="fedavg", params=avg), 1)
    x = {"w": np.array([1.0, -2.0], np.float32), "k": np.array(5, np.int64)}
    ups = _updates(x, 1)
    cyclic.aggregate(1, x, ups)
    fedavg.aggregate(1, x, ups)
    sent = cyclic.configure_round(2, ["a", "b"])["b"]
    assert sent.train and sent.optimizer_mode == "average" and sent.optimizer_state is not None
    expect = average_states([u.optimizer_state or {} for u in ups], [1.0, 3.0])
    same = fedavg.training_task(1).optimizer_state
    assert expect is not None and same is not None
    for k, v in expect.items():
        np.testing.assert_array_equal(sent.optimizer_state[k], v)
        np.testing.assert_array_equal(same[k], v)
    assert (
        sent.optimizer_state["step"].dtype == np.int64 and int(sent.optimizer_state["step"]) == 25
    )
    # one visit, one state: it travels on unchanged; a state that never stepped does not
    one = SiteUpdate("a", x, 1, 0.1, _state(7, 0.3))
    cyclic.aggregate(2, x, [one])
    for k, v in _state(7, 0.3).items():
        got = cyclic.configure_round(3, ["a", "b"])["a"].optimizer_state
        assert got is not None and got[k].dtype == v.dtype
        np.testing.assert_array_equal(got[k], v)
    cyclic.aggregate(3, x, [SiteUpdate("b", x, 1, 0.1, {"step": np.array(0, np.int64)})])
    got = cyclic.training_task(1).optimizer_state
    assert got is not None and int(got["step"]) == 7
    # keep-local and reset send none
    for mode in ("keep-local", "reset"):
        c = make_strategy(StrategyConfig(name="cyclic", params={"optimizer_state": mode}), 1)
        c.aggregate(1, x, ups)
        task = c.configure_round(2, ["a", "b"])["b"]
        assert task.optimizer_mode == mode and task.optimizer_state is None
