"""Record-level differential privacy at a site: DP-SGD with Opacus (the only module that
imports it; plan ``privacy.dp.level: case``).

A record is a case. Each step draws every training case independently with probability
``sample_rate`` (Poisson sampling) and takes one patch of each drawn case; the per-case
gradients (Opacus ``GradSampleModule``: hooks, and functorch for the layers without a grad
sampler, the ResUNet's ``ConvTranspose3d``) are clipped to ``clip_norm`` and summed, Gaussian
noise of std ``noise_multiplier * clip_norm`` is added and the sum is divided by the expected
number of drawn cases (Opacus ``DPOptimizer``), then Adam steps. An epoch is
``steps_per_epoch(sample_rate)`` steps. The drawn cases go through the network
``max_physical_batch`` at a time (what Opacus's ``BatchMemoryManager`` does: memory is
bounded whatever the draw); a step that draws no case is noise only.

What the accountant assumes and this module keeps:

* the network has no batch statistics (batch norm is refused; instance and group norm,
  without running statistics, are per sample) and its activations are not in place (Opacus's
  backward hooks need the outputs), switched off on the built module: weight keys unchanged;
* fp32 and no ``torch.compile`` (``dp_compute``: autocast and compilation do not mix with
  the hooks, and a per-sample norm in bf16 is not the one the accountant assumes);
* which cases each step draws and the noise come from the operating system's randomness,
  never from the task's seed (the aggregator chose it, and could replay them); the patch
  positions, augmentation and dropout within a drawn case stay seeded; the noise is drawn
  in Opacus's ``secure_mode`` (robust to floating-point attacks on the Gaussian);
* FedProx's proximal gradient (data-free) is added after the noise, as Adam's weight decay
  is: post-processing.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import secrets
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from rich.progress import Progress
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fedseg.errors import FedsegError
from fedseg.model.compute import ComputeConfig, to_device
from fedseg.model.losses import mirrored_dice_loss
from fedseg.train.config import TrainConfig
from fedseg.train.loader import CaseStore, case_patch
from fedseg.train.local import EpochStats, StepSetup, epoch_seed

log = logging.getLogger(__name__)

#: the one line a network with batch norm gets under DP-SGD
BATCH_NORM_REFUSED = (
    "DP-SGD cannot keep batch statistics private: use network.norm instance or group"
)


@dataclass(frozen=True)
class CaseDp:
    """DP-SGD's settings for one local round: noise multiplier (noise std / clip), the
    per-case gradient clip, each case's Poisson rate per step and the most cases one
    forward pass takes."""

    noise_multiplier: float
    clip_norm: float
    sample_rate: float
    max_physical_batch: int = 1


def steps_per_epoch(sample_rate: float) -> int:
    """Steps in one epoch of DP-SGD: enough that each case is drawn once in expectation
    (``ceil(1 / sample_rate)``; the plain loader's batches per epoch when the rate is
    ``batch_size / cases``)."""
    return max(1, math.ceil(1.0 / sample_rate - 1e-9))


def dp_compute(compute: ComputeConfig) -> tuple[ComputeConfig, str | None]:
    """``compute`` as DP-SGD runs it: fp32, not compiled; the line saying what changed
    (None when nothing did)."""
    if compute.precision == "fp32" and not compute.compile:
        return compute, None
    asked = [f"precision {compute.precision}"] if compute.precision != "fp32" else []
    asked += ["compile"] if compute.compile else []
    line = (f"DP-SGD (privacy.dp.level case) computes in fp32 without torch.compile; "
            f"{' and '.join(asked)} not used")  # fmt: skip
    return compute.model_copy(update={"precision": "fp32", "compile": False}), line


def dp_network(net: nn.Module) -> nn.Module:
    """``net`` (in place) as DP-SGD needs it: batch norm refused (``BATCH_NORM_REFUSED``),
    in-place activations switched off. Parameters and their names are unchanged."""
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        raise FedsegError(BATCH_NORM_REFUSED)
    for m in net.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False  # type: ignore[assignment]
    return net


def _os_seed() -> int:
    return secrets.randbits(63)


class DpSgd:
    """DP-SGD steps on ``net`` (already placed, ``dp_network``-ready) with ``opt`` (its
    plain Adam, whose state stays the optimizer state of the round) over ``n_cases``
    training cases. A step: ``accumulate`` each physical batch of the drawn cases, then
    ``step``."""

    def __init__(self, net: nn.Module, opt: torch.optim.Optimizer, dp: CaseDp, n_cases: int,
                 device: torch.device) -> None:  # fmt: skip
        self.dp, self.device = dp, device
        self.module = GradSampleModule(net, loss_reduction="mean")
        #: the expected number of drawn cases: the mean's denominator, whatever the draw
        self.expected_cases = dp.sample_rate * n_cases
        self.optimizer = DPOptimizer(
            opt,
            noise_multiplier=dp.noise_multiplier,
            max_grad_norm=dp.clip_norm,
            expected_batch_size=self.expected_cases,  # type: ignore[arg-type]
            loss_reduction="mean",
            generator=torch.Generator(device=device).manual_seed(_os_seed()),
            secure_mode=True,  # noise robust to floating-point attacks (4 draws per value)
        )
        self.params = self.optimizer.params

    def accumulate(self, image: torch.Tensor, target: torch.Tensor) -> float:
        """Forward and backward one physical batch, clip its per-case gradients and add
        them to the step's sum; the batch's mean loss."""
        for p in self.params:
            p.grad = None  # the plain gradient is not used: only the per-case ones
        with warnings.catch_warnings():  # the input needs no gradient: Opacus's hooks say so
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            loss = mirrored_dice_loss(self.module(image).float(), target)
            loss.backward()
        self.optimizer.clip_and_accumulate()
        for p in self.params:
            p.grad_sample = None
            p.grad = None
        return float(loss.detach())

    def noisy_gradient(self) -> None:
        """Set each parameter's ``grad`` to (sum of clipped per-case gradients + noise) /
        expected cases, and clear the sum (a step that drew no case: noise only)."""
        for p in self.params:
            if p.summed_grad is None:
                p.summed_grad = torch.zeros_like(p)
        self.optimizer.add_noise()
        for p in self.params:
            p.grad /= self.expected_cases
            p.summed_grad = None

    def step(self, proximal: Callable[[], torch.Tensor] | None = None) -> None:
        """The noisy gradient, plus the gradient of ``proximal()`` (data-free), then Adam."""
        self.noisy_gradient()
        if proximal is not None:
            extra = torch.autograd.grad(proximal(), self.params, allow_unused=True)
            for p, g in zip(self.params, extra, strict=True):
                if g is not None:
                    p.grad += g
        self.optimizer.original_optimizer.step()
        for p in self.params:
            p.grad = None

    def close(self) -> None:
        """Remove Opacus's hooks from the network."""
        self.module.to_standard_module()


class _DrawnPatches(Dataset[dict[str, torch.Tensor]]):
    """Item ``(epoch, step, case)``: one patch of ``case``, seeded by ``(seed, epoch, step,
    case)`` (position and augmentation)."""

    def __init__(self, store: CaseStore, train: TrainConfig, seed: int) -> None:
        self.store, self.train, self.seed = store, train, seed

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, torch.Tensor]:
        epoch, step, case = key
        return case_patch(self.store, self.train, case,
                          np.random.default_rng([self.seed, epoch, step, case]))  # fmt: skip


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


class DpEpochs:
    """DP-SGD epochs over ``store``'s cases: ``fit_epoch(e)`` as ``local.fit_epoch`` does
    for plain training. The draws come from one OS-seeded generator per round."""

    def __init__(self, net: nn.Module, opt: torch.optim.Optimizer, store: CaseStore,
                 train: TrainConfig, seed: int, dp: CaseDp, setup: StepSetup) -> None:  # fmt: skip
        self.sgd = DpSgd(net, opt, dp, len(store), setup.device)
        self.net, self.store, self.train, self.seed, self.dp = net, store, train, seed, dp
        self.setup = setup
        self.draws = np.random.default_rng(_os_seed())
        self.patches = _DrawnPatches(store, train, seed)

    def draw(self) -> list[np.ndarray]:
        """The cases each step of one epoch draws (Poisson, rate ``sample_rate``)."""
        n, q = len(self.store), self.dp.sample_rate
        return [np.flatnonzero(self.draws.random(n) < q)
                for _ in range(steps_per_epoch(q))]  # fmt: skip

    def _batches(self, epoch: int, steps: list[np.ndarray]) -> Iterator[dict[str, torch.Tensor]]:
        size = self.dp.max_physical_batch
        keys = [[(epoch, s, int(c)) for c in cases[lo : lo + size]]
                for s, cases in enumerate(steps) for lo in range(0, len(cases), size)]  # fmt: skip
        if not keys:
            return iter(())
        workers = 0 if multiprocessing.current_process().daemon else self.train.num_workers
        return iter(DataLoader(
            self.patches, batch_sampler=keys, num_workers=workers,
            worker_init_fn=_one_thread if workers else None,
            multiprocessing_context="fork" if workers else None,
            pin_memory=self.setup.device.type == "cuda",
        ))  # fmt: skip

    def fit_epoch(
        self,
        epoch: int,
        proximal: Callable[[], torch.Tensor] | None = None,
        progress: Progress | None = None,
    ) -> EpochStats:
        """One epoch of DP-SGD steps; the mean loss over the steps that drew cases."""
        self.net.train()
        steps = self.draw()
        task = None
        if progress is not None:
            task = progress.add_task(f"epoch {epoch + 1} (DP-SGD)", total=len(steps))
        device, channels_last = self.setup.device, self.setup.compute.channels_last
        losses: list[float] = []
        wait = compute = 0.0
        batches = self._batches(epoch, steps)
        cuda = device.type == "cuda"
        with torch.random.fork_rng(devices=[device.index or 0] if cuda else []):
            torch.manual_seed(epoch_seed(self.seed, epoch))  # dropout, as the plain epochs
            for cases in steps:
                step_loss = 0.0
                for _ in range(0, len(cases), self.dp.max_physical_batch):
                    t0 = time.perf_counter()
                    batch = next(batches)
                    t1 = time.perf_counter()
                    wait += t1 - t0
                    image = to_device(batch["image"], device, channels_last)
                    target = to_device(batch["target"], device, channels_last)
                    step_loss += self.sgd.accumulate(image, target) * len(image)
                    compute += time.perf_counter() - t1
                t1 = time.perf_counter()
                self.sgd.step(proximal)
                compute += time.perf_counter() - t1
                if len(cases):
                    losses.append(step_loss / len(cases))
                if progress is not None and task is not None:
                    progress.update(task, advance=1)
        if progress is not None and task is not None:
            progress.remove_task(task)
        loss = float(np.mean(losses)) if losses else float("nan")
        return EpochStats(loss, len(steps), wait, compute)

    def close(self) -> None:
        self.sgd.close()
