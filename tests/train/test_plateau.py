"""``train.plateau``: the rule, and a centralized run that stops on it (and stays stopped)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fedseg.data.cases import Case
from fedseg.federation.commands.central_training import SiteData, run_training
from fedseg.model.config import NetworkConfig
from fedseg.run_folder import PlateauStop
from fedseg.tracking.store import RunStore
from fedseg.train.config import RecipeConfig, TrainConfig
from fedseg.train.plateau import PlateauConfig, plateau_best


@pytest.mark.parametrize(
    ("scores", "rounds", "min_delta", "expected"),
    [
        ({0: 0.1, 1: 0.2, 2: 0.3, 3: 0.4}, 2, 0.0, None),  # still rising
        ({0: 0.1, 1: 0.4, 2: 0.4, 3: 0.39}, 2, 0.0, 1),  # two rounds without a gain
        ({0: 0.1, 1: 0.4, 2: 0.4}, 2, 0.0, None),  # only one so far
        ({0: 0.1, 1: 0.4, 2: 0.4004, 3: 0.4008}, 2, 0.001, 1),  # gains below min_delta
        ({0: 0.1, 1: 0.4, 2: 0.4004, 3: 0.402}, 2, 0.001, None),  # 0.402 beats 0.4 + 0.001
        ({0: 0.1, 1: 0.4, 2: math.nan, 3: 0.3}, 2, 0.0, None),  # an unscored round: no count
        ({5: 0.3, 1: 0.5, 3: 0.2}, 2, 0.0, 1),  # rounds in order, whatever the mapping's
        ({0: 0.1, 1: 0.1, 2: 0.1}, None, 0.0, None),  # null: never
    ],
)
def test_the_rule(
    scores: dict[int, float], rounds: int | None, min_delta: float, expected: int | None
) -> None:
    assert plateau_best(scores, PlateauConfig(rounds=rounds, min_delta=min_delta)) == expected


def test_a_centralized_run_stops_on_its_plateau_and_a_resume_keeps_it_stopped(
    tmp_path: Path, site: list[Case], tiny_net: NetworkConfig, tiny_train: TrainConfig
) -> None:
    # no gain can exceed 1: the first epoch stays the best, the second is the one without
    plateau = PlateauConfig(rounds=1, min_delta=1.0)
    recipe = RecipeConfig(network=tiny_net,
                          train=tiny_train.model_copy(update={"plateau": plateau}))  # fmt: skip
    sites = [SiteData("a", site[:2], site[4:]), SiteData("b", site[2:4], site[4:])]
    out = tmp_path / "run"
    res = run_training(out, sites, 6, recipe=recipe, progress=False)
    assert res.epochs == 2 and res.best_epoch == 1
    with RunStore(out) as store:
        assert [r["round"] for r in store.rounds()] == [1, 2]
        assert store.meta.plateau() == PlateauStop(last_round=2, best_round=1, cap=6)
        assert store.meta.planned_rounds() == 2
        assert any("stopped after epoch 2 of 6" in m for _t, _lv, m in store.events())
    run_training(out, sites, 6, resume=True, progress=False)  # the recipe keeps the rule
    with RunStore(out) as store:
        assert [r["round"] for r in store.rounds()] == [1, 2]
