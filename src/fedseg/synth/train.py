"""One site's local round of the generator (``train_bank``): pre-training of the kernel on
one modality, or the bank phase (every present modality against this site's own
discriminators, which live in the site's workspace only).

Per step, a seeded batch of 2D slices or 3D patches (``synth.data.SampleSampler``) and, for
each trained modality m, ``fake = G(cond, m)`` against the case's real image of m:
G's loss is ``l1``·L1 + ``ssim``·(1 - SSIM) (MONAI ``SSIMLoss``) and, in the bank phase,
+ ``adversarial``·GAN with one conditional MONAI ``PatchDiscriminator`` D_m per present
modality (input: the 4 condition channels + the image; ``PatchAdversarialLoss``, LSGAN by
default), which then takes one step on (real, fake). The losses reported are per modality:
G's summed loss over the trained modalities divided by their number, likewise D's
(real + fake terms).

What a site must not change comes back bit-identical: only ``generator.trainable_names``
are in G's optimizer and require a gradient (the kernel in the bank phase, the banks of
modalities not trained never get a grad: Adam, weight decay included, skips them), and
their arrays are returned as they came in.

State carried between rounds, in ``workspace/discriminators_<rnd>.npz`` (never sent): D_m's
weights (``d/<m>/...``), their Adam states (``adam_d/<m>/...``) and G's Adam state
(``adam_g/<phase>/...``; a phase change starts G's Adam afresh). A round starts from the
latest file of a round before ``rnd`` (a redone round starts from the same state);
two files are kept (``model.weights.save_round_arrays``). ``workspace`` None: fresh every
call. Same seed and starting state, same result (torch's global RNG is forked, not
consumed).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedseg.data.cases import MODALITIES, Case, load_case
from fedseg.errors import FedsegError
from fedseg.model.generator import CONDITION_CHANNELS, generator_module, trainable_names
from fedseg.model.optimizer_state import (
    MOMENTS,
    STEP,
    OptimizerState,
    load_optimizer_state,
    optimizer_state_dict,
)
from fedseg.model.weights import (
    Weights,
    get_weights,
    load_round_arrays,
    nest,
    save_round_arrays,
    set_weights,
    unnest,
)
from fedseg.synth.config import SynthesisConfig
from fedseg.synth.data import CaseSamples, SampleSampler, prepare_case, require_present

Phase = Literal["pretrain", "bank"]
#: file stem of the site's discriminator state (``<stem>_<round>.npz`` in the workspace)
DISCRIMINATOR_FILE = "discriminators"


@dataclass
class BankResult:
    """``weights``: the whole generator (untrained arrays bit-identical to the input);
    ``n_train``: training cases used; losses are means over the round's steps (per trained
    modality); ``losses``/``d_losses`` the same per step."""

    weights: Weights
    n_train: int
    train_loss: float
    d_loss: float | None
    wall_s: float
    losses: list[float] = field(default_factory=list)
    d_losses: list[float] = field(default_factory=list)


def trained_modalities(
    cfg: SynthesisConfig, present: Sequence[str], phase: Phase, modality: str | None
) -> list[str]:
    """The modalities a round trains: pre-training ``modality`` (which the site must have),
    the bank phase every present modality the generator has a bank for."""
    known = [m for m in MODALITIES if m in present and m in cfg.generator.modalities]
    if phase == "pretrain":
        if modality is None or modality not in known:
            raise FedsegError(
                f"pre-training on {modality}: this site has {', '.join(present) or 'none'} "
                f"and the generator {', '.join(cfg.generator.modalities)}; pick a modality "
                "both have (synthesis.pretrain.modality)"
            )
        return [modality]
    if not known:
        raise FedsegError(
            f"no modality to train: the site has {', '.join(present) or 'none'}, the "
            f"generator {', '.join(cfg.generator.modalities)}"
        )
    return known


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def _new_discriminator(cfg: SynthesisConfig, seed: int) -> nn.Module:
    from monai.networks.nets import PatchDiscriminator

    torch.manual_seed(seed)
    d = cfg.discriminator
    return PatchDiscriminator(
        spatial_dims=cfg.generator.spatial_dims,
        channels=d.channels,
        in_channels=CONDITION_CHANNELS + 1,
        out_channels=1,
        num_layers_d=d.layers,
        norm=d.norm.upper(),
    )


def _adam(params: list[nn.Parameter], lr: float, cfg: SynthesisConfig) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, betas=tuple(cfg.optimizer.betas))


def _restrict(state: OptimizerState, names: set[str]) -> OptimizerState:
    """``state`` without the moments of parameters outside ``names``."""
    keep = {f"{m}/{n}" for m in MOMENTS for n in names}
    return {k: v for k, v in state.items() if k == STEP or k in keep}


def _load_cases(
    cfg: SynthesisConfig, cases: Sequence[Case], present: Sequence[str]
) -> list[CaseSamples]:
    out = []
    for case in cases:
        require_present(case, present)
        vol = load_case(case)
        if vol.label is None:
            raise FedsegError(
                f"case {case.case_id}: no label map; the generator is trained from label maps"
            )
        try:
            out.append(
                prepare_case(
                    case.case_id,
                    vol.image,
                    vol.label,
                    present,
                    cfg.data,
                    cfg.generator.spatial_dims,
                )
            )
        except FedsegError as exc:
            raise FedsegError(f"case {case.case_id}: {exc}") from None
        del vol
    return out


def train_bank(
    cfg: SynthesisConfig,
    weights: Weights,
    cases: Sequence[Case],
    present: Sequence[str],
    *,
    phase: Phase,
    modality: str | None,
    steps: int,
    seed: int,
    workspace: Path | None,
    rnd: int,
) -> BankResult:
    """Train for ``steps`` optimizer steps. ``phase='pretrain'``: W, b_conv and the bank of
    ``modality`` only; ``'bank'``: the banks of ``present`` (W frozen; absent banks get no
    gradient). Discriminators and Adam states: ``workspace/discriminators_<rnd>.npz``."""
    if steps < 1:
        raise FedsegError(f"steps: {steps}; a round trains at least one step")
    t0 = time.perf_counter()
    present = [m for m in MODALITIES if m in present]
    trained = trained_modalities(cfg, present, phase, modality)
    samples = _load_cases(cfg, cases, present)
    sampler = SampleSampler(samples, cfg.data, cfg.generator.spatial_dims, _seed(seed, 0))
    state = load_round_arrays(workspace, DISCRIMINATOR_FILE, rnd) if workspace else None
    with torch.random.fork_rng(devices=[]):
        new, losses, d_losses, saved = _train(
            cfg, weights, sampler, present, trained, phase, steps, seed, state
        )
    if workspace is not None:
        save_round_arrays(workspace, DISCRIMINATOR_FILE, rnd, saved)
    return BankResult(
        weights=new,
        n_train=len(sampler.cases),
        train_loss=float(np.mean(losses)),
        d_loss=float(np.mean(d_losses)) if d_losses else None,
        wall_s=time.perf_counter() - t0,
        losses=losses,
        d_losses=d_losses,
    )


def _train(
    cfg: SynthesisConfig,
    weights: Weights,
    sampler: SampleSampler,
    present: list[str],
    trained: list[str],
    phase: Phase,
    steps: int,
    seed: int,
    state: Weights | None,
) -> tuple[Weights, list[float], list[float], Weights]:
    """The steps (inside a forked torch RNG): (new weights, G losses, D losses, the state
    to keep in the workspace)."""
    from monai.losses import PatchAdversarialLoss, SSIMLoss

    state = dict(state or {})
    names = trainable_names(cfg.generator, phase, trained)
    torch.manual_seed(_seed(seed, 1))
    net = generator_module(cfg.generator, weights).train()
    params = []
    for name, p in net.named_parameters():
        p.requires_grad_(name in names)
        if name in names:
            params.append(p)
    opt_g = _adam(params, cfg.optimizer.lr_generator, cfg)
    g_key = f"adam_g/{phase}"
    load_optimizer_state(opt_g, net, _restrict(unnest(g_key, state), names))

    discs: dict[str, nn.Module] = {}
    opt_d: dict[str, torch.optim.Adam] = {}
    if phase == "bank":
        for m in trained:
            d = _new_discriminator(cfg, _seed(seed, 2, MODALITIES.index(m)))
            if unnest(f"d/{m}", state):
                set_weights(d, unnest(f"d/{m}", state))
            discs[m] = d.train()
            opt_d[m] = _adam(list(d.parameters()), cfg.optimizer.lr_discriminator, cfg)
            load_optimizer_state(opt_d[m], d, unnest(f"adam_d/{m}", state))

    loss_cfg = cfg.loss
    ssim_loss = SSIMLoss(spatial_dims=cfg.generator.spatial_dims, data_range=1.0)
    adv_loss = PatchAdversarialLoss(criterion=loss_cfg.criterion)
    channel = {m: present.index(m) for m in trained}
    losses: list[float] = []
    d_losses: list[float] = []
    for _ in range(steps):
        batch = sampler.batch()
        cond = torch.from_numpy(batch.condition)
        real = torch.from_numpy(batch.target)
        opt_g.zero_grad(set_to_none=True)
        for d in discs.values():
            d.requires_grad_(False)
        total = torch.zeros(())
        fakes: dict[str, torch.Tensor] = {}
        for m in trained:
            fake = net(cond, m)
            ref = real[:, channel[m] : channel[m] + 1]
            loss = loss_cfg.l1 * F.l1_loss(fake, ref) + loss_cfg.ssim * ssim_loss(fake, ref)
            if m in discs:
                logits = discs[m](torch.cat([cond, fake], 1))[-1]
                loss = loss + loss_cfg.adversarial * adv_loss(
                    logits, target_is_real=True, for_discriminator=False
                )
            fakes[m] = fake.detach()
            total = total + loss
        total.backward()
        opt_g.step()
        losses.append(float(total.detach()) / len(trained))
        if discs:
            d_total = 0.0
            for m, d in discs.items():
                d.requires_grad_(True)
                opt_d[m].zero_grad(set_to_none=True)
                ref = real[:, channel[m] : channel[m] + 1]
                d_real = adv_loss(d(torch.cat([cond, ref], 1))[-1], True, True)
                d_fake = adv_loss(d(torch.cat([cond, fakes[m]], 1))[-1], False, True)
                d_loss = d_real + d_fake
                d_loss.backward()
                opt_d[m].step()
                d_total += float(d_loss.detach())
            d_losses.append(d_total / len(discs))

    new = get_weights(net)
    out = {k: (new[k] if k in names else v) for k, v in weights.items()}
    # the workspace keeps what it had (e.g. the discriminator of a modality not trained
    # now) with this round's namespaces replaced
    updated = [g_key] + [f"{ns}/{m}" for m in discs for ns in ("d", "adam_d")]
    saved = {k: v for k, v in state.items() if not any(k.startswith(u + "/") for u in updated)}
    saved.update(nest(g_key, optimizer_state_dict(opt_g, net)))
    for m, d in discs.items():
        saved.update(nest(f"d/{m}", get_weights(d)))
        saved.update(nest(f"adam_d/{m}", optimizer_state_dict(opt_d[m], d)))
    return out, losses, d_losses, saved
