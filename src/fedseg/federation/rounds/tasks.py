"""What a site is asked to do in a round and what it answers, as plain values.

``TaskRequest``/``TaskReply`` are what the round loop (``coordinator``) and a site's side
(``site``) exchange; the engine (``engine.messages``) encodes them for Flower. A reply
holds weights and summaries only (means, standard deviations, counts): never images,
labels or per-case values, and no summary over fewer than ``min_summary_cases`` cases
(``disclosure``). When a site joins, its hello declares its split's case counts
(``declared_cases``), and the modalities it has (``data.site_config``), which bound what
its replies may claim (``bounds``) and which banks of a generator it may train.

Cross-site validation (plan ``cross_site``): a request may carry other sites' local models
of the previous round (``cross``, named ``run_folder.cross_label``); the site validates each
on its validation cases paired with the global model it validates anyway, and answers with
summaries only (``TaskReply.cross``). After training, a site also validates its own fresh
local model against the model it started from on its own cases (``TaskReply.home``): no
model leaves the site for that.

With ``task: synthesis`` the recipe also holds the plan's ``synthesis`` section
(``recipe_synthesis``) and each training request says what to train (``SynthStep``: the
phase, the pre-training's modality, the steps).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from fedseg.errors import FedsegError
from fedseg.federation.rounds.optimizer_state import DEFAULT_MODE, OptimizerMode
from fedseg.federation.rounds.transfer import DEFAULT_TRANSFER, TransferDtype
from fedseg.model.config import NetworkConfig
from fedseg.model.summary import MIN_SUMMARY_CASES, Summary
from fedseg.privacy.config import PrivacyConfig
from fedseg.run_folder import ComputeUsed, DeclaredCases, PrivacySpent
from fedseg.synth.config import SynthesisConfig
from fedseg.train.config import TrainConfig

if TYPE_CHECKING:  # torch-free at run time: a site's hello must start fast
    from fedseg.model.weights import Weights
    from fedseg.train.local import OptimizerState


#: A privacy mechanism's own message content (secure-aggregation keys and shares, masked or
#: encrypted updates): named values, each bytes, text, a number or a numpy array
#: (``engine.messages`` sends arrays as Flower arrays, the rest as a config record).
PayloadValue = bytes | str | int | float | bool | np.ndarray
Payload = dict[str, PayloadValue]


@dataclass(frozen=True)
class SynthStep:
    """What a site trains of the generator in one round (``synth.train.train_bank``):
    ``phase`` pretrain (the kernel and ``modality``'s bank) or bank (the banks of the
    site's modalities), for ``steps`` optimizer steps."""

    phase: Literal["pretrain", "bank"]
    modality: str | None
    steps: int

    def to_json(self) -> str:
        return json.dumps({"phase": self.phase, "modality": self.modality, "steps": self.steps})

    @classmethod
    def from_json(cls, text: str) -> SynthStep:
        raw = json.loads(text)
        phase = raw["phase"]
        if phase not in ("pretrain", "bank"):
            raise ValueError(f"synthesis phase {phase!r} is unknown")
        modality = raw.get("modality")
        return cls(phase, None if modality is None else str(modality), int(raw["steps"]))


@dataclass
class TaskRequest:
    """One site's work in one round: validate ``weights`` (global model ``model_round``)
    and/or train it for ``epochs`` epochs (``steps`` > 0: that many optimizer steps
    instead, plan ``local_steps``). ``recipe`` is the plan's network and train
    configs as JSON (the site has no plan file in a deployment)."""

    round: int
    model_round: int
    validate: bool
    epochs: int
    seed: int
    run_id: str
    recipe: str
    weights: Weights
    #: what the site does with its optimizer state (``optimizer_state`` module)
    optimizer_mode: OptimizerMode = DEFAULT_MODE
    #: FedProx's proximal term strength (0: none)
    proximal_mu: float = 0.0
    #: the optimizer state to start from (``optimizer_mode`` average)
    optimizer_state: OptimizerState | None = None
    #: the plan's ``privacy.min_summary_cases`` (the site applies at least its own floor)
    min_summary_cases: int = MIN_SUMMARY_CASES
    #: the dtype weights travel as, both ways (plan ``transfer.weights``; ``transfer``)
    transfer: TransferDtype = DEFAULT_TRANSFER
    #: the plan's ``privacy`` section: how the site protects its update
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    #: this site's part of the round's hiding protocol (secure aggregation, HE), if any
    secure: Payload | None = None
    #: the rounds the run plans (0: not said); a site derives its lr from them and ``round``
    #: (``train.lr_schedule``), and its DP-SGD noise when the plan leaves
    #: ``privacy.dp.noise_multiplier`` null (``case_budget``)
    planned_rounds: int = 0
    #: what to train of the generator (``task: synthesis`` training requests; else None)
    synth_step: SynthStep | None = None
    #: other sites' local models to validate beside ``weights`` (``cross_label`` -> weights;
    #: at the aggregator read from its parked file array by array: ``ArraysOnDisk``)
    cross: dict[str, Mapping[str, np.ndarray]] = field(default_factory=dict)
    #: validate the site's own local model after training (home check; plan ``cross_site``)
    home: bool = False
    #: train this many optimizer steps instead of ``epochs`` whole epochs (0: epochs;
    #: plan ``local_steps``); training still needs ``epochs`` > 0
    steps: int = 0


@dataclass
class TaskReply:
    """What a site sends back. ``weights`` is None when it did not train. ``validation`` is
    ``summaries[region][metric]`` of the received model on the site's validation cases,
    only those over enough cases: ``validated`` with no ``validation`` means the site
    validated but had too few cases to say how it went. ``train_loss`` is None likewise."""

    site: str
    weights: Weights | None = None
    n_train: int = 0
    n_val: int = 0
    train_loss: float | None = None
    train_wall_s: float = 0.0
    val_wall_s: float = 0.0
    #: the learning rate the site trained with this round (``train.lr_schedule``; None: it
    #: did not train)
    lr: float | None = None
    #: seconds from the start of the site's app process to the start of the work
    startup_s: float = 0.0
    #: the process that did the work (its pid at the site; None: not said): tasks with the
    #: same worker ran one after the other, which bounds a round from below (the critical
    #: path of ``benchmarks/federation.py``)
    worker: int | None = None
    validation: dict[str, dict[str, Summary]] = field(default_factory=dict)
    validated: bool = False
    #: the site's optimizer state after training, sent only when the plan averages it
    optimizer_state: OptimizerState | None = None
    #: the device and precision the site validated and trained with (None: not said)
    compute: ComputeUsed | None = None
    #: the update as the plan's hiding protocol lets it travel (masked or encrypted); then
    #: ``weights`` is None
    hidden: Payload | None = None
    #: the ε this site has spent in this run after this round (DP ``level: case``)
    privacy_spent: PrivacySpent | None = None
    #: per ``cross_label``: ``summaries[region][metric]`` with metrics ``dice`` (the local
    #: model) and ``dice_diff`` (local - global, paired per case) on the site's cases
    cross: dict[str, dict[str, dict[str, Summary]]] = field(default_factory=dict)
    #: the same two metrics for the site's own fresh local model against the model it
    #: started from, on its own validation cases (empty: not asked, or too few cases)
    home: dict[str, dict[str, Summary]] = field(default_factory=dict)


def recipe_json(
    network: NetworkConfig, train: TrainConfig, synthesis: SynthesisConfig | None = None
) -> str:
    """The plan's network and train configs (and, for ``task: synthesis``, its synthesis
    section) as one JSON string."""
    raw = {"network": network.model_dump(mode="json"), "train": train.model_dump(mode="json")}
    if synthesis is not None:
        raw["synthesis"] = synthesis.model_dump(mode="json")
    return json.dumps(raw)


def recipe_synthesis(text: str) -> SynthesisConfig | None:
    """The synthesis recipe of a ``task: synthesis`` request; None for segmentation."""
    raw = json.loads(text).get("synthesis")
    return None if raw is None else SynthesisConfig.model_validate(raw)


def recipe_from_json(text: str) -> tuple[NetworkConfig, TrainConfig]:
    raw = json.loads(text)
    return NetworkConfig.model_validate(raw["network"]), TrainConfig.model_validate(raw["train"])


def declared_cases(data: Path) -> DeclaredCases | None:
    """The case counts of a site's split (``data.splits``, created on first use) and the
    modalities it has (``data.site_config``: all but its ``absent_modalities``), which the
    site declares when it joins a run; None when its data folder does not read (its first
    task then fails with the reason)."""
    from fedseg.data.site_config import read_site_config
    from fedseg.data.splits import load_split  # torch-free: the hello must start fast

    try:
        split = load_split(Path(data))
        present = read_site_config(Path(data)).present
    except (FedsegError, OSError, ValueError):
        return None
    return DeclaredCases(n_train=len(split.train), n_val=len(split.val), modalities=present)
