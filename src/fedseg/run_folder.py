"""The run folder's contract: its file names, status values and meta keys, in one place.

A run folder is read by the aggregator, ``status``, ``report``, ``select``, ``alarms``,
``resume`` and the dashboard, possibly while another process writes it, so every name
they share is defined here and nowhere else (this module imports nothing of fedseg but
its errors). A federation's run folder holds::

    plan.yaml                 PLAN_FILE: the plan (site data paths absolute)
    run.sqlite                STORE_FILE: the run store (tracking.store.RunStore)
    models/round_XXXX.pt      model_path(run, r): the global model after round r (0: initial)
    models/round_XXXX.strategy.npz   strategy_state_path(model): the strategy's state then
    best.pt                   BEST_MODEL: copy of the best-scoring round model
    logs/, flwr-home/         LOGS_DIR, FLWR_HOME: engine logs and Flower's home
    flwr-app/                 APP_DIR: the Flower app bundle
    enrolled-nodes.json       ENROLLED_NODES_FILE: deployment only, site -> node id and key
    report.html               REPORT_FILE: ``fedseg report``'s default output
    loso/                     LOSO_DIR: ``fedseg contributions --loso``'s runs

A centralized run folder (``fedseg train``) holds ``recipe.yaml`` (RECIPE_FILE) instead of
a plan, ``run.sqlite``, ``checkpoints/last.ckpt`` (CHECKPOINT), ``last.pt`` and ``best.pt``.

The store's ``meta`` table maps a ``MetaKey`` to a JSON value; ``RunMeta`` reads and
writes each key with its type (enums and the small models below), so no module spells a
key or a status as a string literal.
"""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from fedseg.errors import FedsegError

# -- paths ------------------------------------------------------------------------------
PLAN_FILE = "plan.yaml"
STORE_FILE = "run.sqlite"
MODELS_DIR = "models"
BEST_MODEL = "best.pt"
LOGS_DIR = "logs"
FLWR_HOME = "flwr-home"
APP_DIR = "flwr-app"
ENROLLED_NODES_FILE = "enrolled-nodes.json"
REPORT_FILE = "report.html"
LOSO_DIR = "loso"
#: A centralized run (``fedseg train``): its recipe, training state and last model.
RECIPE_FILE = "recipe.yaml"
CHECKPOINT = Path("checkpoints") / "last.ckpt"
LAST_MODEL = "last.pt"
STRATEGY_STATE_SUFFIX = ".strategy.npz"


def model_path(run_dir: Path, model_round: int) -> Path:
    """``<run>/models/round_XXXX.pt``: the global model after round ``model_round``."""
    return Path(run_dir) / MODELS_DIR / f"round_{model_round:04d}.pt"


def strategy_state_path(model_file: Path) -> Path:
    """The strategy's state saved beside a round model (``round_XXXX.strategy.npz``)."""
    return Path(model_file).with_suffix(STRATEGY_STATE_SUFFIX)


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
    FAILED = "failed"  # meta ``error`` says why


class RoundStatus(StrEnum):
    """``rounds.status``: a round is ``done`` only after its model file is written."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class SiteRoundStatus(StrEnum):
    """``site_rounds.status``: what became of one site in one round."""

    OK = "ok"
    FAILED = "failed"  # it raised or crashed
    TIMEOUT = "timeout"  # no reply within the round's time
    REJECTED = "rejected"  # its update failed the checks


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


# -- meta -------------------------------------------------------------------------------
class MetaKey(StrEnum):
    """The keys of the run store's ``meta`` table."""

    RUN_ID = "run_id"  # the name sites file their private state under
    CREATED = "created"  # time.time() when the run folder was made
    STATUS = "status"  # RunStatus
    ERROR = "error"  # one line, when status is failed
    PLANNED_ROUNDS = "planned_rounds"  # rounds the strategy runs (cyclic: cycles x sites)
    FINAL_VALIDATED = "final_validated"  # the last model was validated
    AGGREGATOR_PID = "aggregator_pid"  # the ServerApp's pid (None until it starts)
    FLOWER_RUN_ID = "flower_run_id"
    LIVE = "live"  # LiveState
    BEST = "best"  # BestModel
    LAST_TRAINED = "last_trained"  # LastTrained
    DECLARED = "declared"  # site -> DeclaredCases, fixed at the site's first connect
    # a centralized run (``fedseg train``)
    KIND = "kind"  # RunKind
    SITES = "sites"  # names of its data folders
    DATA_DIRS = "data_dirs"  # their paths
    CASES = "cases"  # name -> {"train": [ids], "val": [ids]}
    EPOCHS = "epochs"  # epochs asked for in total


class _MetaValue(BaseModel):
    model_config = ConfigDict(frozen=True)


class BestModel(_MetaValue):
    """Meta ``best``: the model round copied to ``best.pt``, its score and validation cases."""

    model_round: int
    score: float
    n_val: int
    time: float


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


class LastTrained(_MetaValue):
    """Meta ``last_trained``: the last round in which sites' updates were aggregated."""

    round: int
    sites: list[str]


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

    def error(self) -> str | None:
        v = self._t.get_meta(MetaKey.ERROR)
        return None if v is None else str(v)

    def planned_rounds(self) -> int | None:
        v = self._t.get_meta(MetaKey.PLANNED_ROUNDS)
        return None if v is None else int(v)

    def set_planned_rounds(self, rounds: int) -> None:
        self._t.set_meta(MetaKey.PLANNED_ROUNDS, int(rounds))

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
