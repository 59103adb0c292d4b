"""``train.lr_schedule``: the one formula (``round_lr``), the config's one-line errors, the
plan template's key, and a centralized run (an epoch is a round) training at it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from fedseg.data.cases import Case
from fedseg.errors import FedsegError
from fedseg.federation.commands.central_training import SiteData, run_training
from fedseg.federation.rounds.tasks import recipe_from_json, recipe_json
from fedseg.model.config import NetworkConfig
from fedseg.plan import example_plan, load_plan
from fedseg.run_folder import LR_USED
from fedseg.tracking.store import RunStore
from fedseg.train.config import LrScheduleConfig, RecipeConfig, TrainConfig
from fedseg.train.lr_schedule import round_lr


def _lrs(schedule: LrScheduleConfig, planned: int, rounds: int | None = None) -> list[float]:
    return [round_lr(0.1, schedule, r, planned) for r in range(1, (rounds or planned) + 1)]


def test_constant_is_todays_lr_and_the_default() -> None:
    assert TrainConfig().lr_schedule == LrScheduleConfig(kind="constant")
    assert _lrs(LrScheduleConfig(), 5) == [0.1] * 5
    assert round_lr(0.1, LrScheduleConfig(), 7, 0) == 0.1  # no planned rounds needed


def test_linear_warmup_then_the_schedule() -> None:
    warm = LrScheduleConfig(kind="constant", warmup_rounds=3)
    assert _lrs(warm, 6) == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    step = LrScheduleConfig(kind="step", warmup_rounds=1, step_every=2, step_factor=0.1)
    assert _lrs(step, 7) == pytest.approx([0.05, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_cosine_from_lr_towards_zero_over_the_planned_rounds() -> None:
    lrs = _lrs(LrScheduleConfig(kind="cosine"), 4, rounds=6)
    expected = [0.1 * 0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(4)]
    # the first round at lr, the last above 0, rounds past the plan at the last round's lr
    assert lrs == pytest.approx([*expected, expected[-1], expected[-1]])
    assert lrs[0] == 0.1 and lrs[3] > 0
    warm = _lrs(LrScheduleConfig(kind="cosine", warmup_rounds=1), 5)
    assert warm == pytest.approx([0.05, *expected])  # T = planned - warmup
    assert _lrs(LrScheduleConfig(kind="cosine"), 1) == [0.1]
    with pytest.raises(ValueError, match="planned number of rounds"):
        round_lr(0.1, LrScheduleConfig(kind="cosine"), 1, 0)
    with pytest.raises(ValueError, match="from 1"):
        round_lr(0.1, LrScheduleConfig(), 0, 3)


def test_shorthand_and_the_recipe_round_trip() -> None:
    train = TrainConfig.cpu(lr_schedule="cosine")
    assert train.lr_schedule == LrScheduleConfig(kind="cosine")
    step = TrainConfig.cpu(lr_schedule={"kind": "step", "step_every": 3, "warmup_rounds": 2})
    # what the site receives is what the plan says (recipe JSON carries every key)
    for t in (train, step):
        _, back = recipe_from_json(recipe_json(NetworkConfig(base_filters=4, depth=2), t))
        assert back == t


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("linear", r"train\.lr_schedule\.kind: Input should be 'constant', 'cosine' or 'step'"),
        ("{kind: step}", r"train\.lr_schedule: kind step needs step_every"),
        ("{kind: cosine, step_every: 4}", "step_every and step_factor apply to kind step"),
        ("{kind: step, step_every: 2, step_factor: 2}", r"step_factor: Input should be less"),
        ("{kind: cosine, warmup_rounds: -1}", r"warmup_rounds: Input should be greater"),
        ("{kind: cosine, cycles: 2}", r"lr_schedule\.cycles: Extra inputs are not permitted"),
    ],
)
def test_a_bad_schedule_is_a_one_line_error(tmp_path: Path, schedule: str, message: str) -> None:
    p = tmp_path / "plan.yaml"
    p.write_text(f"sites: {{a: {{}}}}\ntrain: {{lr_schedule: {schedule}}}\n")
    with pytest.raises(FedsegError, match=message) as info:
        load_plan(p)
    assert "\n" not in str(info.value) and str(p) in str(info.value)


def test_the_plan_template_carries_the_key_and_plans_accept_every_kind(tmp_path: Path) -> None:
    text = example_plan([tmp_path / "a", tmp_path / "b"])
    assert yaml.safe_load(text)["train"]["lr_schedule"] == "constant"
    p = tmp_path / "plan.yaml"
    p.write_text(text)
    assert load_plan(p).train.lr_schedule == LrScheduleConfig()
    for kind in ("cosine", "{kind: step, step_every: 5, step_factor: 0.3, warmup_rounds: 2}"):
        p.write_text(text.replace("lr_schedule: constant", f"lr_schedule: {kind}"))
        sched = load_plan(p).train.lr_schedule
        assert sched.kind in ("cosine", "step")
        assert sched.kind == "cosine" or (sched.step_every, sched.warmup_rounds) == (5, 2)


def test_a_centralized_run_trains_each_epoch_at_the_schedules_lr(
    tmp_path: Path, site: list[Case], tiny_net: NetworkConfig, tiny_train: TrainConfig
) -> None:
    sched = LrScheduleConfig(kind="cosine", warmup_rounds=1)
    train = tiny_train.model_copy(update={"lr_schedule": sched})
    recipe = RecipeConfig(network=tiny_net, train=train)
    sites = [SiteData("a", site[:2], site[4:])]
    run_training(tmp_path / "run", sites, 3, recipe=recipe, progress=False)
    with RunStore(tmp_path / "run") as store:
        lrs = [(s.extra or {}).get(LR_USED) for s in store.site_rounds()]
    assert lrs == pytest.approx([round_lr(train.lr, sched, e, 3) for e in (1, 2, 3)])
    assert lrs[0] == pytest.approx(train.lr / 2) and lrs[1] == pytest.approx(train.lr)
    # a resumed run continues the same schedule (the lr of epoch e depends on e only)
    run_training(tmp_path / "run", sites, 4, resume=True, progress=False)
    with RunStore(tmp_path / "run") as store:
        last = store.site_rounds()[-1]
    assert (last.extra or {})[LR_USED] == pytest.approx(round_lr(train.lr, sched, 4, 4))
