"""compare's pieces: argument parsing, the epoch budget, poisoning, result rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fedseg.data.cases import discover_cases, load_case
from fedseg.data.splits import load_split
from fedseg.errors import FedsegError
from fedseg.federation.commands.compare_plans.arguments import (
    CompareConfig,
    parse_plan_arg,
    parse_poison,
)
from fedseg.federation.commands.compare_plans.attacks import scale_update, scramble_site
from fedseg.federation.commands.compare_plans.budget import epochs_axis, plan_for
from fedseg.federation.commands.compare_plans.outputs import (
    RunOutcome,
    markdown_table,
    result_rows,
)
from fedseg.plan import save_plan

SITES = {f"s{i}": Path(f"/data/s{i}") for i in range(1, 5)}


def _cfg(*plans: str, budget: int = 4) -> CompareConfig:
    return CompareConfig(plans=[parse_plan_arg(p) for p in plans], sites=SITES, budget=budget)


def test_parse_poison() -> None:
    assert parse_poison("site2:scale=50").scale == 50 and parse_poison("a:scale").scale == 50
    assert parse_poison("site3:scramble").kind == "scramble"
    assert parse_poison("s:n_train=-5").n_train == -5
    assert parse_poison("s:n_train=1000000000").n_train == 10**9
    assert parse_poison("s:dice=1").dice == 1.0 and parse_poison("s:scale=1e30").scale == 1e30
    for bad in (
        "site2",
        "site2:flip",
        "site2:scale=x",
        ":scale=3",
        "s:scramble=2",
        "s:n_train",
        "s:n_train=1.5",
        "s:dice",
    ):
        with pytest.raises(FedsegError, match="poison"):
            parse_poison(bad)


def test_parse_plan_arg_names_and_files(tmp_path: Path) -> None:
    a = parse_plan_arg("krum:f=1,m=2")
    assert a.strategy.name == "krum" and a.strategy.params == {"f": 1, "m": 2}
    assert parse_plan_arg("cyclic:order=shuffled").strategy.params == {"order": "shuffled"}
    with pytest.raises(FedsegError, match="strategies: "):
        parse_plan_arg("fedsgd")
    from tests.strategies.strategy_helpers import tiny_plan

    prox = {"name": "fedprox", "params": {"mu": 0.1}}
    plan = tiny_plan({"x": tmp_path}, local_epochs=2, strategy=prox)
    arg = parse_plan_arg(str(save_plan(tmp_path / "prox.yaml", plan)))
    assert (arg.label, arg.local_epochs, arg.strategy.params) == ("prox", 2, {"mu": 0.1})


def test_every_plan_gets_the_same_epoch_budget() -> None:
    cfg = _cfg("fedavg", "fedavg:fraction=0.5", "cyclic", "cyclic:epochs_per_visit=2",
               "single-pass", budget=4)  # fmt: skip
    plans = [plan_for(cfg, a, SITES) for a in cfg.plans]
    assert plans[0].rounds == 4
    assert plans[1].rounds == 8  # half the sites per round: twice the rounds
    assert plans[2].strategy.params["cycles"] == 4
    assert plans[3].strategy.params["cycles"] == 2
    assert plans[4].strategy.params["epochs_per_visit"] == 4
    for p in plans:  # 4 local epochs per site on average, whatever the plan
        assert epochs_axis(p)[-1] == pytest.approx(4.0)
    assert epochs_axis(plans[2])[:3] == pytest.approx([0, 0.25, 0.5])
    with pytest.raises(FedsegError, match="whole number of cycles"):
        plan_for(_cfg("cyclic:epochs_per_visit=3"), parse_plan_arg("cyclic:epochs_per_visit=3"),
                 SITES)  # fmt: skip


def test_scale_update() -> None:
    g = {"w": np.array([1.0, 2.0], np.float32), "n": np.array([3], np.int64)}
    u = {"w": np.array([1.5, 1.0], np.float32), "n": np.array([4], np.int64)}
    out = scale_update(g, u, 10)
    np.testing.assert_allclose(out["w"], [6.0, -8.0])
    assert out["w"].dtype == np.float32 and out["n"][0] == 4


def test_scramble_site_permutes_labels_and_keeps_the_split(
    tmp_path: Path, four_sites: dict[str, Path]
) -> None:
    src = four_sites["site1"]
    dst = scramble_site(src, tmp_path / "poisoned")
    before = {c.case_id: load_case(c).label for c in discover_cases(src)}
    after = {c.case_id: load_case(c).label for c in discover_cases(dst)}
    assert set(before) == set(after)
    for cid, lab in before.items():
        assert lab is not None and after[cid] is not None
        for a, b in ((1, 2), (2, 4), (4, 1)):
            assert (after[cid][lab == a] == b).all()
        assert ((after[cid] == 0) == (lab == 0)).all()
    assert [c.case_id for c in load_split(dst).val] == [c.case_id for c in load_split(src).val]


def test_scramble_site_keeps_a_declared_absent_modality_absent(
    tmp_path: Path, four_sites: dict[str, Path]
) -> None:
    src = tmp_path / "lacking"
    shutil.copytree(four_sites["site2"], src)
    for f in src.rglob("*_flair.nii.gz"):
        f.unlink()
    (src / "fedseg_site.yaml").write_text("absent_modalities: [flair]\n")
    dst = scramble_site(src, tmp_path / "poisoned")
    assert not list(dst.rglob("*_flair.nii.gz"))  # no all-zero FLAIR made up
    assert all(c.absent == ("flair",) and c.complete for c in discover_cases(dst))


def _outcome(label: str, kind: str, mean: float) -> RunOutcome:
    o = RunOutcome(label, kind, Path("."), 4.0, [(0.0, 0.1), (4.0, mean)], Path("f"), None, 1.0)
    o.scores = {"final": {"val": {"ET": mean, "TC": mean, "WT": mean, "mean": mean}},
                "best": {"val": {"mean": mean + 0.01}}}  # fmt: skip
    return o


def test_result_rows_share_of_central_and_single_site_check() -> None:
    outs = [_outcome("fedavg", "plan", 0.6), _outcome("krum", "plan", 0.3),
            _outcome("central", "central", 0.8), _outcome("single-a", "single", 0.5),
            _outcome("single-b", "single", 0.4)]  # fmt: skip
    rows = {r["run"]: r for r in result_rows(outs)}
    assert rows["fedavg"]["share_of_central"] == pytest.approx(0.75)
    assert rows["fedavg"]["beats_all_single"] and not rows["krum"]["beats_all_single"]
    md = markdown_table(list(rows.values()), _cfg("fedavg"))
    assert "| fedavg | plan | 4 | 0.600 | 0.600 | 0.600 | 0.600 | 0.610 | 75.0% | yes |" in md
    # without single-site models there is nothing to beat: "-", not "no"
    alone = {r["run"]: r for r in result_rows(outs[:3])}
    assert alone["fedavg"]["beats_all_single"] is None
    md = markdown_table(list(alone.values()), _cfg("fedavg"))
    assert "| fedavg | plan | 4 | 0.600 | 0.600 | 0.600 | 0.600 | 0.610 | 75.0% | - |" in md
