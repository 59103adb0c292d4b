"""What travels between the aggregator and a site, and its Flower encoding.

``encode_*``/``decode_*`` turn the round's plain values (``rounds.tasks``) into Flower
``RecordDict`` content and back. This and ``server_app``/``client_app`` are the only
modules that import the Flower Python API. A reply holds weights and summaries only
(means, standard deviations, counts): never images, labels or per-case values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from pydantic import ValidationError

from fedseg.federation.rounds.optimizer_state import DEFAULT_MODE, optimizer_mode
from fedseg.federation.rounds.tasks import TaskReply, TaskRequest
from fedseg.model.summary import MIN_SUMMARY_CASES, Summary
from fedseg.run_folder import ComputeUsed, DeclaredCases

if TYPE_CHECKING:  # torch-free at run time: a site's hello must start fast
    from fedseg.model.weights import Weights

#: Flower message types: the round's work and the hello that maps a node to a site name.
TRAIN = "train"
HELLO = "query.hello"


def weights_to_record(weights: Weights) -> ArrayRecord:
    """Weights (or an optimizer state) -> ArrayRecord: order, dtypes and shapes kept (0-d
    arrays stay 0-d); numpy serialization, no pickle."""
    return ArrayRecord(
        array_dict={k: Array(np.require(v, requirements="C")) for k, v in weights.items()}
    )


def record_to_weights(record: ArrayRecord) -> Weights:
    return {k: arr.numpy() for k, arr in record.items()}


def content_bytes(content: RecordDict) -> int:
    """Payload size of a message's content: array bytes plus keys and scalar values."""
    return int(sum(rec.count_bytes() for rec in content.values()))


def encode_request(req: TaskRequest) -> RecordDict:
    """A request as ``global`` (weights), ``task`` (typed config entries) and, when it
    carries one, ``optimizer`` (the optimizer state's arrays)."""
    content = RecordDict(
        {
            "global": weights_to_record(req.weights),
            "task": ConfigRecord(
                {
                    "round": req.round,
                    "model_round": req.model_round,
                    "validate": req.validate,
                    "epochs": req.epochs,
                    "seed": req.seed,
                    "run_id": req.run_id,
                    "recipe": req.recipe,
                    "optimizer_mode": req.optimizer_mode,
                    "proximal_mu": float(req.proximal_mu),
                    "min_summary_cases": int(req.min_summary_cases),
                }
            ),
        }
    )
    if req.optimizer_state is not None:
        content["optimizer"] = weights_to_record(req.optimizer_state)
    return content


def decode_request(content: RecordDict) -> TaskRequest:
    task = content["task"]
    return TaskRequest(
        round=int(task["round"]),
        model_round=int(task["model_round"]),
        validate=bool(task["validate"]),
        epochs=int(task["epochs"]),
        seed=int(task["seed"]),
        run_id=str(task["run_id"]),
        recipe=str(task["recipe"]),
        weights=record_to_weights(content["global"]),
        optimizer_mode=optimizer_mode(str(task.get("optimizer_mode", DEFAULT_MODE))),
        proximal_mu=float(task.get("proximal_mu", 0.0)),
        optimizer_state=record_to_weights(content["optimizer"]) if "optimizer" in content else None,
        min_summary_cases=int(task.get("min_summary_cases", MIN_SUMMARY_CASES)),
    )


def encode_reply(rep: TaskReply) -> RecordDict:
    metrics: dict[str, float | int] = {
        "n_train": rep.n_train,
        "n_val": rep.n_val,
        "train_wall_s": float(rep.train_wall_s),
        "val_wall_s": float(rep.val_wall_s),
        "startup_s": float(rep.startup_s),
        "validated": int(rep.validated),
    }
    if rep.train_loss is not None:
        metrics["train_loss"] = float(rep.train_loss)
    val: dict[str, float | int] = {}
    for region, by_metric in rep.validation.items():
        for metric, s in by_metric.items():
            val[f"{region}/{metric}/mean"] = float(s.mean)
            val[f"{region}/{metric}/std"] = float(s.std)
            val[f"{region}/{metric}/n"] = int(s.n)
    site: dict[str, str] = {"name": rep.site}
    if rep.compute is not None:
        site |= rep.compute.extra()  # device, precision
    content = RecordDict(
        {
            "site": ConfigRecord(site),
            "metrics": MetricRecord(metrics),
            "validation": MetricRecord(val),
        }
    )
    if rep.weights is not None:
        content["weights"] = weights_to_record(rep.weights)
    if rep.optimizer_state is not None:
        content["optimizer"] = weights_to_record(rep.optimizer_state)
    return content


def decode_reply(content: RecordDict) -> TaskReply:
    m = content["metrics"]
    validation: dict[str, dict[str, Summary]] = {}
    val = content["validation"]
    for key in val:
        region, metric, part = str(key).rsplit("/", 2)
        if part != "mean":
            continue
        base = f"{region}/{metric}"
        validation.setdefault(region, {})[metric] = Summary(
            float(val[f"{base}/mean"]), float(val[f"{base}/std"]), int(val[f"{base}/n"])
        )
    return TaskReply(
        site=str(content["site"]["name"]),
        weights=record_to_weights(content["weights"]) if "weights" in content else None,
        n_train=int(m["n_train"]),
        n_val=int(m["n_val"]),
        train_loss=float(m["train_loss"]) if "train_loss" in m else None,
        train_wall_s=float(m["train_wall_s"]),
        val_wall_s=float(m["val_wall_s"]),
        startup_s=float(m.get("startup_s", 0.0)),
        validation=validation,
        validated=bool(m.get("validated", bool(validation))),
        optimizer_state=record_to_weights(content["optimizer"]) if "optimizer" in content else None,
        compute=_compute_used(content["site"]),
    )


def _compute_used(site: ConfigRecord) -> ComputeUsed | None:
    """The device and precision a reply says it used; None when it says none, or says
    something no fedseg site writes (a long or odd text: nothing of it is recorded)."""
    try:
        return ComputeUsed.from_extra(dict(site))
    except ValidationError:
        return None


def encode_hello_reply(site: str, declared: DeclaredCases | None = None) -> RecordDict:
    """A site's hello: its name and, when its data folder reads, its split's case counts."""
    rec = ConfigRecord({"name": site})
    if declared is not None:
        rec["n_train"], rec["n_val"] = int(declared.n_train), int(declared.n_val)
    return RecordDict({"site": rec})


def decode_hello_reply(content: RecordDict) -> tuple[str, DeclaredCases | None]:
    """The site's name and declared case counts (None when it declared none)."""
    rec = content["site"]
    declared = None
    if "n_train" in rec and "n_val" in rec:
        declared = DeclaredCases(n_train=int(rec["n_train"]), n_val=int(rec["n_val"]))
    return str(rec["name"]), declared
