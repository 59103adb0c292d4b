"""The federation unit: train one site's model for some epochs (or steps), as a plain function.

Nothing global: the network, optimizer and data come in as arguments and go out in
``LocalResult``; weights and Adam state are plain named numpy arrays (``Weights``) so that
federation plans can average, keep or reset them, and the same arrays are what is sent,
averaged and saved (``model.weights.save_arrays``).

Where and how the steps compute is the recipe's ``train.compute`` (a machine overrides it
in the ``TrainConfig`` it passes): the network and Adam state on its device, batches
copied there asynchronously (from pinned memory on CUDA), the forward pass under autocast,
the loss in float32 (a Dice sum over a 128^3 patch in bf16 loses precision), a gradient
scaler for fp16 and float32 master weights. Whatever the device and precision, what comes
back is float32 numpy on the host; on the CPU in fp32 the steps are exactly today's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from torch import nn

from fedseg.data.cases import Case
from fedseg.model.compute import (
    ComputeConfig,
    autocast,
    describe_device,
    grad_scaler,
    place_network,
    to_device,
)
from fedseg.model.config import NetworkConfig
from fedseg.model.losses import mirrored_dice_loss
from fedseg.model.optimizer_state import MOMENTS as MOMENTS
from fedseg.model.optimizer_state import STEP as STEP
from fedseg.model.optimizer_state import OptimizerState as OptimizerState
from fedseg.model.optimizer_state import load_optimizer_state as load_optimizer_state
from fedseg.model.optimizer_state import optimizer_state_dict as optimizer_state_dict
from fedseg.model.optimizer_state import optimizer_steps as optimizer_steps
from fedseg.model.optimizer_state import tensor_like
from fedseg.model.registry import new_network
from fedseg.model.weights import Weights, get_weights
from fedseg.train.config import TrainConfig, check_shapes
from fedseg.train.loader import CaseStore, EpochLoader

if TYPE_CHECKING:  # Opacus is imported by train.dp only, when DP-SGD is asked for
    from fedseg.train.dp import CaseDp

log = logging.getLogger(__name__)


@dataclass
class LocalResult:
    """What a local round returns. ``train_loss`` is the mean loss over all its steps;
    ``data_wait_s`` is the time the training loop waited for batches, ``compute_s`` the
    time of forward + backward + step; ``device`` where it trained (``describe_device``);
    ``lr`` the learning rate its optimizer stepped with."""

    weights: Weights
    optimizer_state: OptimizerState
    n_train: int
    train_loss: float
    wall_s: float
    steps: int = 0
    epoch_losses: list[float] = field(default_factory=list)
    data_wait_s: float = 0.0
    compute_s: float = 0.0
    device: str = "cpu"
    lr: float = 0.0


@dataclass
class StepSetup:
    """How a placed network steps: its ``device``, the ``compute`` choices (autocast
    precision, batch memory format) and the gradient ``scaler`` (enabled for fp16 only)."""

    device: torch.device
    compute: ComputeConfig
    scaler: torch.amp.GradScaler


def place_for_training(
    net: nn.Module, compute: ComputeConfig, opt: torch.optim.Optimizer | None = None
) -> StepSetup:
    """Put ``net`` (and ``opt``'s state, if any) where ``compute`` says; cheap when it is
    already there, so a caller may place once and pass the setup to every ``fit_epoch``."""
    device = place_network(net, compute)
    if opt is not None:
        optimizer_to(opt, device)
    return StepSetup(device, compute, grad_scaler(device, compute.precision))


def optimizer_to(opt: torch.optim.Optimizer, device: torch.device) -> None:
    """Move the optimizer's state tensors next to their parameters (Adam's ``step``
    counter stays on the host, as Adam keeps it when not capturable)."""
    for st in opt.state.values():
        for k, v in st.items():
            if k != "step" and isinstance(v, torch.Tensor):
                st[k] = v.to(device)


@dataclass
class EpochStats:
    """One epoch: mean loss, number of optimizer steps, loader wait and compute seconds."""

    loss: float
    steps: int
    data_wait_s: float
    compute_s: float


def epoch_seed(seed: int, epoch: int) -> int:
    """The torch seed of an epoch (dropout etc.), derived from the run seed and the epoch."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def new_optimizer(net: nn.Module, train: TrainConfig) -> torch.optim.Adam:
    return torch.optim.Adam(net.parameters(), lr=train.lr, weight_decay=train.weight_decay)


def fit_epoch(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    data: EpochLoader,
    *,
    epoch: int,
    progress: Progress | None = None,
    proximal: Callable[[], torch.Tensor] | None = None,
    setup: StepSetup | None = None,
    max_steps: int | None = None,
) -> EpochStats:
    """One pass over the patches of ``epoch`` (0-based); order and augmentation from
    ``data``'s seed, which also seeds the epoch's dropout. ``max_steps``: stop after that
    many optimizer steps (the first batches of the pass; None: the whole pass).

    ``setup``: where ``net`` was placed (``place_for_training``); None places ``net`` and
    ``opt`` by ``data.train.compute`` now."""
    if setup is None:
        setup = place_for_training(net, data.train.compute, opt)
    net.train()
    cuda = setup.device.type == "cuda"
    loader = data.epoch(epoch)
    total = len(loader) if max_steps is None else min(max_steps, len(loader))
    task = progress.add_task(f"epoch {epoch + 1}", total=total) if progress else None
    # Seed torch's generators for this epoch (dropout), restoring the caller's state after.
    rng_devices = [setup.device.index or 0] if cuda else []
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(epoch_seed(data.seed, epoch))
        losses, wait, compute = _run_steps(
            net, opt, loader, setup, progress, task, epoch, proximal, max_steps
        )
    if progress is not None and task is not None:
        progress.remove_task(task)
    return EpochStats(float(np.mean(losses)), len(losses), wait, compute)


def train_step(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    setup: StepSetup,
    proximal: Callable[[], torch.Tensor] | None = None,
) -> torch.Tensor:
    """One optimizer step on ``batch`` (``image``, ``target`` on the host): copied to the
    device, forward under autocast, mirrored Dice in float32 (plus ``proximal()``, if
    given), backward and Adam step through the scaler. Returns the loss (without the
    proximal term), detached, still on the device."""
    device, channels_last = setup.device, setup.compute.channels_last
    image = to_device(batch["image"], device, channels_last)
    target = to_device(batch["target"], device, channels_last)
    opt.zero_grad(set_to_none=True)
    with autocast(device, setup.compute.precision):
        logits = net(image)
    loss = mirrored_dice_loss(logits.float(), target)
    setup.scaler.scale(loss + proximal() if proximal is not None else loss).backward()
    setup.scaler.step(opt)
    setup.scaler.update()
    return loss.detach()


def _run_steps(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    loader: Iterable[dict[str, torch.Tensor]],
    setup: StepSetup,
    progress: Progress | None,
    task: TaskID | None,
    epoch: int,
    proximal: Callable[[], torch.Tensor] | None = None,
    max_steps: int | None = None,
) -> tuple[list[float], float, float]:
    """Optimizer steps over ``loader`` (at most ``max_steps``): (losses, seconds waiting for
    data, seconds computing).
    ``proximal()`` (if given) is added to each step's loss; the losses reported exclude it.
    Reading each loss back (``float``) waits for the device, so ``compute`` is honest on
    CUDA too. A step the fp16 scaler skips (inf gradients) still counts as a step."""
    losses: list[float] = []
    wait = compute = 0.0
    it = iter(loader)
    while max_steps is None or len(losses) < max_steps:
        t0 = time.perf_counter()
        batch = next(it, None)
        t1 = time.perf_counter()
        wait += t1 - t0
        if batch is None:
            break
        losses.append(float(train_step(net, opt, batch, setup, proximal)))
        compute += time.perf_counter() - t1
        if progress is not None and task is not None:
            progress.update(task, advance=1, description=f"epoch {epoch + 1} loss {losses[-1]:.3f}")
    return losses, wait, compute


def proximal_term(net: nn.Module, reference: Weights, mu: float) -> Callable[[], torch.Tensor]:
    """FedProx (Li et al. 2020): ``mu / 2 * sum ||w - w_ref||^2`` over the trainable
    parameters, ``w_ref`` the global model the round started from (names as in ``Weights``),
    kept on each parameter's device."""
    pairs = [
        (p, tensor_like(p, reference[n])) for n, p in net.named_parameters() if p.requires_grad
    ]

    def term() -> torch.Tensor:
        return 0.5 * mu * sum(((p - r) ** 2).sum() for p, r in pairs)  # type: ignore[return-value]

    return term


def train_progress() -> Progress:
    """The rich progress bar used for training steps."""
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        transient=True,
    )  # fmt: skip


def train_local(
    network: NetworkConfig,
    train: TrainConfig,
    weights: Weights | None,
    optimizer_state: OptimizerState | None,
    cases: Sequence[Case] | CaseStore,
    epochs: int,
    *,
    seed: int,
    progress: bool = False,
    first_epoch: int = 0,
    on_epoch: Callable[[int, EpochStats], None] | None = None,
    proximal_mu: float = 0.0,
    reference: Weights | None = None,
    case_cache: bool = True,
    dp: CaseDp | None = None,
    steps: int | None = None,
) -> LocalResult:
    """Train on ``cases`` for ``epochs`` epochs, or for exactly ``steps`` optimizer steps
    when given (as many epochs as they take, the last one cut short), starting from
    ``weights`` (None: fresh init from ``seed``) and ``optimizer_state`` (None: fresh Adam).
    ``cases`` may come prepared, as a ``CaseStore`` of ``train.patch_size`` (a warm site's:
    ``train.warm``).

    Epochs are numbered from ``first_epoch`` for the data order, so continuing a run with
    ``first_epoch=k`` gives the same batches as the straight run's epoch k.
    ``proximal_mu > 0`` adds FedProx's term pulling towards ``reference`` (default: ``weights``).
    The device, precision, memory format and compilation are ``train.compute``'s.
    ``case_cache``: read the cases from the site's case cache (``fedseg.train.case_cache``),
    making the missing entries; False prepares them in memory (up to ``train.cache_mb``);
    ignored for a ``CaseStore``.
    ``dp``: train with DP-SGD (``train.dp``: Poisson-drawn cases, per-case clipping and
    noise; fp32, not compiled), else plain minibatches; it counts whole epochs, so not
    with ``steps``.
    """
    t0 = time.perf_counter()
    if steps is not None and (steps < 1 or dp is not None):
        raise ValueError("steps must be >= 1 and cannot be combined with DP-SGD (whole epochs)")
    check_shapes(network, train)
    net = new_network(network, weights, seed)
    if dp is not None:
        from fedseg.train import dp as dp_sgd

        compute, line = dp_sgd.dp_compute(train.compute)
        if line is not None:
            log.warning(line)
            train = train.model_copy(update={"compute": compute})
        dp_sgd.dp_network(net)
    setup = place_for_training(net, train.compute)
    opt = new_optimizer(net, train)
    if optimizer_state is not None:
        load_optimizer_state(opt, net, optimizer_state)
    if isinstance(cases, CaseStore):
        if cases.patch_size != train.patch_size:
            raise ValueError(f"cases prepared for {cases.patch_size}, not {train.patch_size}")
        store = cases
    else:
        store = CaseStore(cases, train.patch_size, train.cache_mb, disk=case_cache)
    prox = None
    if proximal_mu > 0:
        ref = reference if reference is not None else weights
        if ref is None:
            raise ValueError("proximal_mu needs reference weights (or starting weights)")
        prox = proximal_term(net, ref, proximal_mu)
    stats: list[EpochStats] = []
    bar = train_progress() if progress else None
    if bar is not None:
        bar.start()
    private = dp_sgd.DpEpochs(net, opt, store, train, seed, dp, setup) if dp is not None else None
    data = None
    if private is None:
        data = EpochLoader(store, train, seed, pin_memory=setup.device.type == "cuda")
    try:
        e, taken = first_epoch, 0
        while taken < steps if steps is not None else e < first_epoch + epochs:
            if private is not None:
                s = private.fit_epoch(e, prox, bar)
            else:
                assert data is not None
                left = None if steps is None else steps - taken
                s = fit_epoch(net, opt, data, epoch=e, progress=bar, proximal=prox,
                              setup=setup, max_steps=left)  # fmt: skip
            stats.append(s)
            if on_epoch is not None:
                on_epoch(e, s)
            e, taken = e + 1, taken + s.steps
            if steps is not None and s.steps == 0:  # no data: more epochs never reach `steps`
                break
    finally:
        (private or data).close()  # type: ignore[union-attr]
        if bar is not None:
            bar.stop()
    return LocalResult(
        weights=get_weights(net),
        optimizer_state=optimizer_state_dict(opt, net),
        n_train=len(store),
        train_loss=float(sum(s.loss * s.steps for s in stats) / max(taken, 1)),
        wall_s=time.perf_counter() - t0,
        steps=taken,
        epoch_losses=[s.loss for s in stats],
        data_wait_s=sum(s.data_wait_s for s in stats),
        compute_s=sum(s.compute_s for s in stats),
        device=describe_device(setup.device),
        lr=float(opt.param_groups[0]["lr"]),
    )
