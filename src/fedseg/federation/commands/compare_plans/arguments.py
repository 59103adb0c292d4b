"""What ``fedseg compare`` is asked to run: plan arguments, ``--poison``, ``CompareConfig``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from fedseg.errors import FedsegError
from fedseg.federation.commands.compare_plans.attacks import Poison
from fedseg.federation.rounds.strategies.registry import STRATEGIES
from fedseg.model.compute import ComputeOverrides
from fedseg.model.config import NetworkConfig
from fedseg.plan import StrategyConfig
from fedseg.train.config import TrainConfig


def parse_poison(text: str) -> Poison:
    """``SITE:scale=50``, ``SITE:scale`` (50), ``SITE:scramble``, ``SITE:n_train=N`` (it
    reports N training cases) or ``SITE:dice=D`` (Dice D over 10,000 cases for model 0)."""
    site, _, rest = text.partition(":")
    kind, _, value = rest.partition("=")
    usage = (
        f"--poison {text!r}: write SITE:scale=FACTOR, SITE:scramble, SITE:n_train=N or SITE:dice=D"
    )
    if not site or kind not in ("scale", "scramble", "n_train", "dice"):
        raise FedsegError(usage)
    if (kind == "scramble") == bool(value) and kind != "scale":
        raise FedsegError(usage)
    try:
        if kind == "scramble":
            return Poison(site=site, kind="scramble")
        if kind == "n_train":
            return Poison(site=site, kind="n_train", n_train=int(value))
        if kind == "dice":
            return Poison(site=site, kind="dice", dice=float(value))
        return Poison(site=site, kind="scale", scale=float(value) if value else 50.0)
    except ValueError:
        raise FedsegError(f"--poison {text!r}: the value must be a number") from None


class PlanArg(BaseModel):
    """One plan to compare: a label and its strategy (local epochs or steps from the plan
    file)."""

    model_config = ConfigDict(extra="forbid")

    label: str
    strategy: StrategyConfig
    local_epochs: int = Field(1, ge=1)
    local_steps: int | None = Field(None, ge=1)


def parse_plan_arg(text: str) -> PlanArg:
    """A plan file (its strategy, local_epochs and local_steps are used) or ``NAME[:k=v,k=v]``, e.g.
    ``fedprox:mu=0.01`` or ``cyclic:order=shuffled,epochs_per_visit=2``."""
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        from fedseg.plan import load_plan

        plan = load_plan(path)
        if plan.task != "segmentation":
            raise FedsegError(f"{path}: compare needs segmentation plans (task: {plan.task})")
        return PlanArg(label=path.stem, strategy=plan.strategy, local_epochs=plan.local_epochs,
                       local_steps=plan.local_steps)  # fmt: skip
    name, _, rest = text.partition(":")
    if name not in STRATEGIES:
        raise FedsegError(
            f"plan {text!r}: not a plan file nor a strategy; strategies: "
            f"{', '.join(sorted(STRATEGIES))}"
        )
    params: dict[str, Any] = {}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        if not eq:
            raise FedsegError(f"plan {text!r}: parameters are k=v pairs separated by commas")
        params[key.strip()] = yaml.safe_load(value)
    label = re.sub(r"[^A-Za-z0-9_.=-]+", "_", text)
    return PlanArg(label=label, strategy=StrategyConfig(name=name, params=params))


class CompareConfig(BaseModel):
    """What ``compare`` runs (recorded as ``compare.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    plans: list[PlanArg]
    sites: dict[str, Path]
    holdout: dict[str, Path] = Field(default_factory=dict)
    budget: int = Field(4, ge=1, description="local epochs per site")
    seed: int = 0
    network: NetworkConfig = NetworkConfig(base_filters=8, depth=3)
    train: TrainConfig = TrainConfig.cpu()
    poison: Poison | None = None
    #: the plans' report bounds and norm bound (plan ``bounds``); off only to measure them
    bounds: bool = True
    baselines: bool = True
    #: with ``baselines``: the single-site models too (False: the centralized model only)
    single_sites: bool = True
    threads: int = Field(1, ge=1, description="torch CPU threads")
    compute: ComputeOverrides = Field(
        default_factory=ComputeOverrides,
        description="this machine's device and precision over train.compute (every run)",
    )
