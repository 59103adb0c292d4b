"""What every strategy is: which sites do what each round, and how their results combine.

A strategy is a small class generic in its typed parameters: ``class Median(
ParallelStrategy[ParallelParams])`` declares once which pydantic model checks the plan's
``strategy.params`` (``params_model``, read from that type argument) and ``self.params`` is
of that type. It sees only plain values (site names, numpy weights, case counts): no
engine, no store. The round loop (``coordinator``) asks it for each round's tasks, sends
them, checks the updates, and hands it the good ones (``aggregate``).

Every strategy takes ``optimizer_state`` (``optimizer_state`` module) and treats it here,
once: training tasks carry the mode (and, for ``average``, the last average), and
``aggregate`` averages the states the sites sent back.

State that must survive a restart goes through ``state_dict``/``load_state_dict`` and is
saved with every round's model; each part of it sits under its own namespace
(``model.weights.nest``): ``optimizer/`` for the averaged optimizer state, ``m/``, ``v/``
for server moments.

Memory: a strategy whose new model depends on the round's updates only through their
weighted mean (and its ``combine`` reads them only through ``aggregation.weighted_average``)
declares ``streams = True``: the coordinator then parks each update on disk as it arrives
(``rounds.spool``) and the aggregation reads it back array by array, so the aggregator holds
about one model whatever the number of sites. The others get every update in memory at
once: their memory is n_sites x the model's size.

The strategies are listed by name in ``strategies.registry``; this module imports none.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, get_args, get_origin

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fedseg.federation.rounds.optimizer_state import DEFAULT_MODE, OptimizerMode, average_states
from fedseg.model.weights import Weights, nest, unnest

if TYPE_CHECKING:
    from fedseg.train.local import OptimizerState

#: namespace of the averaged optimizer state in ``state_dict``
OPTIMIZER = "optimizer"


class StrategyParams(BaseModel):
    """Parameters every strategy takes."""

    model_config = ConfigDict(extra="forbid")

    optimizer_state: OptimizerMode = Field(
        DEFAULT_MODE, description="reset, keep-local or average (see optimizer_state)"
    )


P = TypeVar("P", bound=StrategyParams)


@dataclass(frozen=True)
class SiteTask:
    """What one site does in a round, in this order: validate the global model it receives
    (``validate``), then train ``epochs`` epochs on it (``train``; 0 epochs: no training;
    ``steps`` > 0: that many optimizer steps instead of whole epochs) with the plan's
    optimizer treatment and proximal term."""

    validate: bool = True
    epochs: int = 1
    optimizer_mode: OptimizerMode = DEFAULT_MODE
    #: FedProx's proximal term strength (0: none)
    proximal_mu: float = 0.0
    #: optimizer state to start from (``optimizer_mode`` average)
    optimizer_state: OptimizerState | None = None
    #: optimizer steps instead of ``epochs`` whole epochs (0: epochs; plan ``local_steps``)
    steps: int = 0

    @property
    def train(self) -> bool:
        return self.epochs > 0


@dataclass(frozen=True)
class SiteUpdate:
    """A site's checked training result: its weights and the cases it trained on. A
    streaming strategy's updates are read from disk as they are used (``rounds.spool``):
    weights and optimizer state are then read-only mappings of arrays, not dicts."""

    site: str
    weights: Mapping[str, np.ndarray]
    n_train: int
    train_loss: float
    optimizer_state: Mapping[str, np.ndarray] | None = None


def case_weights(updates: Sequence[SiteUpdate]) -> list[float]:
    """Training cases per update (all 1 when every site reported 0)."""
    w = [float(u.n_train) for u in updates]
    return w if sum(w) > 0 else [1.0] * len(updates)


class Strategy(Generic[P]):
    """Base class. A subclass writes ``configure_round`` (who does what) and ``combine``
    (the next global model); the optimizer-state treatment and its checkpoint are here."""

    #: the model of ``strategy.params``; set from the class's type argument
    params_model: ClassVar[type[StrategyParams]] = StrategyParams
    #: sequential plans: a site that fails leaves the model as it was, the loop goes on
    skip_failed_sites: ClassVar[bool] = False
    #: the updates can be folded one by one (read from disk as ``combine`` uses them): the
    #: new model depends on them only through ``weighted_average`` (see the module doc)
    streams: ClassVar[bool] = False
    #: the plan ``task`` values the strategy trains (``modality-fedavg``: synthesis only)
    tasks: ClassVar[tuple[str, ...]] = ("segmentation",)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in cls.__dict__.get("__orig_bases__", ()):
            origin = get_origin(base)
            if isinstance(origin, type) and issubclass(origin, Strategy):
                arg = get_args(base)[0]
                if isinstance(arg, type) and issubclass(arg, StrategyParams):
                    cls.params_model = arg

    def __init__(self, params: P, local_epochs: int) -> None:
        self.params = params
        self.local_epochs = local_epochs
        #: plan ``local_steps``: every training task takes this many optimizer steps
        #: instead of its epochs (None: whole epochs; ``make_strategy`` sets it)
        self.local_steps: int | None = None
        #: the last average of the sites' optimizer states (``optimizer_state: average``)
        self.optimizer_average: OptimizerState | None = None

    # -- rounds ---------------------------------------------------------------------------
    def planned_rounds(self, plan_rounds: int, n_sites: int) -> int:
        """How many rounds the federation runs (sequential plans: one round per visit)."""
        return plan_rounds

    def configure_round(
        self, rnd: int, sites: Sequence[str], busy: Collection[str] = ()
    ) -> dict[str, SiteTask]:
        """Tasks of round ``rnd`` (from 1) for the connected ``sites``; a site without a
        task is not asked this round. ``busy``: sites still working on an earlier task
        (cut after quorum), to be given none where the strategy can do without them."""
        raise NotImplementedError

    def set_site_cases(self, cases: Mapping[str, tuple[int, int]]) -> None:
        """The (training, validation) cases each site declared when it joined, given before
        each round's ``configure_round`` (a strategy that chooses by site size or speed
        keeps them; the others ignore them)."""

    def proximal_mu(self) -> float:
        """The proximal term strength the training tasks carry (FedProx; 0: none)."""
        return 0.0

    def training_task(self, epochs: int) -> SiteTask:
        """Validate, then train ``epochs`` epochs (or the plan's ``local_steps`` steps) with
        the plan's optimizer treatment."""
        mode = self.params.optimizer_state
        return SiteTask(
            validate=True, epochs=epochs, optimizer_mode=mode, proximal_mu=self.proximal_mu(),
            optimizer_state=self.optimizer_average if mode == "average" else None,
            steps=self.local_steps or 0,
        )  # fmt: skip

    def combine(self, rnd: int, global_weights: Weights, updates: Sequence[SiteUpdate]) -> Weights:
        """The next global model from the round's checked updates (at least one)."""
        raise NotImplementedError

    def mean_weights(self, updates: Sequence[SiteUpdate]) -> list[float] | None:
        """The weights with which ``combine``'s model *is* the weighted mean of ``updates``
        (FedAvg and the plans that aggregate as it does), so the model of the round without
        one site follows from it (``aggregation.without_one``); None for any other rule (a
        server step, a robust statistic)."""
        return None

    def aggregate(
        self, rnd: int, global_weights: Weights, updates: Sequence[SiteUpdate]
    ) -> Weights:
        """``combine``, and (``optimizer_state: average``) the case-weighted mean of the
        optimizer states sent (kept as it was when none of them has stepped)."""
        new = self.combine(rnd, global_weights, updates)
        if self.params.optimizer_state == "average":
            sent = [u for u in updates if u.optimizer_state]
            avg = average_states(
                [u.optimizer_state or {} for u in sent], case_weights(sent)
            ) if sent else None  # fmt: skip
            if avg is not None:
                self.optimizer_average = avg
        return new

    # -- checkpointed state ---------------------------------------------------------------
    def state_dict(self) -> Weights:
        """Arrays to checkpoint with the global model, each part under its namespace
        (empty when there is nothing to keep). Subclasses add theirs to ``super()``'s."""
        return nest(OPTIMIZER, self.optimizer_average)

    def load_state_dict(self, state: Weights) -> None:
        """Restore what ``state_dict`` returned (on resume)."""
        self.optimizer_average = unnest(OPTIMIZER, state) or None
