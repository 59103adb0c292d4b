"""What ``task: synthesis`` cannot run with: refused before any process starts
(``run_folder.check_plan_runs``), one exact line each; and what it can."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedseg.errors import PlanError
from fedseg.federation.commands.run_folder import check_plan_runs, generator_parameters
from fedseg.federation.commands.run_folder import round_bytes as plan_round_bytes
from fedseg.model.generator import GeneratorConfig
from fedseg.plan import PlanConfig
from tests.federation.fed_helpers import SITES, tiny_plan

SYNTH = {"task": "synthesis", "strategy": {"name": "modality-fedavg"}}
HIDDEN = "the hidden sum has one weight per site; modality-fedavg needs one per site and modality"


def _plan(tmp_path: Path, **overrides: object) -> PlanConfig:
    return tiny_plan({s: tmp_path / s for s in SITES}, **overrides)


REFUSED: list[tuple[str, dict[str, object], str]] = [
    (
        "fedavg with synthesis",
        {"task": "synthesis"},
        "strategy fedavg trains task segmentation, the plan's task is synthesis: set "
        "strategy.name: modality-fedavg (fedavg would average a site's untouched bank into "
        "the modalities it lacks)",
    ),
    (
        "median with synthesis",
        {"task": "synthesis", "strategy": {"name": "median"}},
        "strategy median trains task segmentation, the plan's task is synthesis: set "
        "strategy.name: modality-fedavg (median would average a site's untouched bank into "
        "the modalities it lacks)",
    ),
    (
        "modality-fedavg with segmentation",
        {"strategy": {"name": "modality-fedavg"}},
        "strategy modality-fedavg trains task synthesis, the plan's task is segmentation: "
        "set task: synthesis or choose another strategy",
    ),
    (
        "central mode",
        {**SYNTH, "synthesis": {"mode": "central"}},
        "synthesis.mode central is not implemented: it would send label maps off the sites; "
        "use synthesis.mode federated",
    ),
    (
        "averaged optimizer state",
        {
            **SYNTH,
            "strategy": {"name": "modality-fedavg", "params": {"optimizer_state": "average"}},
        },
        "strategy.params.optimizer_state average: the generator's Adam state stays at the "
        "sites with task synthesis; choose keep-local or reset",
    ),
    (
        "secure aggregation",
        {**SYNTH, "privacy": {"secure_aggregation": True}},
        f"privacy.secure_aggregation cannot run with task synthesis: {HIDDEN}",
    ),
    (
        "homomorphic encryption",
        {**SYNTH, "privacy": {"he": {"scheme": "ckks"}}},
        f"privacy.he cannot run with task synthesis: {HIDDEN}",
    ),
    (
        "site-level DP",
        {**SYNTH, "privacy": {"dp": {"level": "site"}}},
        "privacy.dp level site is not supported with task synthesis (the discriminators "
        "touch the images, G's gradient flows through them): set privacy.dp.level none",
    ),
    (
        "case-level DP",
        {**SYNTH, "privacy": {"dp": {"level": "case"}}},
        "privacy.dp level case is not supported with task synthesis (the discriminators "
        "touch the images, G's gradient flows through them): set privacy.dp.level none",
    ),
    (
        "a pre-training modality the generator lacks",
        {
            **SYNTH,
            "synthesis": {
                "generator": {"modalities": ["t1", "t2"]},
                "pretrain": {"modality": "flair"},
            },
        },
        "synthesis.pretrain.modality flair is not one of the generator's modalities (t1, t2): "
        "choose one of them or auto",
    ),
    (
        "a missing initial generator",
        {**SYNTH, "synthesis": {"initial_generator": "/nonexistent/G.pt"}},
        "synthesis.initial_generator /nonexistent/G.pt not found: fix the plan's synthesis section",
    ),
]


@pytest.mark.parametrize(("case", "overrides", "line"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_with_one_line(
    tmp_path: Path, case: str, overrides: dict[str, object], line: str
) -> None:
    plan = _plan(tmp_path, **overrides)
    with pytest.raises(PlanError) as err:
        check_plan_runs(plan, tmp_path / "run")
    assert str(err.value) == line
    assert "\n" not in str(err.value)


def test_a_synthesis_plan_runs_with_generator_sized_rounds(tmp_path: Path) -> None:
    gen = GeneratorConfig(base_filters=4, depth=2)
    plan = _plan(tmp_path, **SYNTH, synthesis={"generator": gen.model_dump()})
    needed = check_plan_runs(plan, tmp_path / "run")
    assert needed == plan_round_bytes(plan)
    n = generator_parameters(gen)
    # 5 model-sized files a round + the spool (one update per site)
    assert needed == n * 4 * (5 + len(SITES))
    # keep-local and reset are accepted
    for mode in ("keep-local", "reset"):
        strategy = {"name": "modality-fedavg", "params": {"optimizer_state": mode}}
        check_plan_runs(_plan(tmp_path, **{**SYNTH, "strategy": strategy}), tmp_path / "run")
