"""The aggregator's round loop, engine-free: plan + strategy + checks + run store.

The engine is a ``Transport`` (Flower's in ``server_app``): it finds the connected sites and
exchanges ``TaskRequest``/``TaskReply`` values. Everything that is decided or measured is
here and lands in the run store:

- sites: each site's hello declares its split's case counts; the first declaration of a
  site is recorded (meta ``declared``) and bounds its reports for the rest of the run,
  across restarts (``bounds``);
- round r: every site validates global model r-1 (``validation`` rows with
  ``model_round = r - 1``) and trains; replies are checked (plan ``bounds``: counts and
  validation summaries against the declaration; then the weights), bad ones are stored as
  ``rejected`` with a one-line reason and nothing of them is used, the other updates are
  clipped to the norm bound (``aggregation.norm_bound``) and aggregated into model r
  (``models/round_XXXX.pt``, with the strategy's state, if it keeps any, in
  ``round_XXXX.strategy.npz``);
- memory: each reply is taken as it arrives (the transport hands it over and keeps
  nothing). A streaming strategy's update (``Strategy.streams``) is checked, its norm kept,
  and its arrays parked in the round's spool folder (``rounds.spool``) at once; once all
  replies are in, the norm bounds are applied and the aggregation reads the parked updates
  back array by array (clipped as they are read), so the aggregator holds about one model
  whatever the number of sites, with the same numbers as when every update is in memory.
  The other strategies keep the round's updates in memory (n_sites x the model);
- a site with fewer validation cases than the plan's ``privacy.min_summary_cases`` (or its
  own floor) replies ``validated`` without numbers: an event, no ``validation`` rows, so
  the round-score rule counts it as a site that did not validate; a failed site's error is
  the category and scrubbed line it sent (``rounds.disclosure``);
- who is asked: the strategy's tasks of the round (partial participation: the drawn sites
  train; ``validators`` says which others validate); a connected site without a task gets
  no message and a ``not asked`` row (not expected to validate model r-1: the round-score
  rule). With plan ``straggler`` (``rounds.straggler``) the exchange stops once the quorum
  of trainers delivered and the grace passed: the sites still out are ``timeout`` ("cut
  after quorum (n of m)") and *busy* (``self.busy``, not persisted across restarts) until
  the transport pulls their late reply (``Transport.pull_late``); the next draws pass
  them over;
- after the last round, model R is validated once more (``model_round = R``);
- ``best.pt``: after every round, the best model round over the whole store by the one
  round-score rule (``tracking.curves``: mean Dice over ET/TC/WT per case, sites weighted
  by their validation cases, only rounds every validating site validated, earliest on
  ties) among rounds whose model is still in the run folder: always the model ``fedseg
  select --singlet`` picks. It is recomputed, not only compared with the newest round,
  because a site that validates late makes earlier rounds ineligible; with no candidate
  round there is none;
- retention (plan ``retention``, ``rounds.retention``): once round r is ``done``, the
  round models outside the policy (the rounds ``select`` picks now, the last ``keep_last``,
  every ``keep_every``-th) are deleted with their ``checkpoints`` rows, one log line per
  round; should a deleted round become the best again, the best kept round is ``best.pt``
  (the same rule ``select`` applies).

With ``task: synthesis`` (``task_kind``, strategy ``modality-fedavg``) the run has two
phases, told by the round number: rounds ``1..P`` (``synthesis.pretrain.rounds``; 0 with an
``initial_generator``) pre-train the generator's kernel on the reference modality (the one
most sites declared, ties to the first in ``t1, t1ce, t2, flair``; or the plan's), then the
aggregator resets every bank to identity on it (``model.generator.identity_banks``: model P)
and ``rounds`` bank rounds follow (planned rounds ``P + rounds``). After ``check_update``
a site's update must leave every array of a group it does not train bit for bit as the site
received it (``transfer``'s round trip of the global model): the kernel in the bank phase,
the bank of a modality the site did not declare, anything but the kernel and the reference
bank in pre-training; else it is ``rejected`` with a one-line reason. Each site's round
record says the phase and the groups it was averaged into; the run log says per round
which sites each group was averaged over.

Cross-site validation (plan ``cross_site``; ``rounds.cross_site``: when it runs and who
validates what): after a cross round's aggregation, the local models it keeps are parked in
``crossval/round_XXXX/<site>.npz`` (``run_folder.crossval_dir``, written before the spool
is removed, atomically but without an fsync each: a parked model is a check's input, not
the run's state); round r+1's requests carry each evaluator's share (``TaskRequest.cross``, the
same weights object for every request that carries a model, so an engine encodes it once),
every training site of a cross round is asked for its home check (``TaskRequest.home``),
and the last round's models ride on the final validation. The replies' ``cross`` and
``home`` summaries are checked (``bounds.check_cross``: a failed check drops that reply's
cross-site part with a logged reason, the rest of the reply is used; with ``bounds`` off
only what was not asked for is dropped) and stored as
``cross_validation`` rows (``tracking.store``: away rows in round r+1 against global r,
home rows in round r against global r-1). A parked folder is deleted once the round that
used it is ``done``; a restart keeps only the folder of the last ``done`` round (the
resumed round's models to validate) and removes the others, and in the kept one a parked
model a machine crash tore (one warning line: only that model's cross rows are lost).

A restart continues after the last ``done`` round (``RunStore.last_done_round``): a round
is ``done`` only after its model file is written, so a kill loses at most that round.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import shutil
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from fedseg.errors import FedsegError
from fedseg.federation.rounds import cross_site
from fedseg.federation.rounds.aggregation import (
    UpdateRejected,
    check_update,
    clip_update,
    difference_norm,
    norm_bound,
    without_one,
)
from fedseg.federation.rounds.bounds import check_cross, check_declaration, check_report
from fedseg.federation.rounds.central_dp import NOISE_SHARE_SITES, make_site_dp, noise_share_sites
from fedseg.federation.rounds.hidden_sum import SECURE_SUM, make_hidden_sum
from fedseg.federation.rounds.retention import prune_models
from fedseg.federation.rounds.spool import Spool
from fedseg.federation.rounds.straggler import StopRule, check_straggler, quorum_count
from fedseg.federation.rounds.strategies.base import SiteUpdate, Strategy
from fedseg.federation.rounds.strategies.modality import PRETRAIN, ModalityFedAvg
from fedseg.federation.rounds.strategies.registry import plan_strategy
from fedseg.federation.rounds.strategies.sequential import SequentialStrategy
from fedseg.federation.rounds.task_kind import SynthesisKind, task_kind
from fedseg.federation.rounds.tasks import Payload, SynthStep, TaskReply, TaskRequest
from fedseg.federation.rounds.transfer import round_trip
from fedseg.model.weights import (
    ArraysOnDisk,
    Weights,
    arrays_intact,
    load_arrays,
    save_arrays,
)
from fedseg.plan import PlanConfig, load_plan
from fedseg.run_folder import (
    BEST_MODEL,
    CROSSVAL_DIR,
    CUT_AFTER_QUORUM,
    LR_USED,
    PLAN_FILE,
    SPOOL_DIR,
    WITHOUT_DIR,
    BestModel,
    DeclaredCases,
    LastTrained,
    LivePhase,
    LiveState,
    PrivacySpent,
    RoundStatus,
    RunStatus,
    SiteActivity,
    SiteRoundStatus,
    Task,
    cause_of,
    cross_label,
    crossval_dir,
    model_path,
    parse_cross_label,
    spool_dir,
    strategy_state_path,
)
from fedseg.tracking.alarms import check_alarms
from fedseg.tracking.plateau_stop import plateau_stop
from fedseg.tracking.selection import best_round
from fedseg.tracking.store import CrossRow, RunStore, SiteRound, without_metric

_D = TypeVar("_D")


@dataclass(frozen=True)
class SiteFailure:
    """A site that did not deliver: ``status`` is ``failed`` (it raised or crashed) or
    ``timeout``; ``error`` is one line."""

    status: SiteRoundStatus
    error: str


@dataclass(frozen=True)
class Exchanged:
    """One site's result of an exchange, with the payload bytes each way and the wall time
    from sending the request to receiving the reply."""

    result: TaskReply | SiteFailure
    bytes_sent: int
    bytes_received: int
    wall_s: float


class Transport(Protocol):
    def connected_sites(self, wanted: Sequence[str], wait_s: float) -> list[str]:
        """Names (from ``wanted``) of the sites connected now, waiting up to ``wait_s`` for
        all of them to be there."""
        ...

    def exchange(
        self,
        requests: dict[str, TaskRequest],
        timeout_s: float,
        on_result: Callable[[str, Exchanged], None],
        stop_when: Callable[[set[str]], bool] | None = None,
    ) -> None:
        """Send each site its request and hand each site's result to ``on_result`` as it
        comes, until all came or ``timeout_s``: at most once per site (a site never handed
        over has not replied). The result is the coordinator's from then on: the transport
        keeps no reference to it, so its weights are freed once the coordinator is done
        with them (a streaming round parks them on disk at once). ``stop_when`` (passed
        only when the plan has a straggler cut, ``rounds.straggler``): called with the
        sites handed over so far after each result and at each poll; once it returns
        true the exchange returns at once, the sites still out are not handed over, and
        their replies, when they come, are left for ``pull_late``."""
        ...

    def pull_late(self) -> set[str]:
        """The sites whose reply to an earlier exchange, left out by ``stop_when`` or the
        timeout, has come since (its content is dropped): they are free again."""
        ...

    def declared_cases(self) -> dict[str, DeclaredCases]:
        """What each connected site declared in its hello (sites that declared nothing
        are absent)."""
        ...

    def query(
        self, kind: str, payloads: dict[str, Payload], timeout_s: float
    ) -> dict[str, Payload | SiteFailure]:
        """Send each site a ``kind`` query (``site_queries.queries()``: a protocol step of a
        privacy mechanism) with its payload; each site's answer, or its failure (an error,
        or no answer within ``timeout_s``)."""
        ...


def site_seed(seed: int, rnd: int, site: str) -> int:
    """A seed for one site's training in one round, stable across restarts."""
    h = int.from_bytes(hashlib.sha256(site.encode()).digest()[:4], "big")
    return int(np.random.SeedSequence([seed, rnd, h]).generate_state(1)[0])


def initial_weights(plan: PlanConfig) -> Weights:
    """Round-0 model of ``plan`` (``task_kind``: the network's or the generator's)."""
    return task_kind(plan).initial_weights()


def reference_modality(
    configured: str, modalities: Sequence[str], declared: Sequence[list[str] | None]
) -> str:
    """The pre-training's modality: ``configured`` unless ``auto``, else the one of
    ``modalities`` most of the ``declared`` sets have (None: all), ties to the earliest in
    ``modalities`` (``t1`` first)."""
    if configured != "auto":
        return configured
    counts = {m: sum(1 for d in declared if d is None or m in d) for m in modalities}
    return max(modalities, key=lambda m: (counts[m], -list(modalities).index(m)))


class Coordinator:
    """Runs (or continues) the federation of the run folder ``run_dir`` over ``transport``."""

    def __init__(
        self, run_dir: Path, transport: Transport, run_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        """``clock``: the straggler cut's time (``rounds.straggler``; a test's own clock)."""
        self.run_dir = Path(run_dir)
        self.plan = load_plan(self.run_dir / PLAN_FILE)
        self.transport = transport
        self.store = RunStore(self.run_dir)
        self.run_id = run_id or self.store.meta.run_id() or self.run_dir.name
        self.strategy: Strategy[Any] = plan_strategy(self.plan)
        self.kind = task_kind(self.plan)
        #: rounds of generator pre-training before the bank rounds (``task: synthesis``)
        self.pretrain_rounds = 0
        if isinstance(self.kind, SynthesisKind) and self.plan.synthesis.initial_generator is None:
            self.pretrain_rounds = self.plan.synthesis.pretrain.rounds
        rounds = self.strategy.planned_rounds(self.plan.rounds, len(self.plan.sites))
        rounds += self.pretrain_rounds
        if rounds != self.plan.rounds:  # e.g. cyclic: cycles x sites visits
            self.plan = self.plan.model_copy(update={"rounds": rounds})
        self.recipe = self.kind.recipe()
        #: the global model as the sites receive it (the transfer's round trip), by round
        self._received: tuple[int, Weights] | None = None
        self.live = LiveState(round=0, phase=LivePhase.CONNECTING)
        #: each site's first declaration in this run (meta ``declared``)
        self.declared = self.store.meta.declared()
        #: site-level DP (``central_dp``; None: none); its plan carries the resolved noise
        self.site_dp = make_site_dp(self.plan, self.store)
        if self.site_dp is not None:
            self.plan = self.site_dp.plan
        #: the plan's mechanism hiding single updates (None: they travel clear)
        self.hidden = make_hidden_sum(self.plan, self.run_dir, self.store)
        #: cross-site validation settings when it runs (``cross_site.resolve``), else None
        sequential = isinstance(self.strategy, SequentialStrategy)
        self.cross = cross_site.resolve(self.plan, sequential)
        self._cross_off = cross_site.off_reason(self.plan, sequential)
        check_straggler(self.plan, sequential)
        self.clock = clock
        #: sites cut after quorum whose late reply has not come yet: given nothing
        self.busy: dict[str, int] = {}

    # -- public -----------------------------------------------------------------------
    def run(self) -> None:
        """All remaining rounds, the final validation and the best model."""
        plan, store = self.plan, self.store
        store.meta.set_status(RunStatus.RUNNING)
        store.meta.set_planned_rounds(plan.rounds)
        store.meta.set_task(Task(plan.task))
        try:
            last = store.last_done_round()
            store.discard_after(last)
            shutil.rmtree(self.run_dir / SPOOL_DIR, ignore_errors=True)  # a killed run's
            self._clean_crossval(keep=last)
            if self._cross_off is not None and self.plan.cross_site.enabled is not False:
                store.log(f"cross-site validation off: {self._cross_off}")
            weights = self._load_global(last)
            sites = self._connect()
            self._set_phases()
            trained = last
            for rnd in range(last + 1, plan.rounds + 1):
                if self._plateaued(trained):  # checked from the store: a resume agrees
                    break
                weights = self._round(rnd, weights, sites)
                trained = rnd
            if not store.meta.final_validated():
                self._final_validation(weights, sites, trained)
            store.meta.set_status(RunStatus.DONE)
            shutil.rmtree(self.run_dir / CROSSVAL_DIR, ignore_errors=True)
            store.log(f"federation done: {trained} rounds")
        except Exception as exc:
            record_failure(store, self.run_dir, exc)
            raise
        finally:
            shutil.rmtree(self.run_dir / SPOOL_DIR, ignore_errors=True)  # a failed round's
            store.close()

    # -- steps ------------------------------------------------------------------------
    def _connect(self) -> list[str]:
        plan = self.plan
        self._set_live(
            0, LivePhase.CONNECTING, dict.fromkeys(plan.site_names, SiteActivity.WAITING)
        )
        sites = self.transport.connected_sites(plan.site_names, plan.connect_timeout_s)
        missing = [s for s in plan.site_names if s not in sites]
        if len(sites) < plan.min_sites:
            raise FedsegError(
                f"only {len(sites)} of {len(plan.sites)} sites connected within "
                f"{plan.connect_timeout_s:.0f} s (missing: {', '.join(missing)}; min_sites "
                f"{plan.min_sites}); check that each site process runs and reaches the "
                "aggregator, or raise connect_timeout_s"
            )
        if missing:
            self.store.log(f"sites not connected, continuing without them: {missing}", "warning")
        self._record_declarations(sites)
        return sites

    def _set_phases(self) -> None:
        """``modality-fedavg``: the pre-training's reference modality (from the declared
        modality sets) and each site's modalities; a modality no site has is one warning
        line (its bank stays at its initial value)."""
        if not isinstance(self.strategy, ModalityFedAvg):
            return
        gen = self.plan.synthesis.generator
        sites = {s: (d.modalities if d is not None else None)
                 for s in self.plan.site_names for d in [self.declared.get(s)]}  # fmt: skip
        declared = [m for s, m in sites.items() if s in self.declared]
        first = self.strategy.reference is None  # once set, the reference stays for the run
        ref = self.strategy.reference or reference_modality(
            self.plan.synthesis.pretrain.modality, gen.modalities, declared)  # fmt: skip
        self.strategy.set_federation(self.pretrain_rounds, ref, gen.modalities, sites)
        if not first:
            return
        for m in gen.modalities:
            if not any(d is None or m in d for d in declared):
                self.store.log(f"{m}: no site has it; its bank stays at its initial value and "
                               f"completion of {m} is refused", "warning")  # fmt: skip
        if self.pretrain_rounds:
            self.store.log(f"synthesis: rounds 1-{self.pretrain_rounds} pre-train the "
                           f"generator's kernel on {ref}, then the bank rounds follow")  # fmt: skip

    def _synth_step(self, rnd: int) -> SynthStep | None:
        if not isinstance(self.strategy, ModalityFedAvg):
            return None
        syn = self.plan.synthesis
        if self.strategy.phase(rnd) == PRETRAIN:
            return SynthStep("pretrain", self.strategy.reference, syn.pretrain.steps_per_round)
        return SynthStep("bank", None, syn.steps_per_round)

    def _record_declarations(self, sites: Sequence[str]) -> None:
        """Record the first believable declaration of each of ``sites``; a later, different
        one is logged and changes nothing (the counts are fixed for the run)."""
        claims = self.transport.declared_cases()
        for site in sites:
            claim, known = claims.get(site), self.declared.get(site)
            if claim is None or claim == known:
                continue
            if known is not None:
                self.store.log(
                    f"site {site} now declares {claim.n_train} training and {claim.n_val} "
                    f"validation cases; its reports stay bounded by the {known.n_train} and "
                    f"{known.n_val} it declared when it joined this run", "warning",
                )  # fmt: skip
                continue
            try:
                self._declare(site, claim, "its hello")
            except UpdateRejected as exc:
                self.store.log(f"site {site}: declaration not believed: {exc}", "warning")

    def _declare(self, site: str, claim: DeclaredCases, source: str) -> None:
        """Make ``claim`` the site's declaration for the run (meta ``declared``), or raise
        ``UpdateRejected`` when it is not believable (``bounds.check_declaration``)."""
        check_declaration(claim, self.plan.bounds.max_cases)
        self.declared[site] = claim
        self.store.meta.set_declared(self.declared)
        self.store.log(f"site {site} declared {claim.n_train} training and {claim.n_val} "
                       f"validation cases ({source})")  # fmt: skip

    def _load_global(self, last: int) -> Weights:
        if last == 0:
            weights = self.kind.initial_weights()
            self._save_model(0, weights)
            return weights
        path = model_path(self.run_dir, last)
        if not path.is_file():
            raise FedsegError(f"{path} is missing: the run folder lost round {last}'s model")
        state_path = strategy_state_path(path)
        if state_path.is_file():
            self.strategy.load_state_dict(load_arrays(state_path))
        return self.kind.load_weights(path)

    def _round(self, rnd: int, weights: Weights, plan_sites: list[str]) -> Weights:
        plan, store = self.plan, self.store
        if self.site_dp is not None:
            self.site_dp.check_budget(rnd)  # the run stops before a round past the budget
        store.start_round(rnd)
        store.log(f"round {rnd} started")
        sites = self.transport.connected_sites(plan.site_names, 0.0) or plan_sites
        self._record_declarations(sites)
        if isinstance(self.strategy, ModalityFedAvg):
            self._set_phases()  # a site that declared late
        self._free_busy(rnd)
        self.strategy.set_site_cases({s: (d.n_train, d.n_val) for s, d in self.declared.items()})
        tasks = self.strategy.configure_round(rnd, sites, frozenset(self.busy))
        self._record_not_asked(rnd, [s for s in sites if s not in tasks])
        cross = self._cross_requests(rnd - 1, [s for s, t in tasks.items() if t.validate])
        home = self.cross is not None and cross_site.is_cross_round(self.cross, rnd)
        requests = {
            s: TaskRequest(
                round=rnd,
                model_round=rnd - 1,
                validate=t.validate,
                epochs=t.epochs,
                steps=t.steps,
                seed=site_seed(plan.seed, rnd, s),
                run_id=self.run_id,
                recipe=self.recipe,
                weights=weights,
                optimizer_mode=t.optimizer_mode,
                proximal_mu=t.proximal_mu,
                optimizer_state=t.optimizer_state,
                min_summary_cases=plan.privacy.min_summary_cases,
                transfer=plan.transfer.weights,
                privacy=plan.privacy,
                planned_rounds=plan.rounds,
                synth_step=self._synth_step(rnd) if t.epochs > 0 else None,
                cross=cross.get(s, {}),
                home=home and t.epochs > 0,
            )
            for s, t in tasks.items()
        }
        del cross
        refused: dict[str, SiteFailure] = {}
        if self.hidden is not None:
            requests, refused = self._prepare_hidden(rnd, weights, requests)
        states = {
            s: SiteActivity.TRAINING if s in requests else SiteActivity.IDLE
            for s in plan.site_names
        }
        self._set_live(rnd, LivePhase.TRAINING, states)
        spool = Spool(spool_dir(self.run_dir, rnd)) if self.strategy.streams else None
        records: dict[str, SiteRound] = {}
        arrived: dict[str, SiteUpdate] = {}
        norms: dict[str, float] = {}

        def take(site: str, ex: Exchanged) -> None:
            sr, upd = self._site_result(rnd, site, ex, weights, requests[site])
            records[site] = sr
            if upd is not None:
                norms[site] = difference_norm(upd.weights, weights)
                arrived[site] = _park(spool, upd) if spool is not None else upd

        def on_result(site: str, ex: Exchanged) -> None:
            self._on_result(rnd, site, ex)
            take(site, ex)

        stop = self._stop_rule(requests, records)
        if stop is None:
            self.transport.exchange(requests, plan.round_timeout_s, on_result)
        else:
            self.transport.exchange(requests, plan.round_timeout_s, on_result, stop_when=stop)
        for site in requests:
            if site in records:
                continue
            if stop is not None and stop.fired:  # still working on it: busy until it replies
                self.busy[site] = rnd
                cut = SiteFailure(SiteRoundStatus.TIMEOUT, stop.message)
                take(site, Exchanged(cut, 0, 0, 0.0))
                records[site] = _with(records[site], extra={
                    CUT_AFTER_QUORUM: [stop.replied, len(stop.trainers)]})  # fmt: skip
            else:
                take(site, Exchanged(SiteFailure(SiteRoundStatus.TIMEOUT, "no reply"), 0, 0, 0.0))
        for site, failure in refused.items():
            take(site, Exchanged(failure, 0, 0, 0.0))
        # in the plan's site order, whatever order the replies came in
        records = {s: records[s] for s in tasks}
        trained = [s for s in tasks if tasks[s].epochs > 0]
        if self.hidden is not None:
            updates, used = self._reveal(rnd, weights)
        else:
            updates = [arrived[s] for s in requests if s in arrived]
            if self.site_dp is not None:  # one noisy mean of the clipped updates
                updates, used = self.site_dp.central_mean(weights, updates, norms)
            else:
                updates = self._bound_norms(rnd, weights, updates, norms, records)
                used = [u.site for u in updates]
        if self.strategy.skip_failed_sites and trained and not updates:
            store.log(f"round {rnd}: no update from {', '.join(trained)}; skipped, the model "
                      "goes on unchanged", "warning")  # fmt: skip
        elif trained and len(used) < min(plan.min_sites, len(trained)):
            _remove(spool)
            for sr in records.values():
                store.record_site_round(sr)
            store.finish_round(rnd, status=RoundStatus.FAILED, n_sites=len(used))
            raise FedsegError(
                f"round {rnd}: only {len(used)} site(s) delivered a usable update, "
                f"min_sites is {plan.min_sites}; see `fedseg status` for the sites' errors "
                "and continue with `fedseg resume`"
            )
        new = self.strategy.aggregate(rnd, weights, updates) if updates else weights
        if isinstance(self.strategy, ModalityFedAvg):
            self._record_groups(rnd, updates, records)
            if rnd == self.pretrain_rounds:  # the kernel is final: every bank to identity
                from fedseg.model.generator import identity_banks

                new = identity_banks(plan.synthesis.generator, new)
                store.log(f"round {rnd}: pre-training done; the kernel is frozen and every "
                          "bank reset to identity on it")  # fmt: skip
        for upd in updates:
            if upd.site not in records:  # the hidden sum: no single site's norm is known
                continue
            sr = records[upd.site]
            records[upd.site] = _with(
                sr,
                update_norm=norms[upd.site],
                update_distance=difference_norm(upd.weights, new),
            )
        self._park_cross(rnd, arrived, used, updates, new)  # before the spool goes
        _remove(spool)  # the round's updates are no longer needed
        for sr in records.values():
            store.record_site_round(sr)
        self._save_model(rnd, new)
        self._update_best()
        if used:
            store.meta.set_last_trained(LastTrained(round=rnd, sites=used))
            if self.site_dp is not None:
                self.site_dp.record(rnd)
        store.finish_round(rnd, n_sites=len(used))
        shutil.rmtree(crossval_dir(self.run_dir, rnd - 1), ignore_errors=True)  # validated
        store.log(f"round {rnd} done: {len(used)} of {len(tasks)} site updates aggregated")
        self._prune(rnd)
        if plan.alarms.enabled:
            check_alarms(store, rnd, plan.alarms)  # stores, logs and notifies; never raises
        return new

    def _free_busy(self, rnd: int) -> None:
        """Forget the busy sites whose late reply the transport has pulled since."""
        if not self.busy:
            return
        for site in sorted(self.transport.pull_late() & set(self.busy)):
            self.store.log(f"round {rnd}: site {site} answered its round {self.busy.pop(site)} "
                           "task late (dropped); it can be drawn again")  # fmt: skip

    def _record_not_asked(self, rnd: int, sites: Sequence[str]) -> None:
        """A ``not asked`` row for each connected site the round gives no task: not
        expected to validate model ``rnd - 1`` (``tracking.curves``)."""
        for site in sites:
            why = None
            if site in self.busy:
                why = f"busy with its round {self.busy[site]} task (cut after quorum)"
            self.store.record_site_round(SiteRound(rnd, site, SiteRoundStatus.NOT_ASKED,
                                                   error=why))  # fmt: skip
        busy = [s for s in sites if s in self.busy]
        if busy:
            self.store.log(f"round {rnd}: not asked, still busy: {', '.join(busy)}")

    def _stop_rule(
        self, requests: dict[str, TaskRequest], records: Mapping[str, SiteRound]
    ) -> StopRule | None:
        """The round's straggler rule (``rounds.straggler``), None without a cut."""
        trainers = [s for s, r in requests.items() if r.epochs > 0]
        need = quorum_count(self.plan.straggler, len(trainers))
        if need is None:
            return None
        return StopRule(
            trainers, need, self.plan.straggler.grace_s,
            lambda s: s in records and records[s].status == SiteRoundStatus.OK, self.clock,
        )  # fmt: skip

    def _plateaued(self, trained: int) -> bool:
        """The plan's ``train.plateau`` rule after ``trained`` rounds (a synthesis run's
        pre-training rounds excluded); a stop is recorded and logged."""
        cfg = self.plan.train.plateau
        stop = plateau_stop(self.store, cfg, trained, self.plan.rounds,
                            first_round=self.pretrain_rounds)  # fmt: skip
        if stop is None:
            return False
        self.store.log(
            f"stopped after round {trained} of {self.plan.rounds}: the validation score has "
            f"not gained more than {cfg.min_delta:g} since model {stop.best_round} in "
            f"{cfg.rounds} validated round(s) (train.plateau)"
        )
        return True

    def _final_validation(self, weights: Weights, plan_sites: list[str], rnd: int) -> None:
        """Validate model ``rnd``, the last trained one, at every connected site."""
        plan = self.plan
        sites = self.transport.connected_sites(plan.site_names, 0.0) or plan_sites
        cross = self._cross_requests(rnd, sites)
        requests = {
            s: TaskRequest(
                round=rnd + 1,
                model_round=rnd,
                validate=True,
                epochs=0,
                seed=plan.seed,
                run_id=self.run_id,
                recipe=self.recipe,
                weights=weights,
                min_summary_cases=plan.privacy.min_summary_cases,
                transfer=plan.transfer.weights,
                privacy=plan.privacy,
                cross=cross.get(s, {}),
            )
            for s in sites
        }
        del cross
        self._set_live(rnd, LivePhase.FINAL_VALIDATION,
                       dict.fromkeys(sites, SiteActivity.VALIDATING))  # fmt: skip
        results: dict[str, Exchanged] = {}

        def on_result(site: str, ex: Exchanged) -> None:
            self._on_result(rnd + 1, site, ex)
            results[site] = ex

        self.transport.exchange(requests, plan.round_timeout_s, on_result)
        for site in requests:
            ex = results.get(site)
            if ex is not None and isinstance(ex.result, TaskReply) and ex.result.validation:
                try:
                    self._check_report(site, ex.result)
                except UpdateRejected as exc:
                    self.store.log(f"final validation: site {site} rejected: {exc}", "warning")
                    continue
                self.store.record_validation(rnd, site, ex.result.validation)
                self._record_cross(rnd + 1, site, ex.result, requests[site])
            elif ex is not None and isinstance(ex.result, TaskReply) and ex.result.validated:
                self.store.log(_withheld(site, rnd, ex.result.n_val))
            else:
                err = ex.result.error if ex and isinstance(ex.result, SiteFailure) else "no reply"
                self.store.log(f"final validation: site {site} failed: {err}", "warning")
        self._update_best()
        self._prune(rnd)
        self.store.meta.set_final_validated()
        shutil.rmtree(crossval_dir(self.run_dir, rnd), ignore_errors=True)

    # -- helpers ----------------------------------------------------------------------
    def _site_result(
        self, rnd: int, site: str, ex: Exchanged, weights: Weights, req: TaskRequest
    ) -> tuple[SiteRound, SiteUpdate | None]:
        trains = req.epochs > 0
        common = {
            "round": rnd, "site": site, "wall_s": ex.wall_s,
            "bytes_sent": ex.bytes_sent, "bytes_received": ex.bytes_received,
        }  # fmt: skip
        res = ex.result
        if isinstance(res, SiteFailure):
            self.store.log(f"round {rnd}: site {site} {res.status}: {res.error}", "warning")
            return SiteRound(status=res.status, error=res.error, **common), None  # type: ignore[arg-type]
        try:
            self._check_report(site, res)
        except UpdateRejected as exc:  # nothing of a lying reply is used, its counts neither
            self.store.log(f"round {rnd}: site {site} reply rejected: {exc}", "warning")
            return SiteRound(status=SiteRoundStatus.REJECTED, error=str(exc), **common), None  # type: ignore[arg-type]
        if res.privacy_spent is not None:
            self._record_privacy(rnd, site, res.privacy_spent)
        if res.validation:
            self.store.record_validation(rnd - 1, site, res.validation)
        elif res.validated:
            self.store.log(f"round {rnd}: {_withheld(site, rnd - 1, res.n_val)}")
        self._record_cross(rnd, site, res, req)
        base = {"n_train": res.n_train, "n_val": res.n_val, "train_loss": res.train_loss}
        extra = {
            "train_wall_s": res.train_wall_s,
            "val_wall_s": res.val_wall_s,
            "startup_s": res.startup_s,
            **({"worker": res.worker} if res.worker is not None else {}),
            **(res.compute.extra() if res.compute is not None else {}),  # device, precision
        }
        if res.lr is not None and math.isfinite(res.lr):  # the lr it trained with
            extra[LR_USED] = res.lr
        if not trains:
            return SiteRound(status=SiteRoundStatus.OK, extra=extra, **base, **common), None  # type: ignore[arg-type]
        if self.hidden is not None:  # its update joins the hidden sum, never the strategy alone
            try:
                if res.hidden is None:
                    raise UpdateRejected("no protected update in the reply (the plan's privacy "
                                         "hides single updates)")  # fmt: skip
                self.hidden.take(site, res.hidden, res.n_train)
            except UpdateRejected as exc:
                self.store.log(f"round {rnd}: site {site} update rejected: {exc}", "warning")
                rejected = SiteRoundStatus.REJECTED
                sr = SiteRound(status=rejected, error=str(exc), extra=extra, **base, **common)  # type: ignore[arg-type]
                return sr, None
            res.hidden = None
            return SiteRound(status=SiteRoundStatus.OK, extra=extra, **base, **common), None  # type: ignore[arg-type]
        try:
            if res.weights is None:
                raise UpdateRejected("no weights in the reply")
            check_update(res.weights, weights)
            self._check_frozen(rnd, site, res.weights, weights)
        except UpdateRejected as exc:
            self.store.log(f"round {rnd}: site {site} update rejected: {exc}", "warning")
            rejected = SiteRoundStatus.REJECTED
            sr = SiteRound(status=rejected, error=str(exc), extra=extra, **base, **common)  # type: ignore[arg-type]
            return sr, None
        upd = SiteUpdate(site, res.weights, res.n_train, res.train_loss or float("nan"),
                         res.optimizer_state)  # fmt: skip
        res.weights = res.optimizer_state = None  # the update holds them now, nothing else
        return SiteRound(status=SiteRoundStatus.OK, extra=extra, **base, **common), upd  # type: ignore[arg-type]

    def _record_privacy(self, rnd: int, site: str, spent: PrivacySpent) -> None:
        """The ε a site says it has spent, as the accountant computes it from the site's
        numbers (sigma, steps, sample rate, δ): a different claimed ε is a warning, and the
        ledger keeps the recomputed one."""
        from fedseg.privacy.accounting import epsilon  # dp-accounting: the privacy extra

        eps = epsilon(spent.sigma, spent.steps, spent.sample_rate, spent.delta, spent.accountant)
        if not math.isclose(eps, spent.epsilon, rel_tol=1e-6, abs_tol=1e-9):
            self.store.log(f"round {rnd}: site {site} reports ε={spent.epsilon:.6g}, its "
                           f"numbers give ε={eps:.6g}; recorded {eps:.6g}", "warning")  # fmt: skip
        self.store.record_privacy(rnd, site, spent.model_copy(update={"epsilon": eps}))

    def _prepare_hidden(
        self, rnd: int, weights: Weights, requests: dict[str, TaskRequest]
    ) -> tuple[dict[str, TaskRequest], dict[str, SiteFailure]]:
        """The hidden sum's steps before training (``hidden_sum.HiddenSum.prepare``): the
        training sites' requests with their part of the protocol; a training site that
        failed a step gets no request this round (its failure is returned)."""
        assert self.hidden is not None
        trainers = [s for s, r in requests.items() if r.epochs > 0]
        secure = self.hidden.prepare(rnd, trainers, dict(self.declared), weights,
                                     self.transport) if trainers else {}  # fmt: skip
        out, refused = {}, {}
        for site, req in requests.items():
            if req.epochs == 0:
                out[site] = req
            elif site in secure:
                part = secure[site]
                if self.site_dp is not None:  # the sum its noise share is sized for
                    part = {**part, NOISE_SHARE_SITES: noise_share_sites(self.plan, len(trainers))}
                out[site] = replace(req, secure=part)
            else:
                refused[site] = SiteFailure(
                    SiteRoundStatus.FAILED, "did not complete the privacy protocol's steps "
                    "before training; sits this round out",
                )  # fmt: skip
        return out, refused

    def _reveal(self, rnd: int, weights: Weights) -> tuple[list[SiteUpdate], list[str]]:
        """The hidden sum's last steps: one update, the case-weighted mean of the included
        sites (``hidden_sum.SECURE_SUM``), and the sites in it; none when too few."""
        assert self.hidden is not None
        mean = self.hidden.combine(rnd, weights, self.transport)
        if mean is None:
            return [], []
        return [SiteUpdate(SECURE_SUM, mean.weights, mean.n_train, float("nan"))], mean.sites

    def _check_report(self, site: str, res: TaskReply) -> None:
        """``bounds.check_report`` against the site's declaration (plan ``bounds``). A site
        whose hello declared nothing (its data folder did not read then) declares with its
        first reply: those counts are then fixed like a hello's."""
        if not self.plan.bounds.enabled:
            return
        if site not in self.declared:
            self._declare(site, DeclaredCases(n_train=res.n_train, n_val=res.n_val),
                          "its first reply")  # fmt: skip
        check_report(res.n_train, res.n_val, res.validation, self.declared.get(site),
                     Task(self.plan.task))  # fmt: skip

    def _bound_norms(
        self, rnd: int, weights: Weights, updates: list[SiteUpdate], norms: dict[str, float],
        records: dict[str, SiteRound],
    ) -> list[SiteUpdate]:  # fmt: skip
        """The updates within the round's norm bounds (plan ``bounds``), in units of the
        round's lower median change: one over ``reject_norm_ratio`` is ``rejected`` (its
        record says so), one over ``update_norm_ratio`` is clipped to that (its record says
        to what). A round whose median change is 0 has no scale and is left as it is."""
        b = self.plan.bounds
        median = norm_bound(list(norms.values()), 1.0) if updates else 0.0
        if not (b.enabled and median > 0):
            return updates
        out = []
        for u in updates:
            ratio = norms[u.site] / median
            if b.reject_norm_ratio is not None and ratio > b.reject_norm_ratio:
                why = (
                    f"update norm {norms[u.site]:.3g} is {ratio:.3g} x the round's median "
                    f"change, over bounds.reject_norm_ratio {b.reject_norm_ratio:g}"
                )
                self.store.log(f"round {rnd}: site {u.site} update rejected: {why}", "warning")
                records[u.site] = _with(records[u.site], status=SiteRoundStatus.REJECTED,
                                        error=why, update_norm=norms[u.site])  # fmt: skip
                continue
            if b.update_norm_ratio is not None and ratio > b.update_norm_ratio:
                bound = b.update_norm_ratio * median
                self.store.log(f"round {rnd}: site {u.site} update clipped from norm "
                               f"{norms[u.site]:.3g} to {bound:.3g}", "warning")  # fmt: skip
                u = _with(u, weights=clip_update(u.weights, weights, bound, norms[u.site]))
                sr = records[u.site]
                records[u.site] = _with(sr, extra={**(sr.extra or {}), "clipped_to": bound})
            out.append(u)
        return out

    # -- cross-site validation ------------------------------------------------------------
    def _clean_crossval(self, keep: int) -> None:
        """Remove the parked folders of every round but ``keep`` (the last done round: its
        models are the ones the resumed round validates), and in ``keep`` a parked model
        that is not whole (parked without an fsync: a machine crash may have torn it; that
        model's cross rows are lost, nothing else)."""
        root = self.run_dir / CROSSVAL_DIR
        if not root.is_dir():
            return
        for folder in root.iterdir():
            if folder != crossval_dir(self.run_dir, keep):
                shutil.rmtree(folder, ignore_errors=True)
                self.store.log(f"cross-site validation: removed the stale {folder.name}")
                continue
            for path in sorted(folder.rglob("*.npz")):  # the models and without/
                if not arrays_intact(path):
                    path.unlink(missing_ok=True)
                    self.store.log(f"cross-site validation: {folder.name}/{path.name} is not "
                                   "whole (torn by a crash); that model is not validated",
                                   "warning")  # fmt: skip

    def _park_cross(
        self, rnd: int, arrived: dict[str, SiteUpdate], used: list[str],
        updates: list[SiteUpdate], new: Weights,
    ) -> None:  # fmt: skip
        """Keep round ``rnd``'s chosen local models (of the sites whose update was used) for
        the next round's cross-site validation (``cross_site.kept_models``) and, with
        ``leave_one_out`` under a mean plan (``Strategy.mean_weights``), beside each the
        round's model without that site's update (``without/<site>.npz``): the mean
        ``new`` with the site's update taken out (``aggregation.without_one``)."""
        if self.cross is None or not cross_site.is_cross_round(self.cross, rnd):
            return
        trained = [s for s in used if s in arrived]
        keep = cross_site.kept_models(self.cross, rnd, trained, self.plan.site_names)
        folder = crossval_dir(self.run_dir, rnd)
        shutil.rmtree(folder, ignore_errors=True)
        for site in keep:  # no fsync each: a torn one is dropped on restart
            save_arrays(folder / f"{site}.npz", arrived[site].weights, sync=False)
        coefficients = self.strategy.mean_weights(updates) if len(updates) > 1 else None
        if not self.cross.leave_one_out or coefficients is None:
            return
        total = float(sum(coefficients))
        mine = {u.site: (u, c) for u, c in zip(updates, coefficients, strict=True)}
        for site in keep:
            if site in mine and mine[site][1] < total:
                upd, c = mine[site]
                save_arrays(folder / WITHOUT_DIR / f"{site}.npz",
                            without_one(new, total, upd.weights, c), sync=False)  # fmt: skip

    def _cross_requests(
        self, model_round: int, sites: list[str]
    ) -> dict[str, dict[str, Mapping[str, np.ndarray]]]:
        """Each evaluator's share of round ``model_round``'s parked local models (``cross``
        of its request): ``{site: {cross_label: weights}}``, each model one mapping that
        reads its file array by array (``ArraysOnDisk``: the aggregator never holds them
        all), the same object in every request that carries it; empty when none are
        parked."""
        folder = crossval_dir(self.run_dir, model_round)
        if self.cross is None or not folder.is_dir():
            return {}
        models = sorted(p.stem for p in folder.glob("*.npz"))
        floor = self.plan.privacy.min_summary_cases
        evals = cross_site.evaluators(self.declared, sites, floor)
        shares = cross_site.assign(models, evals, self.cross.evaluators_per_model,
                                   self.plan.seed, model_round)  # fmt: skip
        # model site -> {label: arrays read as needed}: its local model and, when parked,
        # the round's model without it
        sent: dict[str, dict[str, Mapping[str, np.ndarray]]] = {}
        for m in sorted({m for ms in shares.values() for m in ms}):
            sent[m] = {cross_label(m, model_round): ArraysOnDisk(folder / f"{m}.npz")}
            if (path := folder / WITHOUT_DIR / f"{m}.npz").is_file():
                sent[m][cross_label(m, model_round, without=True)] = ArraysOnDisk(path)
        n_without = sum(len(models) - 1 for models in sent.values())
        self.store.log(
            f"cross-site validation: {len(sent)} local model(s) of round {model_round} "
            f"({n_without} with the round's model without the site) sent to "
            f"{len(shares)} site(s), each model to up to {self.cross.evaluators_per_model}"
        )
        return {e: {label: arrays for m in ms for label, arrays in sent[m].items()}
                for e, ms in shares.items()}  # fmt: skip

    def _record_cross(self, rnd: int, site: str, res: TaskReply, req: TaskRequest) -> None:
        """The reply's cross-site and home summaries as ``cross_validation`` rows, after
        ``bounds.check_cross`` (a failed check drops them, with a logged reason)."""
        if not res.cross and not res.home:
            return
        if self.plan.bounds.enabled:
            try:
                check_cross(res.cross, res.home, self.declared.get(site), set(req.cross),
                            req.home)  # fmt: skip
            except UpdateRejected as exc:
                self.store.log(f"round {rnd}: site {site} cross-site summaries rejected: "
                               f"{exc}", "warning")  # fmt: skip
                return
        rows = []
        parts = [(label, by_region) for label, by_region in res.cross.items()
                 if label in req.cross]  # fmt: skip
        if res.home and req.home:
            parts.append((cross_label(site, rnd), res.home))
        for label, by_region in parts:
            model_site, model_round, without = parse_cross_label(label)
            home = model_site == site
            ref = model_round - 1 if home else model_round
            for region, by_metric in by_region.items():
                for metric, summary in by_metric.items():
                    if summary.n > 0:
                        rows.append(CrossRow(rnd, model_site, model_round, site, ref, region,
                                             without_metric(metric) if without else metric,
                                             summary))  # fmt: skip
        self.store.record_cross(rows)

    def _on_result(self, rnd: int, site: str, ex: Exchanged) -> None:
        res = ex.result
        state = SiteActivity(res.status) if isinstance(res, SiteFailure) else SiteActivity.DONE
        self._set_live(self.live.round, self.live.phase, {**self.live.sites, site: state})

    def _set_live(self, rnd: int, phase: LivePhase, states: dict[str, SiteActivity]) -> None:
        self.live = LiveState(round=rnd, phase=phase, sites=states)
        self.store.meta.set_live(self.live)

    def _check_frozen(self, rnd: int, site: str, update: Weights, weights: Weights) -> None:
        """``modality-fedavg``: raise ``UpdateRejected`` unless every array of a group the
        site does not train this round is bit for bit the global array as the site received
        it (after the transfer's round trip)."""
        if not isinstance(self.strategy, ModalityFedAvg):
            return
        from fedseg.model.generator import KERNEL, SHARED, param_group

        frozen = set(self.strategy.frozen_groups(site, rnd))
        if not frozen:
            return
        if self._received is None or self._received[0] != rnd:
            self._received = (rnd, round_trip(weights, self.plan.transfer.weights)[0])
        received = self._received[1]
        for k, ref in received.items():
            g = param_group(k)
            if g not in frozen or _same_bits(update[k], ref):
                continue
            ref_mod = self.strategy.reference
            if self.strategy.phase(rnd) == PRETRAIN:
                what = f"{KERNEL}.* and bank.{ref_mod}.*"
                raise UpdateRejected(f"{_pattern(g)}: changed in pre-training, which trains "
                                     f"only {what}")  # fmt: skip
            if g == KERNEL:
                raise UpdateRejected(f"{KERNEL}.*: the frozen kernel changed")
            if g != SHARED:
                m = g.partition(":")[2]
                raise UpdateRejected(f"{_pattern(g)}: changed by a site that declared no {m}")

    def _record_groups(
        self, rnd: int, updates: Sequence[SiteUpdate], records: dict[str, SiteRound]
    ) -> None:
        """Each site's record: the round's phase and the groups its update was averaged
        into; the run log: per group, the sites it was averaged over."""
        assert isinstance(self.strategy, ModalityFedAvg) and isinstance(self.kind, SynthesisKind)
        phase = self.strategy.phase(rnd)
        by_group = self.strategy.contributors(rnd, updates)
        for site, sr in records.items():
            groups = sorted(g for g, sites in by_group.items() if site in sites)
            records[site] = _with(sr, extra={**(sr.extra or {}), "phase": phase,
                                             "averaged_into": groups})  # fmt: skip
        self.kind.add_trained(g.partition(":")[2] for g in by_group if g.startswith("bank:"))
        parts = [f"{g} averaged over {', '.join(sites)}" for g, sites in sorted(by_group.items())]
        self.store.log(f"round {rnd} ({phase}): " + ("; ".join(parts) or "nothing averaged"))

    def _save_model(self, model_round: int, weights: Weights) -> None:
        path = model_path(self.run_dir, model_round)
        meta = {"run": self.run_id, "model_round": model_round, "plan": self.plan.name}
        self.kind.save_model(path, weights, meta)
        state = self.strategy.state_dict()
        if state:
            save_arrays(strategy_state_path(path), state)
        self.store.record_checkpoint(model_round, path)

    def _update_best(self) -> None:
        """Make ``best.pt`` and meta ``best`` the store's best round (``selection.best_round``),
        recomputed over the whole store so ``best.pt`` is always ``select --singlet``'s model."""
        path, best = self.run_dir / BEST_MODEL, self.store.meta.best()
        pick = best_round(self.store)
        if pick is None:
            if best is not None or path.exists():
                path.unlink(missing_ok=True)
                self.store.meta.set_best(None)
            return
        model_round, score = pick
        if best is None or best.model_round != model_round or not path.is_file():
            tmp = self.run_dir / (BEST_MODEL + ".tmp")
            shutil.copyfile(model_path(self.run_dir, model_round), tmp)
            tmp.replace(path)
        elif (best.score, best.n_val) == (score.mean, score.n):
            return
        self.store.meta.set_best(
            BestModel(model_round=model_round, score=score.mean, n_val=score.n, time=time.time())
        )

    def _prune(self, last: int) -> None:
        """Delete the round models the plan's ``retention`` no longer keeps after round
        ``last`` (done); the best rounds are kept (``rounds.retention``)."""
        prune_models(self.run_dir, self.store, self.plan.retention, last, self.kind.groups())


def _withheld(site: str, model_round: int, n_val: int) -> str:
    return (
        f"site {site} validated model {model_round} on {n_val} case(s), too few to send a "
        "summary (privacy.min_summary_cases): no validation numbers for it"
    )


def record_failure(store: RunStore, run_dir: Path, exc: BaseException) -> None:
    """Status ``failed`` with the cause of ``exc`` (``run_folder.cause_of``: a full disk or
    an unwritable folder named as such, a plan error, the federation's). A store that cannot
    be written (the disk is full) is left as it is: the launcher or ``status`` says more."""
    with contextlib.suppress(sqlite3.Error, OSError):
        store.meta.set_failed(cause_of(exc, run_dir, store.meta.round_bytes() or 0))
        store.log(f"federation failed: {exc}", "error")


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Same dtype, shape and bytes (``-0.0`` differs from ``0.0``; NaNs are rejected before)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def _pattern(group: str) -> str:
    """``bank:flair`` -> ``bank.flair.*``; ``kernel`` -> ``kernel.*``."""
    return group.replace(":", ".") + ".*"


def _remove(spool: Spool | None) -> None:
    if spool is not None:
        spool.remove()


def _park(spool: Spool, upd: SiteUpdate) -> SiteUpdate:
    """``upd`` with its weights (and optimizer state) written to ``spool`` and read back
    from there as they are used; the arrays in memory are no longer referenced."""
    state = spool.park(upd.optimizer_state) if upd.optimizer_state else upd.optimizer_state
    return _with(upd, weights=spool.park(upd.weights), optimizer_state=state)


def _with(value: _D, **changes: Any) -> _D:
    """A copy of the frozen dataclass ``value`` with ``changes``."""
    return replace(value, **changes)  # type: ignore[type-var]
