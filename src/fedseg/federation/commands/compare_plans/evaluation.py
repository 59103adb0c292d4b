"""Every compared model on every site: Dice per region on the training sites' validation
cases (pooled and per site) and on the held-out sites' cases, through the one evaluation
path (``train.validate.validate_cases`` -> ``model.evaluate``)."""

from __future__ import annotations

import filecmp

from rich.progress import Progress

from fedseg.data.cases import Case, discover_cases
from fedseg.data.splits import load_split
from fedseg.federation.commands.compare_plans.arguments import CompareConfig
from fedseg.federation.commands.compare_plans.outputs import COLUMNS, RunOutcome
from fedseg.model.config import NetworkConfig
from fedseg.model.evaluate import CaseResult, Summaries, summarize_cases
from fedseg.model.model_file import load_model
from fedseg.model.weights import Weights
from fedseg.train.config import TrainConfig
from fedseg.train.validate import validate_cases

#: Dice per region (and ``mean``).
RegionDice = dict[str, float]


def dice_on_sites(
    network: NetworkConfig, train: TrainConfig, weights: Weights, cases: dict[str, list[Case]]
) -> tuple[RegionDice, dict[str, RegionDice]]:
    """Dice per region pooled over every case of ``cases`` and per site:
    (pooled ``{region: dice}``, ``{site: {region: dice}}``)."""
    pooled: list[CaseResult] = []
    by_site: dict[str, RegionDice] = {}
    for site, cs in cases.items():
        if not cs:
            continue
        res = validate_cases(network, train, weights, cs)
        pooled += res
        by_site[site] = _dice(summarize_cases(res))
    return (_dice(summarize_cases(pooled)) if pooled else {}), by_site


def _dice(summaries: Summaries) -> RegionDice:
    return {r: float(summaries[r]["dice"].mean) for r in COLUMNS if r in summaries}


def evaluate_outcomes(cfg: CompareConfig, outcomes: list[RunOutcome], bar: Progress) -> None:
    """Fill ``scores`` and ``per_site`` of every outcome: its final and best model on the
    training sites' validation cases and on the held-out sites' cases."""
    val = {s: list(load_split(p).val) for s, p in cfg.sites.items()}
    held = {s: discover_cases(p) for s, p in cfg.holdout.items()}
    train = cfg.train.with_compute(cfg.compute)  # this machine's device and precision
    task = bar.add_task("evaluation", total=len(outcomes))
    for o in outcomes:
        for which, path in (("final", o.final), ("best", o.best or o.final)):
            if which == "best" and (o.best is None or filecmp.cmp(o.best, o.final, False)):
                o.scores["best"] = o.scores["final"]  # the final model was the best: same file
                o.per_site += [{**r, "model": "best"} for r in o.per_site]
                continue
            weights = load_model(path).weights
            pooled, by_site = dice_on_sites(cfg.network, train, weights, val)
            o.scores[which] = {"val": pooled}
            if held:
                hp, hs = dice_on_sites(cfg.network, train, weights, held)
                o.scores[which]["holdout"] = hp
                by_site.update({f"{s} (held out)": v for s, v in hs.items()})
            o.per_site += [{"run": o.label, "model": which, "site": s, "region": r, "dice": d}
                           for s, v in by_site.items() for r, d in v.items()]  # fmt: skip
        bar.advance(task)
