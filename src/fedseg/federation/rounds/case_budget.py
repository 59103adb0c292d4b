"""A site's DP-SGD budget (plan ``privacy.dp.level: case``): its ledger and its refusal.

The ledger, ``<workspace>/privacy.json``, is the authority for the site's budget in one
run: it fixes, at the site's first training task, the noise multiplier ``sigma`` (the
plan's ``noise_multiplier``, or the smallest that keeps the planned rounds, ``planned
rounds x local epochs x steps per epoch``, within ``epsilon``), the Poisson rate of a case
per step (the plan's ``sample_rate``, or ``batch_size / training cases``), the clip, δ,
the accountant and the budget. Tasks that ask for other settings later in the run are
refused (a plan cannot loosen a budget mid-run). Before each training task the site
computes ε after this round's steps (``privacy.accounting.epsilon`` over every step it
has trained in this run); over the budget the task fails with category ``privacy`` and
one line. After training the ledger adds the steps: every training whose update may
have left the site counts, a redone round's too. ε in the ledger and in the reply's
``PrivacySpent`` is the site's total for the run after the round, not the round's share.
Validation-only tasks never touch the budget (validation cases are not trained on).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from fedseg.federation.rounds.disclosure import ErrorCategory, SiteError
from fedseg.federation.rounds.tasks import TaskRequest
from fedseg.model.config import NetworkConfig
from fedseg.privacy.accounting import epsilon, noise_for_budget
from fedseg.privacy.config import Accountant
from fedseg.run_folder import PrivacySpent
from fedseg.train.config import TrainConfig
from fedseg.train.dp import BATCH_NORM_REFUSED, CaseDp, steps_per_epoch

#: the site's privacy ledger, in its workspace
LEDGER_FILE = "privacy.json"


class LedgerRound(BaseModel):
    """One training task's entry: its round, and the run's steps and ε after it."""

    model_config = ConfigDict(extra="forbid")

    round: int
    steps: int
    epsilon: float


class CaseLedger(BaseModel):
    """What the site has spent in one run and the settings fixed at its first training."""

    model_config = ConfigDict(extra="forbid")

    level: str = "case"
    sigma: float = Field(gt=0)
    sample_rate: float = Field(gt=0, le=1)
    clip_norm: float = Field(gt=0)
    delta: float = Field(gt=0, lt=1)
    accountant: Accountant
    budget: float = Field(gt=0, description="the plan's epsilon: the run's total")
    steps: int = Field(0, ge=0, description="DP-SGD steps trained so far in the run")
    epsilon: float = Field(0.0, ge=0, description="ε after those steps, at delta")
    rounds: list[LedgerRound] = Field(default_factory=list)

    def spent(self) -> PrivacySpent:
        return PrivacySpent(
            level="case", epsilon=self.epsilon, delta=self.delta, sigma=self.sigma,
            clip_norm=self.clip_norm, steps=self.steps, sample_rate=self.sample_rate,
            accountant=self.accountant,
        )  # fmt: skip

    def case_dp(self, max_physical_batch: int) -> CaseDp:
        return CaseDp(self.sigma, self.clip_norm, self.sample_rate, max_physical_batch)


def uses_case_dp(req: TaskRequest) -> bool:
    return req.privacy.dp.level == "case"


def read_ledger(ws: Path) -> CaseLedger | None:
    path = Path(ws) / LEDGER_FILE
    return CaseLedger.model_validate_json(path.read_text()) if path.is_file() else None


def write_ledger(ws: Path, ledger: CaseLedger) -> None:
    path = Path(ws) / LEDGER_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(ledger.model_dump(mode="json"), indent=1) + "\n")
    tmp.replace(path)


def _refuse(line: str) -> SiteError:
    return SiteError(ErrorCategory.PRIVACY, line, line)


def check_recipe(network: NetworkConfig, train: TrainConfig) -> None:
    """Refuse, in one line, a recipe DP-SGD cannot train privately."""
    if network.norm == "batch":
        raise _refuse(BATCH_NORM_REFUSED)
    if train.patches_per_case != 1:
        raise _refuse("DP-SGD takes one patch per drawn case (a case is one record): set "
                      "train.patches_per_case 1 with privacy.dp.level case")  # fmt: skip


def _first_ledger(req: TaskRequest, train: TrainConfig, n_train: int) -> CaseLedger:
    dp = req.privacy.dp
    q = dp.sample_rate if dp.sample_rate is not None else min(1.0, train.batch_size / n_train)
    sigma = dp.noise_multiplier
    if sigma is None:
        if req.planned_rounds <= 0:
            raise _refuse("privacy.dp.noise_multiplier is null and the task does not say how "
                          "many rounds the run plans; set the multiplier in the plan")  # fmt: skip
        planned = req.planned_rounds * req.epochs * steps_per_epoch(q)
        try:
            sigma = noise_for_budget(dp.epsilon, dp.delta, planned, q, dp.accountant)
        except ValueError:
            raise _refuse(f"privacy budget: no noise multiplier keeps {planned} DP-SGD steps "
                          f"within ε={dp.epsilon:g}; raise epsilon or train fewer "
                          "steps") from None  # fmt: skip
    return CaseLedger(sigma=sigma, sample_rate=q, clip_norm=dp.clip_norm, delta=dp.delta,
                      accountant=dp.accountant, budget=dp.epsilon)  # fmt: skip


def _same_settings(ledger: CaseLedger, req: TaskRequest) -> bool:
    dp = req.privacy.dp
    return (
        (dp.noise_multiplier is None or dp.noise_multiplier == ledger.sigma)
        and (dp.sample_rate is None or dp.sample_rate == ledger.sample_rate)
        and (dp.clip_norm, dp.delta, dp.accountant, dp.epsilon)
        == (ledger.clip_norm, ledger.delta, ledger.accountant, ledger.budget)
    )


def plan_round(ws: Path, req: TaskRequest, train: TrainConfig, n_train: int) -> CaseLedger:
    """The ledger as it will be after this task's training (not written yet: ``write_ledger``
    once the training is done), or a ``SiteError`` (category ``privacy``, one line) when the
    training would take the site past its budget."""
    ledger = read_ledger(ws)
    if ledger is None:
        ledger = _first_ledger(req, train, n_train)
    elif not _same_settings(ledger, req):
        raise _refuse("privacy: the task's privacy.dp settings differ from those this site's "
                      "budget was fixed with in this run; a run keeps its plan")  # fmt: skip
    steps = ledger.steps + req.epochs * steps_per_epoch(ledger.sample_rate)
    eps = epsilon(ledger.sigma, steps, ledger.sample_rate, ledger.delta, ledger.accountant)
    if eps > ledger.budget:
        raise _refuse(f"privacy budget: this round would take ε to {_up(eps):g} > "
                      f"{ledger.budget:g} at δ={ledger.delta:g}; this site trains no more "
                      "in this run")  # fmt: skip
    return ledger.model_copy(update={
        "steps": steps, "epsilon": eps,
        "rounds": [*ledger.rounds, LedgerRound(round=req.round, steps=steps, epsilon=eps)],
    })  # fmt: skip


def _up(eps: float) -> float:
    """``eps`` rounded up to two decimals: an ε just over the budget never reads as equal."""
    return math.ceil(eps * 100) / 100
