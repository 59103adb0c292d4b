"""Validation of a training network on labelled cases, with the recipe's validation settings.

What this adds to ``model.evaluate`` (the one evaluation path) is the recipe: the network
is built from its config and weights (``validate_cases``; several on the same cases, each
case read once: ``validate_models``, cross-site validation) or taken as it is
(``validate_network``), run in eval mode as a single-model ``ModelSet`` whose tile is
``train.val_roi`` exactly (no shrinking), with ``val_overlap`` and ``val_batch_size``,
computing where and how ``train.compute`` says (device, autocast precision, memory format:
the training's choices; probabilities and metrics stay float32).
The cases are read through the site's case cache (``case_cache.VolumeReader``: the loaded
volumes, unchanged, so the metrics are those of reading the NIfTI files), or by the
caller's ``load`` (a warm site's held volumes: ``train.warm.WarmSite.read``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np
import torch
from rich.progress import Progress
from torch import nn

from fedseg.data.cases import Case, CaseVolumes
from fedseg.model.config import NetworkConfig
from fedseg.model.evaluate import CaseResult, evaluate_case, evaluate_cases
from fedseg.model.metrics import METRICS
from fedseg.model.registry import build_network
from fedseg.model.segmenter import Member, ModelSet
from fedseg.model.torch_backend import torch_predictor
from fedseg.model.weights import Weights, set_weights
from fedseg.train.case_cache import VolumeReader
from fedseg.train.config import TrainConfig, check_shapes


def network_models(net: nn.Module, train: TrainConfig) -> ModelSet:
    """``net`` (put in eval mode, placed by ``train.compute``) as the model set validation
    runs: tiles of ``val_roi``."""
    roi = (train.val_roi[0], train.val_roi[1], train.val_roi[2])
    return ModelSet((Member(torch_predictor(net, train.compute), roi, "network"),))


#: Reads a validation case: ``case_cache.VolumeReader`` unless a caller gives its own.
Load = Callable[[Case], CaseVolumes]


def validate_network(
    net: nn.Module, train: TrainConfig, cases: Sequence[Case], progress: Progress | None = None,
    metrics: Sequence[str] = METRICS, load: Load | None = None,
) -> list[CaseResult]:  # fmt: skip
    """Per-case ``metrics`` of ``net`` (left in eval mode) on ``cases`` (read by ``load``)."""
    task = progress.add_task("validation", total=len(cases)) if progress else None

    def advance(_: CaseResult) -> None:
        if progress is not None and task is not None:
            progress.advance(task)

    results = evaluate_cases(
        cases, network_models(net, train), overlap=train.val_overlap,
        batch_size=train.val_batch_size, metrics=metrics, on_case=advance,
        load=load if load is not None else VolumeReader(),
    )  # fmt: skip
    if progress is not None and task is not None:
        progress.remove_task(task)
    return results


def validate_cases(
    network: NetworkConfig, train: TrainConfig, weights: Weights, cases: Sequence[Case],
    metrics: Sequence[str] = METRICS, load: Load | None = None,
) -> list[CaseResult]:  # fmt: skip
    """Per-case ``metrics`` of ``weights`` (a ``network``) on ``cases`` (read by ``load``),
    computed as ``train.compute`` says."""
    check_shapes(network, train)
    net = build_network(network)
    set_weights(net, weights)
    with torch.inference_mode():
        return validate_network(net, train, cases, metrics=metrics, load=load)


def validate_models(
    network: NetworkConfig, train: TrainConfig, models: Mapping[str, Mapping[str, np.ndarray]],
    cases: Sequence[Case], dice_only: Collection[str] = (), load: Load | None = None,
) -> dict[str, list[CaseResult]]:  # fmt: skip
    """Per-case metrics of each of ``models`` (label -> weights of a ``network``) on
    ``cases``, as ``validate_cases`` computes them (only Dice for the labels in
    ``dice_only``: all cross-site validation needs), reading each case once: one network
    per model is built, and each case, once loaded (``load``), is run through all of them."""
    check_shapes(network, train)
    sets = {}
    for label, weights in models.items():
        net = build_network(network)
        set_weights(net, weights)
        sets[label] = network_models(net, train)
    out: dict[str, list[CaseResult]] = {label: [] for label in models}
    read = load if load is not None else VolumeReader()
    with torch.inference_mode():
        for case in cases:
            volumes = read(case)
            for label, models_set in sets.items():
                out[label].append(evaluate_case(
                    volumes, models_set, overlap=train.val_overlap,
                    batch_size=train.val_batch_size,
                    metrics=("dice",) if label in dice_only else METRICS,
                ))  # fmt: skip
    return out
