"""A site's side of a round, engine-free: validate the global model, train, summarize.

Per-case validation values stay on the site: they go to a site-local run store inside
the site's workspace (default ``<data>/.fedseg/<run_id>/``), next to the site's Adam state,
which is carried from round to round locally (``optimizer_<round>.npz``: at most two
copies, the latest and the one it started from) and never sent.
What leaves is ``disclosure``'s: summaries and a training loss over at least the floor's
number of cases, and, when the task fails, ``TaskFailed``'s category and scrubbed line;
the full traceback goes to the site's console and its log, ``<workspace>/site.log``.
A site trains round r at the lr of the plan's schedule (``train.lr_schedule.round_lr`` of
``TaskRequest.round`` and ``planned_rounds``) and says which lr that was (``TaskReply.lr``).
The site's prepared training cases are kept beside the workspaces, in
``<data>/.fedseg/cache/`` (``train.case_cache``), from round to round and run to run.
Under DP-SGD (plan ``privacy.dp.level: case``) the workspace also holds the site's privacy
ledger, ``privacy.json``, the authority for its budget (``case_budget``): a training task
that would exceed it fails with category ``privacy`` before any work; the reply says what
the site has spent in total (``TaskReply.privacy_spent``) and carries no training loss.

A ``task: synthesis`` request (its recipe holds the synthesis section:
``tasks.recipe_synthesis``) is the generator's work instead: ``synth.validate.validate_bank``
and ``synth.train.train_bank`` on the modalities the site has (``data.site_config``: all but
its ``absent_modalities``), with the phase, modality and steps the request names
(``TaskRequest.synth_step``). The site's discriminators and the generator's Adam state stay
in its workspace (``train_bank``'s ``discriminators_<round>.npz``), never in a reply.

Cross-site validation (``tasks``; plan ``cross_site``): the other sites' local models a
request carries (``TaskRequest.cross``) are validated with the received model on the same
cases, each case read once (``train.validate.validate_models``), and after training the
site's own local model is validated on its cases when asked (``TaskRequest.home``); what
leaves is, per model, ``dice`` and ``dice_diff`` (paired per case with the received model:
``model.evaluate.summarize_paired``) summaries over at least the floor's number of cases,
as for validation; the per-case values go to the site's own store under the model's
``cross_label``.

The site's data (its cases, split, prepared training cases and validation volumes) come
from the process's warm cache (``train.warm.SiteCache``): a process that serves many tasks
reads them once, and again only when a case or the split changed on disk; the Adam state a
task saved is held there too, so the site's next task in the process does not read its
file back (the file is still written first, and read when it changed or the process is new).
A reply names the process that did the work (``TaskReply.worker``: its pid).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fedseg.data.splits import Split
from fedseg.errors import FedsegError
from fedseg.federation.rounds.disclosure import (
    MIN_SUMMARY_CASES,
    ErrorCategory,
    SiteError,
    categorize,
    public_error,
    releasable,
    summary_floor,
)
from fedseg.federation.rounds.site_queries import SiteContext, site_workspace
from fedseg.federation.rounds.tasks import (
    TaskReply,
    TaskRequest,
    recipe_from_json,
    recipe_synthesis,
)
from fedseg.federation.rounds.update_protection import protect_update, protects
from fedseg.model.compute import ComputeConfig, ComputeOverrides, compute_used
from fedseg.model.config import NetworkConfig
from fedseg.model.evaluate import CaseResult, summarize_cases, summarize_paired
from fedseg.model.summary import Summary
from fedseg.model.weights import load_arrays, save_arrays
from fedseg.run_folder import ComputeUsed, cross_label, parse_cross_label
from fedseg.synth.config import SynthesisConfig
from fedseg.tracking.store import RunStore
from fedseg.train.config import TrainConfig
from fedseg.train.local import OptimizerState, train_local
from fedseg.train.lr_schedule import round_lr
from fedseg.train.validate import validate_cases, validate_models
from fedseg.train.warm import SiteCache, WarmSite, process_cache

if TYPE_CHECKING:  # Opacus is imported only when a plan asks for DP-SGD
    from fedseg.federation.rounds.case_budget import CaseLedger

SITE_LOG = "site.log"
#: the received model's key among the models ``validate_models`` runs (never a cross label)
_GLOBAL = "global"


class TaskFailed(FedsegError):
    """A site's task failed; ``str()`` is the one line that may leave the site
    (``disclosure.public_error``: category, fixed text, exception type; no path, case id or
    exception message). The full traceback is in the site's log."""

    def __init__(self, category: ErrorCategory, line: str) -> None:
        super().__init__(line)
        self.category = category
        self.line = line


def site_log(ws: Path | None, text: str) -> None:
    """One entry of the site's own log: its console (stderr) and ``<ws>/site.log``."""
    print(f"[fedseg site] {text}", file=sys.stderr, flush=True)
    if ws is None:
        return
    with contextlib.suppress(OSError), (ws / SITE_LOG).open("a") as fh:
        fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")


class _Step:
    """Where ``run_task`` is (the category of a failure there) and what it has learnt that
    must not leave the site (paths, case ids)."""

    def __init__(self, data: Path) -> None:
        self.phase = ErrorCategory.DATA
        self.secrets: list[str] = [str(data)]
        self.ws: Path | None = None


def run_task(
    site: str,
    data: Path,
    req: TaskRequest,
    workspace: Path | None = None,
    min_summary_cases: int = MIN_SUMMARY_CASES,
    compute: ComputeOverrides | None = None,
    ctx: SiteContext | None = None,
    sites: SiteCache | None = None,
) -> TaskReply:
    """Do ``req`` on the site's data folder: validate (per-case values kept locally, summaries
    over at least ``summary_floor(req.min_summary_cases, min_summary_cases)`` cases
    returned), then train on the training split and return the new weights.

    ``min_summary_cases`` is the site's own floor; ``compute`` its machine's choices over the
    recipe's ``train.compute`` (``fedseg site start --device/--precision``), with which it
    validates and trains; the reply says which device and precision that was
    (``TaskReply.compute``). ``ctx``: the site's private protocol state and credentials,
    with which the update is protected as the plan's ``privacy`` asks
    (``update_protection``; default: a fresh, empty one). ``sites``: where the site's data
    stay warm between tasks (default: this process's ``train.warm.process_cache``). Any
    failure is logged in full at the site and raised as ``TaskFailed``, whose line is all
    that may travel."""
    step = _Step(Path(data))
    try:
        ctx = ctx if ctx is not None else SiteContext(site, Path(data), workspace)
        sites = sites if sites is not None else process_cache()
        return _run(site, Path(data), req, workspace, min_summary_cases, compute, step, ctx,
                    sites)  # fmt: skip
    except Exception as exc:
        line = public_error(exc, step.phase, step.secrets)
        site_log(
            step.ws,
            f"round {req.round}: task failed; the coordinator is told only: {line}\n"
            + "".join(traceback.format_exception(exc)).rstrip(),
        )
        raise TaskFailed(categorize(exc, step.phase), line) from None


def _run(
    site: str, data: Path, req: TaskRequest, workspace: Path | None, site_min: int,
    compute: ComputeOverrides | None, step: _Step, ctx: SiteContext, sites: SiteCache,
) -> TaskReply:  # fmt: skip
    ws = site_workspace(data, req.run_id, workspace)
    step.secrets += [str(data.resolve()), str(ws)]
    if workspace is not None or data.is_dir():  # never create a missing data folder
        ws.mkdir(parents=True, exist_ok=True)
        step.ws = ws
    if not data.is_dir():
        raise SiteError(
            ErrorCategory.DATA,
            "the site's data folder is missing",
            f"site {site}: data folder {data} not found or not a folder",
        )
    warm = sites.get(data)
    split = warm.split
    step.secrets += [c.case_id for c in (*split.train, *split.val)]
    step.phase = ErrorCategory.INTERNAL
    network, train = recipe_from_json(req.recipe)
    train = train.with_compute(compute)  # the plan's defaults, this machine's choices
    sites.budget_mb = train.cache_mb  # the process's budget: the latest task's
    ledger: CaseLedger | None = None
    if req.privacy.dp.level == "case":  # DP-SGD: budget first, a refusal costs nothing
        step.phase = ErrorCategory.PRIVACY
        train, ledger = _case_dp(ws, req, network, train, len(split.train))
    floor = summary_floor(req.min_summary_cases, site_min)
    reply = TaskReply(site=site, n_train=len(split.train), n_val=len(split.val),
                      compute=_compute_used(train.compute), worker=os.getpid())  # fmt: skip
    synthesis = recipe_synthesis(req.recipe)
    if synthesis is not None:
        _synthesis_work(site, data, req, ws, step, floor, split, synthesis, reply)
        return reply
    reference: list[CaseResult] = []  # the received model's per-case values
    if req.validate and split.val:
        step.phase = ErrorCategory.VALIDATION
        cross = req.cross if len(split.val) >= floor else {}
        if req.cross and not cross:
            site_log(ws, f"round {req.round}: {len(split.val)} validation case(s), fewer than "
                         f"{floor}: the other sites' models were not validated")  # fmt: skip
        others: dict[str, list[CaseResult]] = {}

        def validate() -> list[CaseResult]:
            if not cross:
                return validate_cases(network, train, req.weights, split.val, load=warm.read)
            per = validate_models(network, train, {_GLOBAL: req.weights, **cross}, split.val,
                                  dice_only=set(cross), load=warm.read)  # fmt: skip
            others.update((k, v) for k, v in per.items() if k != _GLOBAL)
            return per[_GLOBAL]

        reference = _validate(site, req, ws, floor, reply, "model", validate)
        _cross_summaries(site, ws, floor, others, reference, reply)
    if req.epochs > 0:
        step.phase = ErrorCategory.TRAINING
        _require_training_cases(site, data, split)
        # Optimizer treatment of the plan (rounds.optimizer_state).
        mode = req.optimizer_mode
        state: OptimizerState | None = None
        if mode == "average":
            state = req.optimizer_state
        elif mode == "keep-local":
            state = _load_optimizer(ws, req.round, warm)
        dp = ledger.case_dp(req.privacy.dp.max_physical_batch) if ledger is not None else None
        lr = round_lr(train.lr, train.lr_schedule, req.round, req.planned_rounds)
        train = train.model_copy(update={"lr": lr})  # the plan's schedule, this round
        t0 = time.perf_counter()
        store = warm.store(train)  # prepared on the site's first training task
        prep_s = time.perf_counter() - t0
        result = train_local(
            network, train, req.weights, state, store, req.epochs,
            seed=req.seed, proximal_mu=req.proximal_mu, dp=dp, steps=req.steps or None,
        )  # fmt: skip
        if mode == "keep-local":
            _save_optimizer(ws, req.round, result.optimizer_state, warm)
        elif mode == "average":
            reply.optimizer_state = result.optimizer_state
        reply.weights = result.weights
        reply.n_train = result.n_train
        # a loss over fewer cases than the floor is as telling as a summary of them
        reply.train_loss = result.train_loss if result.n_train >= floor else None
        reply.train_wall_s = prep_s + result.wall_s
        reply.lr = result.lr
        if req.home and reference and len(split.val) >= floor:
            step.phase = ErrorCategory.VALIDATION
            t0 = time.perf_counter()
            own = validate_cases(network, train, result.weights, split.val, ("dice",),
                                 load=warm.read)  # fmt: skip
            mine = {cross_label(site, req.round): own}
            reply.home = _cross_summaries(site, ws, floor, mine, reference, None)
            reply.val_wall_s += time.perf_counter() - t0
            step.phase = ErrorCategory.TRAINING
        if ledger is not None:  # spent once the update may leave, even if this reply is lost
            _spend(ws, req.round, ledger, reply)
        if protects(req):
            step.phase = ErrorCategory.PRIVACY
            protect_update(ctx, req, reply)
    return reply


def _validate(
    site: str, req: TaskRequest, ws: Path, floor: int, reply: TaskReply, what: str,
    validate: Callable[[], list[CaseResult]],
) -> list[CaseResult]:  # fmt: skip
    """Validate the received ``what`` (model or generator) on the site's validation cases:
    per-case values into the site's own store, summaries over at least ``floor`` cases into
    ``reply`` (fewer: only that it validated); returns the per-case values."""
    t0 = time.perf_counter()
    per_case = validate()
    with RunStore(ws) as local:
        for c in per_case:
            local.record_case_metrics(req.model_round, site, c.case_id, c.metrics)
    reply.validation = releasable(summarize_cases(per_case), floor)
    reply.validated = True
    reply.val_wall_s = time.perf_counter() - t0
    if not reply.validation:
        site_log(ws, f"round {req.round}: validated {what} {req.model_round} on "
                     f"{len(per_case)} case(s), fewer than {floor}: no numbers sent")  # fmt: skip
    return per_case


def _cross_summaries(
    site: str, ws: Path, floor: int, models: dict[str, list[CaseResult]],
    reference: list[CaseResult], reply: TaskReply | None,
) -> dict[str, dict[str, Summary]]:  # fmt: skip
    """Cross-site (or home) validation of ``models`` (``cross_label`` -> per-case values),
    paired per case with the received model's ``reference`` values: the per-case values
    into the site's own store (site column: the label, model round: the label's round), the
    summaries over at least ``floor`` cases into ``reply.cross`` (when given); returns the
    last model's releasable summaries."""
    out: dict[str, dict[str, Summary]] = {}
    if not models:
        return out
    with RunStore(ws) as local:
        for label, per_case in models.items():
            model_round = parse_cross_label(label).round
            for c in per_case:
                local.record_case_metrics(model_round, label, c.case_id, c.metrics)
            out = releasable(summarize_paired(per_case, reference), floor)
            if reply is not None and out:
                reply.cross[label] = out
    return out


def _require_training_cases(site: str, data: Path, split: Split) -> None:
    if not split.train:
        raise SiteError(
            ErrorCategory.DATA,
            "the site has no training cases",
            f"site {site}: no training cases in {data}",
        )


def _synthesis_work(
    site: str, data: Path, req: TaskRequest, ws: Path, step: _Step, floor: int, split: Split,
    cfg: SynthesisConfig, reply: TaskReply,
) -> None:  # fmt: skip
    """The generator's work of a ``task: synthesis`` request, into ``reply``: validate the
    received generator on the site's modalities (per-case values kept locally, summaries
    over at least ``floor`` cases sent), then train what ``req.synth_step`` names."""
    from fedseg.data.site_config import read_site_config
    from fedseg.synth import train as synth_train
    from fedseg.synth import validate as synth_validate

    step.phase = ErrorCategory.DATA
    have = read_site_config(data).present
    present = [m for m in cfg.generator.modalities if m in have]
    if req.validate and split.val:
        step.phase = ErrorCategory.VALIDATION

        def run() -> list[CaseResult]:
            return synth_validate.validate_bank(cfg, req.weights, split.val, present)

        _validate(site, req, ws, floor, reply, "generator", run)
    if req.epochs > 0:
        step.phase = ErrorCategory.TRAINING
        _require_training_cases(site, data, split)
        job = req.synth_step
        if job is None:
            line = "a synthesis training request without its phase"
            raise SiteError(ErrorCategory.INTERNAL, line, line)
        result = synth_train.train_bank(
            cfg, req.weights, split.train, present, phase=job.phase, modality=job.modality,
            steps=job.steps, seed=req.seed, workspace=ws, rnd=req.round,
        )  # fmt: skip
        reply.weights = result.weights
        reply.n_train = result.n_train
        reply.train_loss = result.train_loss if result.n_train >= floor else None
        reply.train_wall_s = result.wall_s
        site_log(ws, f"round {req.round}: trained the generator ({job.phase}, "
                     f"{job.steps} steps, modalities {', '.join(present)})")  # fmt: skip


def _case_dp(
    ws: Path, req: TaskRequest, network: NetworkConfig, train: TrainConfig, n_train: int
) -> tuple[TrainConfig, CaseLedger | None]:
    """The plan's ``privacy.dp.level: case`` at this site: the recipe as DP-SGD runs it (fp32,
    not compiled: one line in the site's log when that changes the machine's choice) and,
    for a training task, the ledger after this round's steps (``case_budget``; a SiteError
    with one line when the recipe cannot be trained privately or the budget would be
    exceeded). Validation-only tasks spend nothing."""
    try:
        from fedseg.federation.rounds import case_budget
        from fedseg.train.dp import dp_compute
    except ImportError:
        line = ("privacy.dp.level case needs the privacy extra at the site (opacus, "
                "dp-accounting): pip install 'fedseg[privacy]'")  # fmt: skip
        raise SiteError(ErrorCategory.PRIVACY, line, line) from None
    compute, line = dp_compute(train.compute)
    if line is not None:
        site_log(ws, line)
        train = train.model_copy(update={"compute": compute})
    if req.epochs <= 0 or n_train == 0:  # no training: nothing to spend (or fails as DATA)
        return train, None
    case_budget.check_recipe(network, train)
    return train, case_budget.plan_round(ws, req, train, n_train)


def _spend(ws: Path, rnd: int, ledger: CaseLedger, reply: TaskReply) -> None:
    """Write the ledger after training and say in the reply what the site has spent.
    The training loss is not sent: it is computed from the training cases without noise,
    outside the DP guarantee."""
    from fedseg.federation.rounds.case_budget import write_ledger

    write_ledger(ws, ledger)
    reply.privacy_spent = ledger.spent()
    reply.train_loss = None
    site_log(ws, f"round {rnd}: DP-SGD, ε={ledger.epsilon:.4g} of {ledger.budget:g} spent at "
                 f"δ={ledger.delta:g} after {ledger.steps} steps (sigma={ledger.sigma:.4g}, "
                 f"q={ledger.sample_rate:.4g})")  # fmt: skip


def _compute_used(config: ComputeConfig) -> ComputeUsed:
    """What the site computes with: its device resolved here (a GPU the recipe or the site's
    ``--device`` asks for and this machine lacks fails the task with that line: it names a
    device, nothing of the site's data)."""
    try:
        return compute_used(config)
    except FedsegError as exc:
        raise SiteError(ErrorCategory.INTERNAL, str(exc), str(exc)) from None


def _optimizer_files(ws: Path) -> dict[int, Path]:
    out = {}
    for p in ws.glob("optimizer_*.npz"):
        with contextlib.suppress(ValueError):
            out[int(p.stem.split("_")[1])] = p
    return out


def _load_optimizer(ws: Path, rnd: int, warm: WarmSite | None = None) -> OptimizerState | None:
    """Adam state after the latest round before ``rnd`` (a redone round, after the aggregator
    was restarted, starts from the same state as the first attempt); from ``warm`` when it
    holds that file unchanged (``train.warm``: the arrays it was saved with)."""
    files = {r: p for r, p in _optimizer_files(ws).items() if r < rnd}
    if not files:
        return None
    path = files[max(files)]
    return warm.optimizer(path) if warm is not None else load_arrays(path)


def _save_optimizer(
    ws: Path, rnd: int, state: OptimizerState, warm: WarmSite | None = None
) -> None:
    """Save the state after round ``rnd`` and prune the older copies: a site keeps at most
    two, the new one and the one round ``rnd`` started from (the site's latest before
    ``rnd``, which is ``rnd - 1`` unless the site sat rounds out: cyclic or sampled plans).
    That is all a redone round needs (the aggregator resumes at most the round after its
    last done one; ``_load_optimizer``), the same bound as the aggregator's model
    retention with ``keep_last: 1``; older copies are deleted."""
    started_from = max((r for r in _optimizer_files(ws) if r < rnd), default=None)
    path = ws / f"optimizer_{rnd:04d}.npz"
    if warm is not None:  # held for the site's next task in this process
        warm.save_optimizer(path, state)
    else:
        save_arrays(path, state)
    for r, p in _optimizer_files(ws).items():
        if r != rnd and r != started_from:
            p.unlink(missing_ok=True)
