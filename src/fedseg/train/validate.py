"""Validation of a model on a site's cases: full-volume sliding window, BraTS metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from rich.progress import Progress
from torch import nn

from fedseg.data.cases import Case, load_case
from fedseg.data.labels import REGIONS
from fedseg.errors import FedsegError
from fedseg.model.config import NetworkConfig
from fedseg.model.inference import predict_cropped
from fedseg.model.metrics import case_metrics
from fedseg.model.registry import build_network
from fedseg.model.summary import Summary, iter_summaries, summarize
from fedseg.model.torch_backend import torch_predictor
from fedseg.model.weights import Weights, set_weights
from fedseg.train.config import TrainConfig, check_shapes


def validate_network(
    net: nn.Module, train: TrainConfig, cases: Sequence[Case], progress: Progress | None = None
) -> list[dict[str, Any]]:
    """Per case ``{"case_id", "metrics": case_metrics(...)}`` of ``net`` (left in eval mode)."""
    predictor = torch_predictor(net)
    out = []
    task = progress.add_task("validation", total=len(cases)) if progress else None
    for case in cases:
        vol = load_case(case)
        if vol.label is None:
            raise FedsegError(f"case {case.case_id} has no label map; validation needs labels")
        pred = predict_cropped(
            vol.image, predictor, train.val_roi,
            overlap=train.val_overlap, batch_size=train.val_batch_size,
        ).labels()  # fmt: skip
        out.append({"case_id": case.case_id, "metrics": case_metrics(pred, vol.label, vol.spacing)})
        if progress is not None and task is not None:
            progress.advance(task)
    if progress is not None and task is not None:
        progress.remove_task(task)
    return out


def validate_cases(
    network: NetworkConfig, train: TrainConfig, weights: Weights, cases: Sequence[Case]
) -> list[dict[str, Any]]:
    """Validate ``weights`` on ``cases``: per case ``{"case_id", "metrics"}`` where metrics
    is ``metrics[region][metric]`` (model.metrics.case_metrics on the full volume)."""
    check_shapes(network, train)
    net = build_network(network)
    set_weights(net, weights)
    with torch.inference_mode():
        return validate_network(net, train, cases)


def summarize_cases(per_case: Sequence[dict[str, Any]]) -> dict[str, dict[str, Summary]]:
    """Per-case results -> ``summaries[region][metric]`` (mean, std, n), plus region
    ``mean``/metric ``dice``: the per-case mean Dice over ET, TC, WT summarized."""
    out: dict[str, dict[str, Summary]] = {}
    for region, metric, s in iter_summaries([c["metrics"] for c in per_case]):
        out.setdefault(region, {})[metric] = s
    if per_case:
        means = [float(np.mean([c["metrics"][r]["dice"] for r in REGIONS])) for c in per_case]
        out["mean"] = {"dice": summarize(means)}
    return out
