"""The federation plan: one typed YAML file that says who trains what, how often and how.

A run records its plan as ``<run>/plan.yaml``; the run can be explained and repeated from
it. Sites are named in the plan; in a simulation each names its data folder, in a
deployment each site process announces its name (``--node-config site=NAME``) and the
aggregator matches it against the plan.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fedseg.config_files import first_error, read_yaml_mapping
from fedseg.data.cases import MODALITIES
from fedseg.errors import FedsegError
from fedseg.model.config import NetworkConfig
from fedseg.privacy.config import PrivacyConfig
from fedseg.run_folder import PLAN_FILE
from fedseg.synth.config import SynthesisConfig
from fedseg.train.config import TrainConfig, check_shapes

_SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


#: whose variance parts the labels_disagree away interval uses, between evaluators (tau^2)
#: and between local-model draws: the site's own (floored by the federation's median) or
#: the ones pooled over the other sites, what a site like them shows (``tracking.evidence``)
Between = Literal["site", "federation"]
#: what a synthesis run's alarms may watch (validated per modality, higher is better)
SYNTHESIS_ALARM_METRICS = ("ssim", "psnr")


class AlarmConfig(BaseModel):
    """Thresholds of the automatic alarms (plan key ``alarms``) and the notification hook.
    Gaps, drops and gains are in the watched metric's units (Dice, SSIM: 0-1; PSNR: dB).
    A synthesis run watches brain-masked SSIM by default (``for_task``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    metric: str = Field(
        "dice", description="validation metric watched (higher is better); with task "
        "synthesis dice reads as ssim (psnr also allowed)",
    )  # fmt: skip
    region: str = Field(
        "mean", description="ET, TC, WT or mean (of the three); synthesis: a modality or mean"
    )
    skip_initial: bool = Field(True, description="ignore model round 0 (the random init)")
    min_rounds: int = Field(5, ge=3, description="models validated before below_federation fires")
    alpha: float = Field(
        0.05, gt=0, lt=1, description="below_federation one-sided level (cases as units)"
    )
    min_gap: float = Field(0.05, ge=0, description="gap floor (effect size), metric units")
    evidence_window: int = Field(
        3, ge=1, description="local-model rounds of cross-site evidence each check pools"
    )
    evidence_first_model: int = Field(
        1, ge=1, description="the earliest local-model round that is evidence (the first "
        "local models start from a near-random global model and swing every site's effect)",
    )  # fmt: skip
    delta_away: float = Field(
        0.05, ge=0, description="labels_disagree: Dice the site's local models must lose on "
        "the other sites' cases beyond the federation's typical loss",
    )  # fmt: skip
    delta_home: float = Field(
        0.10, ge=0, description="labels_disagree: Dice its local model must gain on its own cases"
    )
    loss_ratio: float = Field(
        1.5, gt=1, description="labels_disagree: or its training loss over the others' median"
    )
    delta_inside: float = Field(
        0.05, ge=0, description="labels_disagree: or its local models lose this much more "
        "Dice in ET or TC than on the whole tumour (WT) on the other sites' cases",
    )  # fmt: skip
    labels_alpha: float = Field(
        0.05, gt=0, lt=1, description="labels_disagree test level (Bonferroni over ET/TC/WT)"
    )
    labels_min_models: int = Field(
        3, ge=1, description="local-model rounds of away evidence before labels_disagree is "
        "checked (fewer cannot estimate the model-draw variance)",
    )  # fmt: skip
    labels_persist: int = Field(1, ge=1, description="consecutive checks labels_disagree holds")
    labels_between: Between = Field(
        "site", description="labels_disagree: the between-evaluator and model-draw "
        "variances of a site's away interval: its own, floored by the federation's median, "
        "or pooled over the other sites (what a site like them shows) (Between)",
    )  # fmt: skip
    window: int | None = Field(None, ge=3, description="only the last N models (None: all)")
    stall_window: int = Field(8, ge=4, description="models in the trend window of `stalled`")
    stall_persist: int = Field(2, ge=1, description="consecutive rounds `stalled` must hold")
    stall_alpha: float = Field(0.01, gt=0, lt=1)
    stall_min_drop: float = Field(0.05, ge=0, description="gap fall over the window, Dice")
    stall_max_gain: float = Field(0.01, description="site's own gain over the window, Dice")
    update_outlier: bool | None = Field(
        None, description="flag a site whose update is far from the others' (null: on when "
        "the aggregator sees single updates; true is refused when it does not)",
    )  # fmt: skip
    outlier_z: float = Field(3.5, gt=0)
    outlier_rel_floor: float = Field(
        0.25, gt=0, description="scale floor, fraction of the median (clean sites differ ~1.5x)"
    )
    outlier_min_sites: int = Field(3, ge=3, description="sites needed in a round")
    notify_command: list[str] | None = Field(
        None,
        description="argv run once per new (site, kind) alarm (never for an observation); env "
        "FEDSEG_ALARM_{RUN,ROUND,SITE,KIND,MESSAGE,LEVEL} and FEDSEG_ALARM_EVIDENCE (JSON) "
        "describe it",
    )
    notify_timeout_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _evidence_fits_the_window(self) -> AlarmConfig:
        # a check pools at most evidence_window local-model rounds: more is never reached
        if self.labels_min_models > self.evidence_window:
            raise ValueError(
                f"labels_min_models {self.labels_min_models} is above evidence_window "
                f"{self.evidence_window}: a check pools at most evidence_window local-model "
                "rounds, so labels_disagree could never fire; raise evidence_window or lower "
                "labels_min_models"
            )
        return self

    def for_task(self, task: str) -> AlarmConfig:
        """The settings a run of ``task`` (plan ``task``) uses. Segmentation: these. A
        synthesis run validates ssim/psnr/mae per modality, so ``dice`` (the default, and
        what every recorded plan.yaml spells out) reads as ``ssim``; ``mae`` (lower is
        better) and a region that is no modality are refused, one line each."""
        if task != "synthesis":
            return self
        metric = "ssim" if self.metric == "dice" else self.metric
        if metric not in SYNTHESIS_ALARM_METRICS:
            raise FedsegError(
                f"alarms.metric {self.metric}: a synthesis run's alarms watch "
                f"{' or '.join(SYNTHESIS_ALARM_METRICS)} (higher is better); leave the key "
                "out for ssim"
            )
        if self.region not in (*MODALITIES, "mean"):
            raise FedsegError(
                f"alarms.region {self.region}: a synthesis run validates modalities; use "
                f"mean or one of {', '.join(MODALITIES)}"
            )
        return self if metric == self.metric else self.model_copy(update={"metric": metric})


class CrossSiteConfig(BaseModel):
    """Cross-site validation (plan key ``cross_site``): each round's local models travel, with
    the next round's task, to ``evaluators_per_model`` other sites, which validate them on
    their own cases beside the global model and send summaries back; each site also checks
    its own local model on its cases (no model moves for that). It is what separates a
    site whose labels disagree from one whose data is harder or from another scanner.
    With ``leave_one_out`` an evaluator also gets the round's model without the site;
    beside the global model it gives that site's share of the mean (its training cases
    over the round's). A site then sees other sites' single local models: ``enabled:
    null`` (the default) turns it on unless the plan's privacy hides single updates (secure
    aggregation, HE, site-level DP), ``true`` under such privacy is refused, ``false``
    turns it off."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    every: int = Field(1, ge=1, description="run the cross-site checks every k-th round")
    evaluators_per_model: int = Field(
        3, ge=1, description="sites that validate each local model (fewer if fewer exist)"
    )
    models_per_round: int | None = Field(
        None, ge=1, description="local models kept for validation per round, chosen "
        "round-robin (null: all); bounds disk, bytes and site time at many sites",
    )  # fmt: skip
    leave_one_out: bool = Field(
        False, description="under a mean plan (fedavg, fedprox, fastest-k, select-utility) "
        "each local model travels with the round's model without that site, so each "
        "site's contribution is measured (the one-round leave-one-out), not extrapolated "
        "from its local model; doubles the models sent and validated",
    )  # fmt: skip


class StragglerConfig(BaseModel):
    """The straggler cut-off (plan key ``straggler``; ``federation.rounds.straggler``): a
    round stops waiting once ``quorum`` (a share, 0-1] of its trainers delivered an update
    and ``grace_s`` seconds have passed since, or at ``round_timeout_s``. The sites still
    out are recorded ``timeout`` ("cut after quorum (n of m)") and are given nothing until
    their late reply has come. ``quorum: null`` (the default): no cut, a round waits for
    every site or ``round_timeout_s``."""

    model_config = ConfigDict(extra="forbid")

    quorum: float | None = Field(
        None, gt=0, le=1, description="share of a round's trainers whose updates end the "
        "wait (after grace_s); null: wait for all (or round_timeout_s)",
    )  # fmt: skip
    grace_s: float = Field(30.0, ge=0, description="seconds waited after the quorum")


class BoundsConfig(BaseModel):
    """What a site's reports may claim (plan key ``bounds``; ``federation.rounds.bounds``).

    A site declares its split's case counts when it joins; they are fixed for the run. A
    reply that claims more cases than declared, a negative count, or a validation summary
    outside its metric's range is ``rejected`` (the round goes on with the others); an
    update whose change of the global model is over ``reject_norm_ratio`` times the
    round's median change is rejected, one over ``update_norm_ratio`` times is clipped to
    that. ``enabled: false`` exists only to measure what the bounds prevent
    (``benchmarks/attacks.py``); a real federation keeps them on."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    max_cases: int = Field(
        100_000, ge=1, description="a site declaring more cases than this is not believed"
    )
    update_norm_ratio: float | None = Field(
        3.0, gt=0, description="clip updates to this x the round's median update norm "
        "(null: no clipping)",
    )  # fmt: skip
    reject_norm_ratio: float | None = Field(
        1000.0, gt=0, description="reject updates over this x the round's median update norm "
        "(null: never)",
    )  # fmt: skip


#: the dtype weights travel as (``federation.rounds.transfer``)
TransferDtype = Literal["float32", "float16"]


class TransferConfig(BaseModel):
    """How weights travel between the aggregator and the sites (plan key ``transfer``;
    ``federation.rounds.transfer``). ``weights: float16`` sends the global model and the
    sites' weights as float16 and casts them back to float32 on arrival: half the bytes of a
    round, at the cost of float16 rounding of what is sent (training and aggregation stay
    float32). Optimizer states always travel as float32."""

    model_config = ConfigDict(extra="forbid")

    weights: TransferDtype = "float32"


class RetentionConfig(BaseModel):
    """Which round models a run keeps on disk (plan key ``retention``;
    ``federation.rounds.retention``). After every round the aggregator deletes the model
    files ``models/round_XXXX.pt`` of the rounds outside this policy and keeps:

    - the best rounds: those ``fedseg select --singlet``/``--triplet`` pick now
      (``best.pt``'s source and the best per region; at most four models);
    - the last ``keep_last`` rounds (``fedseg resume`` continues from the last one);
    - every ``keep_every``-th round (0, k, 2k, ...; ``null``: every round, nothing deleted).

    ``best.pt`` and ``fedseg select`` choose among the rounds whose model is still on disk,
    so they stay the same model; in a federation's run that is what they would pick with
    every model kept. A deleted round's validation scores stay in the store, curves and
    report. The strategy's state (server-optimizer moments, ``round_XXXX.strategy.npz``)
    is only resume state: it is kept with the last ``keep_last`` rounds only.

    The default bounds a run's disk use: a FeTS-size model (30.2 M parameters) is 121 MB,
    so a 500-round run keeps at most 21 + 1 + 4 models, about 3.1 GB, instead of 60 GB, and
    still has a snapshot every 25 rounds (a 20-point curve) to compare or restart from."""

    model_config = ConfigDict(extra="forbid")

    keep_last: int = Field(
        1, ge=1, description="the last N round models (1 is all `fedseg resume` needs)"
    )
    keep_every: int | None = Field(
        25, ge=1, description="every k-th round model (null: keep every round, for research)"
    )


class SiteConfig(BaseModel):
    """One site. ``data``: its data folder (simulation; relative paths are relative to the
    plan file). In a deployment the site keeps its data path to itself and ``data`` is None."""

    model_config = ConfigDict(extra="forbid")

    data: Path | None = None


class InitialModel(BaseModel):
    """The model of round 0: random weights from ``seed`` (None: the plan's seed), or the
    weights of a fedseg model file (``path``), e.g. a public initial model."""

    model_config = ConfigDict(extra="forbid")

    path: Path | None = None
    seed: int | None = None


class StrategyConfig(BaseModel):
    """A strategy by registry name (``federation.rounds.strategies.registry.STRATEGIES``)
    and its parameters (checked by the strategy's own parameter model)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "fedavg"
    params: dict[str, Any] = Field(default_factory=dict)


class PlanConfig(BaseModel):
    """What a federation does. Times are seconds; ``rounds`` counts training rounds from 1."""

    model_config = ConfigDict(extra="forbid")

    name: str = "fedseg-federation"
    task: Literal["segmentation", "synthesis"] = Field(
        "segmentation",
        description="segmentation: train the segmentation network; synthesis: train the "
        "ModalityBank generator (key `synthesis`)",
    )
    sites: dict[str, SiteConfig]
    rounds: int = Field(10, ge=1, description="training rounds (with `train.plateau`: at most)")
    local_epochs: int = Field(1, ge=1, description="epochs each site trains per round")
    local_steps: int | None = Field(
        None, ge=1, description="optimizer steps each site trains per round (per visit on a "
        "sequential plan), whatever its size, instead of local_epochs epochs; null: epochs",
    )  # fmt: skip
    network: NetworkConfig = NetworkConfig()
    train: TrainConfig = TrainConfig()
    initial_model: InitialModel = InitialModel()
    min_sites: int = Field(1, ge=1, description="fewest answering sites for a round to count")
    round_timeout_s: float = Field(3600.0, gt=0, description="a site slower than this is skipped")
    straggler: StragglerConfig = StragglerConfig()
    connect_timeout_s: float = Field(300.0, gt=0, description="wait this long for all sites")
    seed: int = 0
    strategy: StrategyConfig = StrategyConfig()
    alarms: AlarmConfig = AlarmConfig()
    cross_site: CrossSiteConfig = CrossSiteConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    bounds: BoundsConfig = BoundsConfig()
    transfer: TransferConfig = TransferConfig()
    retention: RetentionConfig = RetentionConfig()
    synthesis: SynthesisConfig = SynthesisConfig()

    @field_validator("sites")
    @classmethod
    def _site_names(cls, v: dict[str, SiteConfig]) -> dict[str, SiteConfig]:
        if not v:
            raise ValueError("a plan needs at least one site")
        for name in v:
            if not _SITE_NAME.match(name):
                raise ValueError(
                    f"site name {name!r}: use letters, digits, '_', '-', '.' (64 at most)"
                )
        return v

    def model_post_init(self, __context: Any) -> None:
        try:
            check_shapes(self.network, self.train)
        except FedsegError as exc:
            raise ValueError(str(exc)) from None
        if self.min_sites > len(self.sites):
            raise ValueError(f"min_sites {self.min_sites} exceeds the {len(self.sites)} sites")
        try:
            self.alarms.for_task(self.task)
        except FedsegError as exc:
            raise ValueError(str(exc)) from None
        if self.local_steps is not None and self.task != "segmentation":
            raise ValueError("local_steps: a synthesis plan sets synthesis.steps_per_round")
        if self.local_steps is not None and self.privacy.dp.level == "case":
            raise ValueError(
                "local_steps: DP-SGD (privacy.dp.level: case) accounts whole epochs; "
                "use local_epochs"
            )

    @property
    def site_names(self) -> list[str]:
        return list(self.sites)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def load_plan(path: Path) -> PlanConfig:
    """Read and check a plan file; site data paths are made absolute against the file's
    folder. Every problem is one line naming the key."""
    path = Path(path)
    raw = read_yaml_mapping(path, "plan", "write one with `fedseg plan init`")
    try:
        plan = PlanConfig.model_validate(raw)
    except ValidationError as exc:
        raise FedsegError(f"{path}: {first_error(exc, 'plan')}") from None
    base = path.resolve().parent
    for site in plan.sites.values():
        if site.data is not None and not site.data.is_absolute():
            site.data = (base / site.data).resolve()
    if plan.initial_model.path is not None and not plan.initial_model.path.is_absolute():
        plan.initial_model.path = (base / plan.initial_model.path).resolve()
    return plan


def read_run_plan(run_dir: Path) -> PlanConfig | None:
    """The plan a run folder recorded (``<run>/plan.yaml``), checked; None when the folder
    has none (a centralized run folder holds ``recipe.yaml`` instead)."""
    path = Path(run_dir) / PLAN_FILE
    return load_plan(path) if path.is_file() else None


def plan_without(plan: PlanConfig, site: str) -> PlanConfig:
    """The same federation without ``site`` (leave-one-site-out): ``min_sites`` capped at
    the sites left, the name marked ``-without-SITE``."""
    if site not in plan.sites or len(plan.sites) < 2:
        raise FedsegError(
            f"plan {plan.name} has no site {site!r} to leave out, or only one site; name "
            f"one of {', '.join(plan.sites)}"
        )
    sites = {k: v for k, v in plan.sites.items() if k != site}
    return plan.model_copy(
        update={
            "sites": sites,
            "min_sites": min(plan.min_sites, len(sites)),
            "name": f"{plan.name}-without-{site}",
        }
    )


def save_plan(path: Path, plan: PlanConfig) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(plan.to_yaml())
    return path


def _site_lines(sites: list[Path] | None) -> str:
    """The ``sites:`` entries of an example plan: a name per data folder (three
    placeholders without folders)."""
    folders = sites or [Path(f"data/site{i}") for i in (1, 2, 3)]
    names: list[str] = []
    for f in folders:
        n = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(f).name) or "site"
        while n in names:
            n += "_"
        names.append(n)
    return "\n".join(f"  {n}:\n    data: {f}" for n, f in zip(names, folders, strict=True))


def example_plan(sites: list[Path] | None = None, task: str = "segmentation") -> str:
    """A commented example plan (YAML text) for ``sites`` (data folders) or three
    placeholders. Small CPU settings; the FeTS recipe values are in the comments.
    ``task: synthesis``: ``example_synthesis_plan``."""
    if task == "synthesis":
        return example_synthesis_plan(sites)
    site_lines = _site_lines(sites)
    return f"""\
# fedseg federation plan. Check it with `fedseg simulate PLAN --out RUN` on one machine.
name: fedseg-federation
# Sites: name -> data folder (simulation). In a deployment a site announces its name with
# `fedseg site start` and keeps its data path to itself; leave `data` out there.
sites:
{site_lines}
rounds: 3              # training rounds (FeTS study: dozens)
local_epochs: 1        # epochs each site trains per round (FeTS: 1)
local_steps: null      # or N: every site trains N optimizer steps per round, whatever its size
min_sites: 2           # a round counts when at least this many sites answered
round_timeout_s: 1800  # a site slower than this in a round is skipped for that round
straggler:             # stop waiting once `quorum` of a round's trainers sent their update
  quorum: null         # and `grace_s` passed (e.g. 0.8); null: wait for all (or the timeout)
  grace_s: 30          # a site cut is not drawn again until its late reply has come
connect_timeout_s: 300 # give up when a site has not connected after this long
seed: 0
initial_model:         # path: a fedseg model file (e.g. a public initial model)
  path: null           # null: random weights drawn from `seed` (or the plan's seed)
  seed: null
strategy:
  name: fedavg         # FedAvg: average of the site updates weighted by training cases
  params: {{}}         # many sites: sites_per_round: 10 (drawn per round), validators:
                       # all | trainers | every:K (who validates each round's model)
privacy:
  # A site sends a validation summary or training loss only when it covers at least this
  # many cases (else it says only that it validated). A deployed site never goes below its
  # own floor (`fedseg site start --min-summary-cases`, default 3); a plan can only raise it.
  min_summary_cases: 3
  # Secure aggregation: the aggregator learns only the sum of the sites' updates, never one
  # site's (pairwise masks; needs >= 3 sites training per round and a streaming strategy:
  # fedavg, fedprox, fedavgm, fedadam, fedyogi, fedadagrad). Costs key-exchange messages.
  secure_aggregation: false
  secagg:
    threshold: null    # fewest sites whose shares unmask a sum (null: ceil(2n/3), >= 2)
    clip_norm: 1.0     # each site clips its update's L2 norm to this before masking
    modulus_bits: 32   # 32 (same bytes as float32) or 64
  # Differential privacy: an honest epsilon for the whole run, from dp-accounting.
  #   level site: each site's update clipped to clip_norm, the equal-weight mean gets
  #     Gaussian noise (at the aggregator; at the sites, in shares, with secure aggregation
  #     or HE); protects a whole site's data from whoever gets the models. With 3-10 sites
  #     the noise swamps the model at epsilon <= 8: it needs many sites.
  #   level case: DP-SGD at each site (per-case gradients clipped and noised, Opacus);
  #     protects each patient; needs network.norm instance/group, patches_per_case 1.
  # A round (site) or a site's training (case) that would pass the budget is refused.
  dp:
    level: none        # none | site | case
    epsilon: 8.0       # total budget of the run (per site for level case)
    delta: 1.0e-05
    clip_norm: 1.0     # site: update L2 clip; case: per-sample gradient clip
    noise_multiplier: null  # noise std / clip_norm; null: the smallest within the budget
    accountant: rdp    # rdp | pld (tighter)
    sample_rate: null  # case: Poisson rate of a case per step (null: batch / cases)
    max_physical_batch: 1  # case: samples per forward pass (memory)
  # Homomorphic encryption (TenSEAL CKKS): sites encrypt their updates under a key the
  # aggregator does not hold. ~14x the bytes of float32 per encrypted value.
  he:
    scheme: none       # none | ckks
    layers: all        # all, or a list of weight-name globs; the others travel in clear
    poly_modulus_degree: 8192
    coeff_mod_bit_sizes: [60, 40, 60]
    scale_bits: 40
    key_holder: null   # the site that holds the key and decrypts the sum (null: first connected)
    max_bytes_per_site: 1073741824  # refuse a plan whose encrypted upload per round is larger
# What a site may report. Each site declares its split's case counts when it joins; a
# reply claiming more cases, a negative count or a metric out of range is rejected.
bounds:
  enabled: true        # false only to measure what the bounds prevent
  max_cases: 100000    # a site declaring more cases than this is not believed
  # With secure aggregation, HE or site-level DP the two ratios below are not applied (the
  # aggregator sees no single norm, or must not use one): the clip_norm takes their place.
  update_norm_ratio: 3.0  # clip each update to 3x the round's median change (null: off)
  reject_norm_ratio: 1000.0  # reject an update over 1000x the median change (null: off)
# Cross-site validation: each round's local models also travel, with the next round's task,
# to a few other sites, which validate them on their own cases and send summaries back;
# each site also checks its own local model on its cases. This is what tells a site whose
# labels disagree from one with harder data or another scanner (alarms below). A site then
# sees other sites' single local models: null turns it on unless the privacy hides single
# updates (secure aggregation, HE, site-level DP); true there is refused; false: off.
# Cost: each evaluator validates a model per model it gets (demo: ~2x the round time).
cross_site:
  enabled: null
  every: 1             # every k-th round
  evaluators_per_model: 3
  models_per_round: null  # cap the local models checked per round (round-robin; 71 sites)
# Automatic alarms (`fedseg alarms`, status, report, dashboard). labels_disagree: a site's
# local models lose Dice on the other sites' cases beyond the federation's typical loss
# and lose it inside the tumour (ET or TC) more than on the whole tumour, or gain on its
# own cases, or train to a high loss (calibrated: benchmarks/monitoring.py).
# Without that evidence, a lower own score, a stall or an outlying update is shown as an
# observation and notifies nobody.
alarms:
  enabled: true
  delta_away: 0.05     # Dice lost on the other sites' cases beyond the typical loss
  delta_inside: 0.05   # Dice lost in ET or TC beyond the loss on the whole tumour (WT)
  delta_home: 0.1      # or Dice its own model gains on its own cases beyond the others'
  loss_ratio: 1.5      # or its training loss over the others' median
  labels_alpha: 0.05   # test level (Bonferroni over ET/TC/WT)
  labels_min_models: 3 # local-model rounds of evidence before the first check
  evidence_window: 3   # local-model rounds each check pools (cases are the unit, not rounds)
  # local models of earlier rounds are no evidence (those of round 1 start from a
  # near-random model)
  evidence_first_model: 1
  # the away test's between-evaluator and model-draw variances: the site's own, or
  # pooled over the other sites (federation: what a site like them shows)
  labels_between: site
  notify_command: null # argv run once per new (site, kind) alarm; env FEDSEG_ALARM_*
# Which round models stay on disk (models/round_XXXX.pt; 121 MB each at FeTS size). After
# every round the others are deleted, except the rounds `fedseg select` picks (best.pt).
retention:
  keep_last: 1         # the last N rounds (1 is all `fedseg resume` needs)
  keep_every: 25       # and every 25th round (500 FeTS rounds: ~3 GB); null: keep all
# The one-site unit. FeTS recipe: base_filters 30, depth 4, patch 128^3, lr 5e-5.
network:
  base_filters: 8
  depth: 3
train:
  lr: 0.001
  # The lr over the rounds, the same at every site: constant | cosine | step, e.g.
  # {{kind: cosine, warmup_rounds: 1}} or {{kind: step, step_every: 10, step_factor: 0.5}}.
  lr_schedule: constant
  # Stop before `rounds` once the round score (mean validation Dice) has gained no more
  # than min_delta in this many validated rounds (null: train every round).
  plateau: {{rounds: null, min_delta: 0.001}}
  patch_size: [32, 32, 32]
  sampler: tumor
  num_workers: 0
  val_roi: [32, 32, 32]
  val_overlap: 0.25
  val_batch_size: 2
"""


def example_synthesis_plan(sites: list[Path] | None = None) -> str:
    """A commented example plan of a synthesis run (ModalityBank: one generator whose
    per-modality banks are trained at the sites) with every ``synthesis`` key at its
    default, the CPU recipe; the full-size values are in the comments."""
    site_lines = _site_lines(sites)
    return f"""\
# fedseg federation plan: ModalityBank synthesis. Check it with `fedseg simulate PLAN --out RUN`.
# One generator (label map -> image per modality) whose convolution kernels are shared and
# whose style per modality is a small bank of modulation parameters. Only parameters leave
# a site; images, label maps and the sites' discriminators never do. A site that lacks a
# modality declares it in its <data>/fedseg_site.yaml (absent_modalities: [flair]); that
# modality's bank is averaged over the sites that have it.
name: fedseg-synthesis
task: synthesis
sites:
{site_lines}
rounds: 4              # bank rounds; the pre-training rounds (synthesis.pretrain) come first
min_sites: 2           # a round counts when at least this many sites answered
round_timeout_s: 1800  # a site slower than this in a round is skipped for that round
connect_timeout_s: 300 # give up when a site has not connected after this long
seed: 0
strategy:
  name: modality-fedavg  # the only strategy of a synthesis run: each modality's bank is
  params: {{}}           # averaged over the sites that have the modality
privacy:
  min_summary_cases: 3 # a site sends a validation summary only over at least this many cases
alarms:
  metric: ssim         # ssim or psnr: validated per modality (brain-masked SSIM)
  min_gap: 0.05        # median SSIM gap floor of below_federation (the metric's units)
synthesis:
  mode: federated      # central (the paper's central generator) would send label maps
                       # off the sites: refused, not implemented
  generator:
    spatial_dims: 2    # 2: axial slices; 3: volumes/patches (full size: 3 on a GPU)
    base_filters: 16   # full size: 32 or more
    depth: 3           # resolution levels of the U-Net
    modalities: [t1, t1ce, t2, flair]
    condition: label   # the input: brain mask + NCR/ED/ET one-hot (the paper's label map)
  discriminator:       # one per site and modality it has; never leaves the site
    layers: 2
    channels: 16
    norm: instance     # instance | batch
  loss:                # per modality: l1 * L1 + ssim * (1 - SSIM) + adversarial * GAN
    l1: 1.0
    ssim: 1.0
    adversarial: 0.05
    criterion: least_squares  # least_squares | hinge | bce
  optimizer:
    lr_generator: 0.002
    lr_discriminator: 0.0002
    betas: [0.5, 0.999]
  data:
    slice_size: [64, 64]        # 2D slices at 4 mm (BraTS 1 mm: [256, 256])
    patch_size: [64, 64, 40]    # 3D (spatial_dims: 3)
    min_brain_fraction: 0.15    # slices with less brain are not drawn
    batch_size: 8
    intensity_percentile: 99.5  # each modality scaled per case to [0, 1] by this brain percentile
  pretrain:            # rounds 1..N train the shared kernel on one modality, then it is frozen
    rounds: 2          # 0: no pre-training (random frozen kernel) unless initial_generator
    modality: auto     # auto: the modality most sites have, ties -> t1
    steps_per_round: 40
  steps_per_round: 20  # bank rounds: optimizer steps per site and round
  initial_generator: null  # a generator file: its kernel is frozen and pre-training skipped
  samples:             # phantom label maps (nobody's) the report renders the generator on
    label_seed: 1234
    n: 4
  seed: 0
"""
