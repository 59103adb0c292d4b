"""The run folder's contract: its file names, status values and meta keys, in one place.

A run folder is read by the aggregator, ``status``, ``report``, ``select``, ``alarms``,
``resume`` and the dashboard, possibly while another process writes it, so every name
they share is defined here and nowhere else (this module imports nothing of fedseg but
its errors and ``output_paths``). A federation's run folder holds::

    plan.yaml                 PLAN_FILE: the plan (site data paths absolute)
    run.sqlite                STORE_FILE: the run store (tracking.store.RunStore)
    models/round_XXXX.pt      model_path(run, r): the global model after round r (0: initial);
                              only the rounds the plan's ``retention`` keeps stay
    models/round_XXXX.strategy.npz   strategy_state_path(model): the strategy's state then
    best.pt                   BEST_MODEL: copy of the best-scoring round model
    logs/, flwr-home/         LOGS_DIR, FLWR_HOME: engine logs and Flower's home
    flwr-home/sim_nodes.json  SIM_NODES_FILE: simulation engine only, the simulated sites'
                              node settings by partition id (``client_app.node_settings``)
    flwr-app/                 APP_DIR: the Flower app bundle
    enrolled-nodes.json       ENROLLED_NODES_FILE: deployment only, site -> node id and key
    report.html               REPORT_FILE: ``fedseg report``'s default output
    loso/                     LOSO_DIR: ``fedseg contributions --loso``'s runs
    run.lock                  LOCK_FILE: held (flock) by the run's live writer; see below
    spool/round_XXXX/         spool_dir(run, r): round r's site updates parked on disk while
                              they are aggregated (``rounds.spool``); gone when the round ends
    crossval/round_XXXX/      crossval_dir(run, r): the local models of round r kept for the
                              next round's cross-site validation; gone once it is done

A centralized run folder (``fedseg train``) holds ``recipe.yaml`` (RECIPE_FILE) instead of
a plan, ``run.sqlite``, ``checkpoints/last.ckpt`` (CHECKPOINT), ``last.pt`` and ``best.pt``.

The run lock: the process that runs a federation (``simulate``, ``resume``, ``server
start``) holds an exclusive ``flock`` on ``run.lock`` for the whole run (:class:`RunLock`);
the kernel drops it when that process dies, however it dies, so a run whose meta status
says running while nobody holds the lock has crashed (:func:`probe_lock`). The file holds
the holder's pid, host and command (:class:`LockHolder`); its mtime is the heartbeat, touched
every ``HEARTBEAT_S`` by a thread of the holder, so a holder that stopped beating for
``STALE_S`` is hung (stopped, frozen; and a file system without working flock still shows
a stale run).

A run that ends badly records why (meta ``cause``, a :class:`FailureCause`: a
:class:`CauseKind` and one line); ``resume`` checks a cause that would only repeat (a plan
error, a full disk, an unwritable folder) before it starts anything.

The store's ``meta`` table maps a ``MetaKey`` to a JSON value; ``RunMeta`` reads and
writes each key with its type (enums and the small models below), so no module spells a
key or a status as a string literal.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import socket
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedseg.errors import FedsegError, PlanError
from fedseg.output_paths import nearest_existing, reason, unwritable

# -- paths ------------------------------------------------------------------------------
PLAN_FILE = "plan.yaml"
STORE_FILE = "run.sqlite"
MODELS_DIR = "models"
BEST_MODEL = "best.pt"
LOGS_DIR = "logs"
FLWR_HOME = "flwr-home"
SIM_NODES_FILE = "sim_nodes.json"
APP_DIR = "flwr-app"
ENROLLED_NODES_FILE = "enrolled-nodes.json"
REPORT_FILE = "report.html"
LOSO_DIR = "loso"
LOCK_FILE = "run.lock"
#: A centralized run (``fedseg train``): its recipe, training state and last model.
RECIPE_FILE = "recipe.yaml"
CHECKPOINT = Path("checkpoints") / "last.ckpt"
LAST_MODEL = "last.pt"
STRATEGY_STATE_SUFFIX = ".strategy.npz"
SPOOL_DIR = "spool"
CROSSVAL_DIR = "crossval"


def model_path(run_dir: Path, model_round: int) -> Path:
    """``<run>/models/round_XXXX.pt``: the global model after round ``model_round``."""
    return Path(run_dir) / MODELS_DIR / f"round_{model_round:04d}.pt"


def strategy_state_path(model_file: Path) -> Path:
    """The strategy's state saved beside a round model (``round_XXXX.strategy.npz``)."""
    return Path(model_file).with_suffix(STRATEGY_STATE_SUFFIX)


def spool_dir(run_dir: Path, rnd: int) -> Path:
    """``<run>/spool/round_XXXX``: round ``rnd``'s updates while they are aggregated."""
    return Path(run_dir) / SPOOL_DIR / f"round_{rnd:04d}"


def crossval_dir(run_dir: Path, rnd: int) -> Path:
    """``<run>/crossval/round_XXXX``: round ``rnd``'s local models kept until the sites
    that validate them in round ``rnd + 1`` have answered (cross-site validation)."""
    return Path(run_dir) / CROSSVAL_DIR / f"round_{rnd:04d}"


#: the sub-folder of a ``crossval_dir`` with the round's models without each kept site
WITHOUT_DIR = "without"
#: marks the label of a round's aggregate without one site (``cross_label(without=True)``)
WITHOUT_MARK = "~"


class CrossLabel(NamedTuple):
    """A cross-site model label, parsed: the model site, its round, and whether the model is
    that round's aggregate *without* the site's update rather than its local model."""

    site: str
    round: int
    without: bool = False


def cross_label(site: str, model_round: int, without: bool = False) -> str:
    """The name a model travels under for cross-site validation: ``site@round`` for the
    site's local model of that round, ``~site@round`` for the round's aggregate without its
    update (site names begin with a letter or digit, so the mark cannot be part of one)."""
    return f"{WITHOUT_MARK if without else ''}{site}@{model_round}"


def parse_cross_label(label: str) -> CrossLabel:
    """``site@round`` or ``~site@round`` -> ``CrossLabel``; ValueError for anything else."""
    site, sep, rnd = label.rpartition("@")
    without = site.startswith(WITHOUT_MARK)
    site = site.removeprefix(WITHOUT_MARK)
    if not sep or not site or not rnd.isdigit() or site.startswith(WITHOUT_MARK):
        raise ValueError(f"cross-site model label {label!r} is not site@round or ~site@round")
    return CrossLabel(site, int(rnd), without)


def missing_model_hint(path: Path) -> str:
    """For a missing ``models/round_XXXX.pt`` of a run folder: why it may be gone (the
    plan's ``retention`` deletes round models) and what to use; "" for any other path."""
    path = Path(path)
    if path.parent.name != MODELS_DIR or not path.name.startswith("round_"):
        return ""
    run = path.parent.parent
    return (
        f"; a run keeps only the round models its plan's `retention` names (best, last, every "
        f"k-th): use {run / BEST_MODEL} or a kept round (`fedseg status {run}` lists them)"
    )


def loso_run(base: Path, site: str) -> Path:
    """The run folder of the federation without ``site`` under a leave-one-site-out folder."""
    return Path(base) / f"without_{site}"


def loso_plan(base: Path, site: str) -> Path:
    """The plan file of the federation without ``site`` under a leave-one-site-out folder."""
    return Path(base) / f"plan_without_{site}.yaml"


# -- status values ----------------------------------------------------------------------
class RunStatus(StrEnum):
    """Meta ``status``: a federation's own word on the whole run."""

    CREATED = "created"  # the run folder was made (``prepare_run``)
    STARTING = "starting"  # the engine is being started
    RUNNING = "running"  # the coordinator runs rounds
    DONE = "done"
    FAILED = "failed"  # meta ``error`` and ``cause`` say why
    CRASHED = "crashed"  # its aggregator died without a word (the launcher's record)


class RoundStatus(StrEnum):
    """``rounds.status``: a round is ``done`` only after its model file is written."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class SiteRoundStatus(StrEnum):
    """``site_rounds.status``: what became of one site in one round. A site the round's
    strategy gave no task (partial participation with ``validators`` other than ``all``,
    or still busy with a reply cut after quorum) is ``not asked``: it was not expected to
    validate that round's model (``tracking.curves``' round-score rule). A ``timeout`` row
    whose ``extra`` has ``CUT_AFTER_QUORUM`` was cut by the plan's ``straggler`` rule."""

    OK = "ok"
    FAILED = "failed"  # it raised or crashed
    TIMEOUT = "timeout"  # no reply within the round's time (or cut after quorum)
    REJECTED = "rejected"  # its update failed the checks
    NOT_ASKED = "not asked"  # no task this round: not expected to validate


#: ``site_rounds.extra`` key of a site cut after quorum: ``[replied, requested]`` trainers
CUT_AFTER_QUORUM = "cut_after_quorum"
#: ``site_rounds.extra`` key: the lr the site trained with in that round (the plan's
#: ``train.lr_schedule``; a centralized run's epoch likewise); absent: it did not train
LR_USED = "lr"


class LivePhase(StrEnum):
    """Meta ``live.phase``: what the coordinator does now."""

    CONNECTING = "connecting"
    TRAINING = "training"
    FINAL_VALIDATION = "final validation"


class SiteActivity(StrEnum):
    """Meta ``live.sites[site]``: what a site does now (or how its last task ended)."""

    WAITING = "waiting"
    IDLE = "idle"
    TRAINING = "training"
    VALIDATING = "validating"
    DONE = "done"
    FAILED = "failed"
    TIMEOUT = "timeout"


class RunKind(StrEnum):
    """Meta ``kind``: written by a centralized run; a federation writes none."""

    CENTRALIZED = "centralized"


class Engine(StrEnum):
    """Meta ``engine``: which Flower engine runs a simulated federation (``fedseg simulate
    --engine``); ``resume`` continues with the same one. A run that never recorded it ran on
    the deployment engine."""

    #: Flower's simulation engine (Ray): a bounded pool of site workers, virtual nodes
    SIMULATION = "simulation"
    #: Flower's deployment engine: one SuperNode (and app process per message) per site
    DEPLOYMENT = "deployment"


# -- meta -------------------------------------------------------------------------------
class Task(StrEnum):
    """What a federation trains (plan ``task``): the validation rows' ``region`` is an
    ET/TC/WT region for segmentation and a modality (t1, t1ce, t2, flair) for synthesis,
    whose metrics are ssim, psnr and mae (``synth.validate``)."""

    SEGMENTATION = "segmentation"
    SYNTHESIS = "synthesis"


class MetaKey(StrEnum):
    """The keys of the run store's ``meta`` table."""

    RUN_ID = "run_id"  # the name sites file their private state under
    CREATED = "created"  # time.time() when the run folder was made
    STATUS = "status"  # RunStatus
    ERROR = "error"  # one line, when status is failed
    PLANNED_ROUNDS = "planned_rounds"  # rounds the strategy runs (cyclic: cycles x sites)
    FINAL_VALIDATED = "final_validated"  # the last model was validated
    PLATEAU = "plateau"  # PlateauStop: training stopped early, its curve had plateaued
    AGGREGATOR_PID = "aggregator_pid"  # the ServerApp's pid (None until it starts)
    FLOWER_RUN_ID = "flower_run_id"
    ENGINE = "engine"  # Engine: the Flower engine of a simulated run (None: deployment)
    LIVE = "live"  # LiveState
    BEST = "best"  # BestModel
    LAST_TRAINED = "last_trained"  # LastTrained
    CAUSE = "cause"  # FailureCause: why the run failed or crashed
    ROUND_BYTES = "round_bytes"  # bytes a round's model files take (the plan check's estimate)
    DECLARED = "declared"  # site -> DeclaredCases, fixed at the site's first connect
    HE = "he"  # HeRecord: privacy.he's key holder and which arrays travelled encrypted
    TASK = "task"  # Task: what the federation trains (plan ``task``)
    # a centralized run (``fedseg train``)
    KIND = "kind"  # RunKind
    SITES = "sites"  # names of its data folders
    DATA_DIRS = "data_dirs"  # their paths
    CASES = "cases"  # name -> {"train": [ids], "val": [ids]}
    EPOCHS = "epochs"  # epochs asked for in total
    COMPUTE = "compute"  # ComputeUsed: the device and precision it trained with last


class _MetaValue(BaseModel):
    model_config = ConfigDict(frozen=True)


class AlarmKind(StrEnum):
    """What an alarm says about a site (table ``alarms``, column ``kind``)."""

    #: the site's local models lose Dice on the other sites' data while gaining on its own
    #: (or training to a high loss): its labels disagree with the federation's
    LABELS_DISAGREE = "labels_disagree"
    #: the site's own validation score is below the other sites' (cases as units)
    BELOW_FEDERATION = "below_federation"
    #: the others improve while the site does not
    STALLED = "stalled"
    #: the site's update is far from the others'
    UPDATE_OUTLIER = "update_outlier"


class AlarmLevel(StrEnum):
    """An ``alarm`` notifies (the plan's ``alarms.notify_command``); an ``observation``
    is shown in status, report, alarms and the dashboard but notifies nobody (a finding
    that alone does not say something is wrong, e.g. a lower own score of a site whose
    local models do well elsewhere: harder or different data)."""

    ALARM = "alarm"
    OBSERVATION = "observation"


class AlarmEvidence(_MetaValue):
    """What an alarm rests on (column ``alarms.evidence``, JSON; env
    ``FEDSEG_ALARM_EVIDENCE`` of the notification command). ``statistic`` names the test
    (e.g. ``z``, ``welch_t``, ``slope``, ``robust_z``); ``effect`` is the estimated effect
    in the watched metric's units (negative: worse), ``margin`` the effect size it had to
    pass; ``n_cases`` the validation cases behind it (0: not case-based), ``evaluators``
    the sites whose data it was measured on, ``model_rounds`` the rounds of the models it
    uses; ``text`` one or two plain sentences a coordinator reads."""

    kind: AlarmKind
    region: str
    statistic: str
    value: float
    p: float | None = None
    effect: float | None = None
    margin: float | None = None
    n_cases: int = 0
    evaluators: list[str] = []
    model_rounds: list[int] = []
    text: str = ""


class BestModel(_MetaValue):
    """Meta ``best``: the model round copied to ``best.pt``, its score and validation cases."""

    model_round: int
    score: float
    n_val: int
    time: float


class PlateauStop(_MetaValue):
    """Meta ``plateau``: training stopped after ``last_round`` of at most ``cap`` rounds (or
    epochs), the score not having gained since ``best_round`` (``train.plateau``)."""

    last_round: int
    best_round: int
    cap: int


class LiveState(_MetaValue):
    """Meta ``live``: the round and phase the coordinator is in, each site's activity."""

    round: int
    phase: LivePhase
    sites: dict[str, SiteActivity] = {}


class DeclaredCases(_MetaValue):
    """What a site declared when it joined the run (its hello): the training and
    validation cases of its split. Recorded at its first connect (meta ``declared``) and
    fixed for the run: its later reports are bounded by it (``rounds.bounds``)."""

    n_train: int
    n_val: int
    #: the modalities the site has (``data.site_config``); None: all four (older sites)
    modalities: list[str] | None = None


class LastTrained(_MetaValue):
    """Meta ``last_trained``: the last round in which sites' updates were aggregated."""

    round: int
    sites: list[str]


class HeRecord(_MetaValue):
    """Meta ``he`` (plan ``privacy.he``): the site that holds the key (and decrypts the
    sums), the key's fingerprint, the weight arrays that travelled encrypted and those that
    travelled in the clear (the aggregator saw each site's values of these), and the upper
    bound of the ciphertext bytes per site and round. Rewritten when the key changes."""

    key_holder: str
    key: str
    encrypted: list[str]
    clear: list[str]
    bytes_per_site: int


_DEVICE_TEXT = 80  # characters of a recorded device name


class PrivacySpent(_MetaValue):
    """One row of the privacy ledger (table ``privacy_ledger``): the ε spent so far (the run's
    total, not the round's) by ``site`` after round ``round`` under ``level`` DP at ``delta``,
    with the mechanism's parameters: noise multiplier ``sigma`` (noise std / clip), the clip,
    the steps composed so far and their sampling rate (1.0: no sampling), and the
    dp-accounting accountant (``rdp`` or ``pld``). ``site`` is ``*`` for a guarantee the
    aggregator's noise gives every site at once (``level: site`` without secure aggregation)."""

    level: str = Field(pattern=r"^(site|case)$")
    epsilon: float = Field(ge=0)
    delta: float = Field(gt=0, lt=1)
    sigma: float = Field(gt=0)
    clip_norm: float = Field(gt=0)
    steps: int = Field(ge=0)
    sample_rate: float = Field(gt=0, le=1)
    accountant: str = Field(pattern=r"^(rdp|pld)$")


class ComputeUsed(_MetaValue):
    """The device and precision a site (or a centralized run) computed with: the resolved
    device as ``model.compute.describe_device`` words it (``cpu``, ``cuda:0 (NVIDIA
    H200)``) and ``fp32``, ``bf16`` or ``fp16``. Stored per site and round in
    ``site_rounds.extra`` under the keys ``device`` and ``precision`` (a run from before
    has neither: None), and for a centralized run in meta ``compute`` as well. A site
    reports them, so they are bounded: a short device text of name characters and a word
    for the precision (``messages.decode_reply`` drops a reply's record that is not)."""

    device: str = Field(max_length=_DEVICE_TEXT, pattern=r"^[\w:.()/+ -]+$")
    precision: str = Field(max_length=8, pattern=r"^\w+$")

    @classmethod
    def of(cls, device: str, precision: str) -> ComputeUsed:
        """What a machine records of itself: a device name outside the bounds (a GPU named
        with other characters, or at length) is cut to them, never refused."""
        text = re.sub(r"[^\w:.()/+ -]", "_", device)[:_DEVICE_TEXT] or "_"
        return cls(device=text, precision=precision)

    def extra(self) -> dict[str, str]:
        """The ``site_rounds.extra`` entries."""
        return {"device": self.device, "precision": self.precision}

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any] | None) -> ComputeUsed | None:
        """Read back from ``site_rounds.extra``; None when it has no record of it."""
        if not extra or "device" not in extra or "precision" not in extra:
            return None
        return cls(device=str(extra["device"]), precision=str(extra["precision"]))


class CauseKind(StrEnum):
    """What ended a run badly (meta ``cause.kind``)."""

    PLAN = "plan"  # the plan cannot run as written (unknown strategy, bad parameters, ...)
    DISK_FULL = "disk full"
    UNWRITABLE = "unwritable"  # the run folder cannot be written
    AGGREGATOR_DIED = "aggregator died"  # the ServerApp process vanished without a word
    WRITER_GONE = "writer gone"  # the lock holder died (seen by ``status``, never stored)
    HUNG = "hung"  # the lock holder lives but stopped beating (seen by ``status``)
    ENGINE = "engine"  # the SuperLink or the ServerApp did not start or stopped
    FEDERATION = "federation"  # the rounds: too few sites connected or delivered
    ERROR = "error"  # anything else


#: Causes a restart repeats unless someone changes something first.
REPEATING_CAUSES = frozenset({CauseKind.PLAN, CauseKind.DISK_FULL, CauseKind.UNWRITABLE})


class FailureCause(_MetaValue):
    """Meta ``cause``: why a run failed or crashed, one line, and when it was recorded."""

    kind: CauseKind
    message: str
    time: float

    @classmethod
    def now(cls, kind: CauseKind, message: str) -> FailureCause:
        line = " ".join(message.split()) or kind.value
        return cls(kind=kind, message=line, time=time.time())

    @property
    def repeats(self) -> bool:
        """A restart would fail the same way until the plan or the folder is fixed."""
        return self.kind in REPEATING_CAUSES


M = TypeVar("M", bound=_MetaValue)
E = TypeVar("E", bound=StrEnum)


class MetaTable(Protocol):
    """Raw access to the ``meta`` table (``RunStore`` implements it)."""

    def get_meta(self, key: MetaKey, default: Any = None) -> Any: ...

    def set_meta(self, key: MetaKey, value: Any) -> None: ...


def _model(cls: type[M], key: MetaKey, raw: Any) -> M | None:
    if raw is None:
        return None
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        raise FedsegError(
            f"run store meta {key.value!r} is not readable ({exc.errors()[0]['msg']}); the "
            "run folder was written by another fedseg version"
        ) from None


def _enum(cls: type[E], key: MetaKey, raw: Any) -> E | None:
    if raw is None:
        return None
    try:
        return cls(raw)
    except ValueError:
        raise FedsegError(
            f"run store meta {key.value!r} is {raw!r}, not one of {', '.join(cls)}; the run "
            "folder was written by another fedseg version"
        ) from None


class RunMeta:
    """Typed reads and writes of a run store's meta keys (``store.meta``)."""

    def __init__(self, table: MetaTable) -> None:
        self._t = table

    # -- identity and lifecycle ---------------------------------------------------------
    def run_id(self) -> str | None:
        v = self._t.get_meta(MetaKey.RUN_ID)
        return None if v is None else str(v)

    def set_created(self, run_id: str) -> None:
        """A new run folder: its id, creation time and status ``created``."""
        self._t.set_meta(MetaKey.RUN_ID, run_id)
        self._t.set_meta(MetaKey.CREATED, time.time())
        self.set_status(RunStatus.CREATED)

    def set_run_id(self, run_id: str) -> None:
        self._t.set_meta(MetaKey.RUN_ID, run_id)

    def status(self) -> RunStatus | None:
        return _enum(RunStatus, MetaKey.STATUS, self._t.get_meta(MetaKey.STATUS))

    def set_status(self, status: RunStatus, error: str | None = None) -> None:
        """Set the run's status; ``error`` (one line) goes with ``failed``."""
        self._t.set_meta(MetaKey.STATUS, status.value)
        if error is not None:
            self._t.set_meta(MetaKey.ERROR, error)

    def set_failed(self, cause: FailureCause, status: RunStatus = RunStatus.FAILED) -> None:
        """The run ended badly (``failed``, or ``crashed``): status, ``error`` and ``cause``."""
        self._t.set_meta(MetaKey.CAUSE, cause.model_dump(mode="json"))
        self.set_status(status, cause.message)

    def cause(self) -> FailureCause | None:
        return _model(FailureCause, MetaKey.CAUSE, self._t.get_meta(MetaKey.CAUSE))

    def clear_cause(self) -> None:
        """A restart: the last cause no longer describes the run."""
        self._t.set_meta(MetaKey.CAUSE, None)
        self._t.set_meta(MetaKey.ERROR, None)

    def round_bytes(self) -> int | None:
        v = self._t.get_meta(MetaKey.ROUND_BYTES)
        return None if v is None else int(v)

    def set_round_bytes(self, n: int) -> None:
        self._t.set_meta(MetaKey.ROUND_BYTES, int(n))

    def error(self) -> str | None:
        v = self._t.get_meta(MetaKey.ERROR)
        return None if v is None else str(v)

    def task(self) -> Task:
        """What the run trains; ``segmentation`` for runs that never recorded it."""
        return _enum(Task, MetaKey.TASK, self._t.get_meta(MetaKey.TASK)) or Task.SEGMENTATION

    def set_task(self, task: Task) -> None:
        self._t.set_meta(MetaKey.TASK, Task(task).value)

    def planned_rounds(self) -> int | None:
        v = self._t.get_meta(MetaKey.PLANNED_ROUNDS)
        return None if v is None else int(v)

    def set_planned_rounds(self, rounds: int) -> None:
        self._t.set_meta(MetaKey.PLANNED_ROUNDS, int(rounds))

    def plateau(self) -> PlateauStop | None:
        return _model(PlateauStop, MetaKey.PLATEAU, self._t.get_meta(MetaKey.PLATEAU))

    def set_plateau(self, stop: PlateauStop) -> None:
        """Training stopped early: the run's rounds (``planned_rounds``) become the rounds
        it trained, so the run reads as done, not as stopped."""
        self._t.set_meta(MetaKey.PLATEAU, stop.model_dump(mode="json"))
        self.set_planned_rounds(stop.last_round)

    def final_validated(self) -> bool:
        return bool(self._t.get_meta(MetaKey.FINAL_VALIDATED, False))

    def set_final_validated(self) -> None:
        self._t.set_meta(MetaKey.FINAL_VALIDATED, True)

    def is_complete(self) -> bool:
        """Done and its last model validated: nothing left to resume."""
        return self.status() == RunStatus.DONE and self.final_validated()

    # -- engine -------------------------------------------------------------------------
    def aggregator_pid(self) -> int | None:
        v = self._t.get_meta(MetaKey.AGGREGATOR_PID)
        return None if v is None else int(v)

    def set_aggregator_pid(self, pid: int | None) -> None:
        self._t.set_meta(MetaKey.AGGREGATOR_PID, pid)

    def set_flower_run_id(self, run_id: int) -> None:
        self._t.set_meta(MetaKey.FLOWER_RUN_ID, run_id)

    def engine(self) -> Engine | None:
        """The engine a simulated run was started on (None: not recorded)."""
        return _enum(Engine, MetaKey.ENGINE, self._t.get_meta(MetaKey.ENGINE))

    def set_engine(self, engine: Engine) -> None:
        self._t.set_meta(MetaKey.ENGINE, Engine(engine).value)

    # -- progress -----------------------------------------------------------------------
    def live(self) -> LiveState | None:
        return _model(LiveState, MetaKey.LIVE, self._t.get_meta(MetaKey.LIVE))

    def set_live(self, live: LiveState | None) -> None:
        self._t.set_meta(MetaKey.LIVE, None if live is None else live.model_dump(mode="json"))

    def best(self) -> BestModel | None:
        return _model(BestModel, MetaKey.BEST, self._t.get_meta(MetaKey.BEST))

    def set_best(self, best: BestModel | None) -> None:
        """None: no round is a candidate (``best.pt`` removed)."""
        self._t.set_meta(MetaKey.BEST, None if best is None else best.model_dump(mode="json"))

    def last_trained(self) -> LastTrained | None:
        return _model(LastTrained, MetaKey.LAST_TRAINED, self._t.get_meta(MetaKey.LAST_TRAINED))

    def set_last_trained(self, last: LastTrained) -> None:
        self._t.set_meta(MetaKey.LAST_TRAINED, last.model_dump(mode="json"))

    def he(self) -> HeRecord | None:
        return _model(HeRecord, MetaKey.HE, self._t.get_meta(MetaKey.HE))

    def set_he(self, record: HeRecord) -> None:
        self._t.set_meta(MetaKey.HE, record.model_dump(mode="json"))

    def declared(self) -> dict[str, DeclaredCases]:
        raw = self._t.get_meta(MetaKey.DECLARED) or {}
        return {
            site: v for site, d in raw.items()
            if (v := _model(DeclaredCases, MetaKey.DECLARED, d)) is not None
        }  # fmt: skip

    def set_declared(self, declared: dict[str, DeclaredCases]) -> None:
        self._t.set_meta(
            MetaKey.DECLARED, {s: d.model_dump(mode="json") for s, d in declared.items()}
        )

    # -- a centralized run --------------------------------------------------------------
    def set_centralized(
        self, sites: list[str], data_dirs: list[str | None], cases: dict[str, Any]
    ) -> None:
        """A new centralized run: its data folders (names, paths) and their split cases."""
        self._t.set_meta(MetaKey.KIND, RunKind.CENTRALIZED.value)
        self._t.set_meta(MetaKey.SITES, sites)
        self._t.set_meta(MetaKey.DATA_DIRS, data_dirs)
        self._t.set_meta(MetaKey.CASES, cases)

    def data_dirs(self) -> list[str | None]:
        return list(self._t.get_meta(MetaKey.DATA_DIRS) or [])

    def cases(self) -> dict[str, Any] | None:
        v = self._t.get_meta(MetaKey.CASES)
        return None if v is None else dict(v)

    def epochs(self) -> int | None:
        v = self._t.get_meta(MetaKey.EPOCHS)
        return None if v is None else int(v)

    def set_epochs(self, epochs: int) -> None:
        self._t.set_meta(MetaKey.EPOCHS, int(epochs))

    def compute(self) -> ComputeUsed | None:
        return _model(ComputeUsed, MetaKey.COMPUTE, self._t.get_meta(MetaKey.COMPUTE))

    def set_compute(self, used: ComputeUsed) -> None:
        self._t.set_meta(MetaKey.COMPUTE, used.model_dump(mode="json"))


# -- the run lock -----------------------------------------------------------------------
#: The lock holder touches ``run.lock`` at least this often (its mtime is the heartbeat).
HEARTBEAT_S = 2.0
#: A holder whose heartbeat is older than this is hung.
STALE_S = 120.0


class LockHolder(_MetaValue):
    """Who holds a run's lock (the lock file's content)."""

    pid: int
    host: str
    command: str
    started: float

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} (`{self.command}`)"


@dataclass(frozen=True)
class LockState:
    """What :func:`probe_lock` saw: whether a live process holds the lock, who wrote it last,
    and how old its heartbeat is (None: no lock file, a run from before locks)."""

    held: bool
    holder: LockHolder | None
    heartbeat_age_s: float | None

    @property
    def exists(self) -> bool:
        return self.heartbeat_age_s is not None

    @property
    def hung(self) -> bool:
        return self.held and (self.heartbeat_age_s or 0.0) > STALE_S


class RunLocked(FedsegError):
    """Another live process runs this run folder."""

    @classmethod
    def of(cls, run_dir: Path, holder: LockHolder | None) -> RunLocked:
        who = holder.describe() if holder is not None else "another process"
        return cls(
            f"{run_dir} is live: {who} runs it; follow it with `fedseg status {run_dir} -f`, "
            "or stop that process first"
        )


def _read_holder(path: Path) -> LockHolder | None:
    try:
        return LockHolder.model_validate_json(path.read_text())
    except (OSError, ValidationError, ValueError):
        return None


def probe_lock(run_dir: Path) -> LockState:
    """Whether a live process holds ``<run>/run.lock`` (a shared, non-blocking flock that is
    released at once), its holder and heartbeat age. Never creates the file."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return LockState(False, None, None)
    try:
        age = max(0.0, time.time() - os.fstat(fd).st_mtime)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            held = True
        except OSError:  # no flock here (some network file systems): trust the heartbeat
            held = age <= STALE_S
        else:
            held = False
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return LockState(held, _read_holder(path), age)


class RunLock:
    """The live writer's exclusive ``flock`` on ``<run>/run.lock`` (see the module
    docstring); released by :meth:`release` or by the kernel when the process dies."""

    def __init__(self, run_dir: Path, fd: int, holder: LockHolder) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.holder = holder
        self._fd: int | None = fd
        self._stop = threading.Event()
        self._beater = threading.Thread(target=self._beat_loop, name="run-lock", daemon=True)
        self._beater.start()

    @classmethod
    def acquire(cls, run_dir: Path, command: str | None = None, wait_s: float = 2.0) -> RunLock:
        """Take the run's lock or raise :class:`RunLocked` naming its live holder. A short
        wait rides over a ``status`` probing the lock at the same instant."""
        run_dir = Path(run_dir)
        path = run_dir / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise FedsegError(
                f"cannot create the run lock {path} ({exc.strerror}): make {run_dir} writable"
            ) from None
        end = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < end:
                    time.sleep(0.1)
                    continue
                os.close(fd)
                raise RunLocked.of(run_dir, _read_holder(path)) from None
            except OSError:
                break  # no flock on this file system: the heartbeat alone tells
        cmd = command or " ".join(["fedseg", *sys.argv[1:]])[:200]
        holder = LockHolder(pid=os.getpid(), host=socket.gethostname(), command=cmd,
                            started=time.time())  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.model_dump_json().encode(), 0)
        return cls(run_dir, fd, holder)

    def beat(self) -> None:
        """The heartbeat: touch the lock file (its mtime)."""
        fd = self._fd
        if fd is not None:
            with contextlib.suppress(OSError):
                os.utime(fd)

    def _beat_loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self.beat()

    def release(self) -> None:
        self._stop.set()
        if self._beater.is_alive() and self._beater is not threading.current_thread():
            self._beater.join(timeout=5)
        if self._fd is not None:
            os.close(self._fd)  # drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# -- the folder can take a round --------------------------------------------------------
def folder_problem(
    run_dir: Path, needed_bytes: int = 0, *, probe: bool = True
) -> FailureCause | None:
    """Why ``run_dir`` (or, before it exists, the folder it will be made in) cannot take a
    round's files: not writable (``output_paths.unwritable``: a probe file; without
    ``probe``, for a reader that must not write, the permission bits only), a run store
    that cannot be opened for writing, or less free space than ``needed_bytes``."""
    run_dir = Path(run_dir)
    if probe:
        problem = unwritable(run_dir / MODELS_DIR)
    else:
        where = nearest_existing(run_dir / MODELS_DIR)
        denied = PermissionError(errno.EACCES, "permission denied", str(where))
        problem = None if os.access(where, os.W_OK | os.X_OK) else (where, denied)
    if problem is not None:
        return _unwritable(run_dir, *problem)
    store = run_dir / STORE_FILE
    if probe and store.is_file():
        try:
            os.close(os.open(store, os.O_RDWR))
        except OSError as exc:
            return _unwritable(run_dir, store, exc)
    if needed_bytes > 0:
        target = nearest_existing(run_dir / MODELS_DIR)
        free = shutil.disk_usage(target).free
        if free < needed_bytes:
            return FailureCause.now(
                CauseKind.DISK_FULL,
                f"the disk of {target} is full: {_mb(free)} free, a round writes about "
                f"{_mb(needed_bytes)}; free some space (or pick another folder) and try again",
            )
    return None


def _unwritable(run_dir: Path, where: Path, exc: OSError) -> FailureCause:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return FailureCause.now(
            CauseKind.DISK_FULL, f"the disk of {where} is full: free some space and try again"
        )
    return FailureCause.now(
        CauseKind.UNWRITABLE,
        f"the run folder {run_dir} cannot be written: {where} refuses uid {os.getuid()} "
        f"({reason(exc)}); fix its permissions or pick another folder",
    )


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def cause_of(exc: BaseException, run_dir: Path, needed_bytes: int = 0) -> FailureCause:
    """The cause of a run's failure ``exc``: a full disk or an unwritable folder when the
    error or the folder says so (torch hides errno in its own messages), else by the error's
    type: ``PlanError`` the plan, another FedsegError the federation, anything else error."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return FailureCause.now(CauseKind.DISK_FULL, f"the disk of {run_dir} is full: {exc}")
    found = folder_problem(run_dir, needed_bytes)
    if found is not None:
        return found
    text = str(exc).splitlines()[0] if str(exc) else repr(exc)
    if isinstance(exc, PlanError):
        return FailureCause.now(CauseKind.PLAN, text)
    if isinstance(exc, FedsegError):
        return FailureCause.now(CauseKind.FEDERATION, text)
    return FailureCause.now(CauseKind.ERROR, f"{type(exc).__name__}: {text}")
