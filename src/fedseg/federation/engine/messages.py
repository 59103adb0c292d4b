"""What travels between the aggregator and a site, and its Flower encoding.

``encode_*``/``decode_*`` turn the round's plain values (``rounds.tasks``) into Flower
``RecordDict`` content and back. This and ``server_app``/``client_app`` are the only
modules that import the Flower Python API. A reply holds weights and summaries only
(means, standard deviations, counts): never images, labels or per-case values.

Weights travel as Flower ``Array``s in numpy's ``.npy`` format, without needless copies:

- encoding copies each array once (its header and raw bytes joined into the message's
  bytes), and ``encode_requests`` encodes a round's global model (and optimizer state) once
  for all its sites: their messages share one ``ArrayRecord``. Flower sends an array as
  content-addressed objects, so the shared record's objects are pushed once per round too;
- decoding on the aggregator makes no copy: the arrays are read-only views of the
  message's bytes (``record_to_weights(..., writable=False)``; the coordinator only reads
  them and parks them on disk), a site gets writable arrays (one copy: torch loads them);
- cross-site validation (``TaskRequest.cross``): each other site's local model travels as
  the record ``cross.<i>`` (the task's ``cross`` lists the labels in that order), encoded
  once per round and shared by every request that carries it, like the global model; the
  replies' ``cross`` and ``home`` summaries are two more metric records;
- with the plan's ``transfer: {weights: float16}`` (``rounds.transfer``) the weights (not
  the optimizer state) travel as float16: the record ``wire`` names the arrays that were
  cast from float32 (``wire[<record>]``) and decoding casts exactly those back.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from pydantic import ValidationError

from fedseg.federation.rounds.optimizer_state import DEFAULT_MODE, optimizer_mode
from fedseg.federation.rounds.tasks import Payload, SynthStep, TaskReply, TaskRequest
from fedseg.federation.rounds.transfer import (
    DEFAULT_TRANSFER,
    TransferDtype,
    from_wire,
    to_wire,
    transfer_dtype,
)
from fedseg.model.summary import MIN_SUMMARY_CASES, Summary
from fedseg.privacy.config import PrivacyConfig
from fedseg.run_folder import ComputeUsed, DeclaredCases, PrivacySpent, parse_cross_label

if TYPE_CHECKING:  # torch-free at run time: a site's hello must start fast
    from fedseg.model.weights import Weights

#: Flower message types: the round's work and the hello that maps a node to a site name.
TRAIN = "train"
HELLO = "query.hello"
#: prefix of a privacy protocol's query types: ``query.<kind>`` (``rounds.site_queries``)
QUERY = "query."
#: the record naming, per array record, the arrays sent as float16 for float32
WIRE = "wire"
_NUMPY = "numpy.ndarray"  # flwr SType.NUMPY
#: an encoded array record and the names of its arrays sent as float16 for float32
_Encoded = tuple[ArrayRecord, list[str]]


def array_to_flower(v: np.ndarray) -> Array:
    """One array as a Flower ``Array`` in ``.npy`` format (no pickle), copied once."""
    a = np.require(v, requirements="C")  # keeps 0-d arrays 0-d
    head = io.BytesIO()
    header = np.lib.format.header_data_from_array_1_0(a)
    try:
        np.lib.format.write_array_header_1_0(head, header)
    except ValueError:  # a header over 64 KiB (very many dimensions)
        np.lib.format.write_array_header_2_0(head, header)
    data = b"".join((head.getbuffer(), memoryview(a.reshape(-1)).cast("B")))
    return Array(dtype=str(a.dtype), shape=tuple(int(n) for n in a.shape), stype=_NUMPY,
                 data=data)  # fmt: skip


def flower_to_array(arr: Array, writable: bool = False) -> np.ndarray:
    """A Flower ``Array`` (``.npy`` format) as numpy: a read-only view of its bytes, or
    (``writable``) one copy. A ValueError when it is not a plain numeric ``.npy`` array."""
    if arr.stype != _NUMPY:
        raise ValueError(f"array of serialization {arr.stype!r}, expected {_NUMPY!r}")
    buf = io.BytesIO(arr.data)  # shares the bytes: no copy
    major, _ = np.lib.format.read_magic(buf)
    read_header = (
        np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    )
    shape, fortran, dtype = read_header(buf)
    if dtype.hasobject:
        raise ValueError("array of Python objects")
    count = int(np.prod(shape, dtype=np.int64))
    view = np.frombuffer(arr.data, dtype=dtype, count=count, offset=buf.tell())
    out = view.reshape(shape, order="F" if fortran else "C")
    return out.copy(order="K") if writable else out


def weights_to_record(
    weights: Mapping[str, np.ndarray], transfer: TransferDtype = DEFAULT_TRANSFER
) -> tuple[ArrayRecord, list[str]]:
    """Weights (or an optimizer state) -> (ArrayRecord, the names of the arrays sent as
    float16 for float32): order, dtypes and shapes kept (0-d arrays stay 0-d)."""
    wire, cast = to_wire(weights, transfer)
    return ArrayRecord(array_dict={k: array_to_flower(v) for k, v in wire.items()}), cast


def record_to_weights(
    record: ArrayRecord, cast: list[str] | None = None, writable: bool = True
) -> Weights:
    """The arrays of ``record``, those named in ``cast`` back in float32; read-only views
    of the message's bytes unless ``writable`` (see the module doc)."""
    arrays = from_wire({k: flower_to_array(arr, False) for k, arr in record.items()},
                       list(cast or []))  # fmt: skip
    if writable:  # one copy of each array (those cast back are new arrays already)
        arrays = {k: v if v.flags.writeable else v.copy() for k, v in arrays.items()}
    return arrays


def _cast_names(content: RecordDict, record: str) -> list[str]:
    wire = content.get(WIRE)
    return [str(k) for k in wire.get(record, [])] if wire is not None else []  # type: ignore[union-attr]


def _put(content: RecordDict, name: str, encoded: tuple[ArrayRecord, list[str]]) -> None:
    record, cast = encoded
    content[name] = record
    if cast:
        if WIRE not in content:
            content[WIRE] = ConfigRecord({})
        content[WIRE][name] = cast  # type: ignore[index]


def content_bytes(content: RecordDict) -> int:
    """Payload size of a message's content: array bytes plus keys and scalar values."""
    return int(sum(rec.count_bytes() for rec in content.values()))


def encode_requests(requests: Mapping[str, TaskRequest]) -> dict[str, RecordDict]:
    """Each site's request content (``encode_request``); the requests that carry the same
    weights object (the round's global model) or optimizer state share one encoded
    ``ArrayRecord``, so the model is encoded once per round, not once per site."""
    shared: dict[tuple[int, str], _Encoded] = {}
    return {site: encode_request(req, shared) for site, req in requests.items()}


def encode_request(
    req: TaskRequest, shared: dict[tuple[int, str], _Encoded] | None = None
) -> RecordDict:
    """A request as ``global`` (weights, in the transfer dtype), ``task`` (typed config
    entries) and, when it carries one, ``optimizer`` (the optimizer state's arrays, always
    as they are). ``shared``: records already encoded this round, by (object id, dtype)."""
    shared = {} if shared is None else shared

    def encoded(
        arrays: Mapping[str, np.ndarray], dtype: TransferDtype
    ) -> tuple[ArrayRecord, list[str]]:
        key = (id(arrays), dtype)
        if key not in shared:
            shared[key] = weights_to_record(arrays, dtype)
        return shared[key]

    content = RecordDict(
        {
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
                    "transfer": req.transfer,
                    "privacy": req.privacy.model_dump_json(exclude_defaults=True),
                    "planned_rounds": int(req.planned_rounds),
                }
            ),
        }
    )
    _put(content, "global", encoded(req.weights, req.transfer))
    if req.cross:
        content["task"]["cross"] = list(req.cross)
        for i, w in enumerate(req.cross.values()):
            _put(content, f"cross.{i}", encoded(w, req.transfer))
    if req.home:
        content["task"]["home"] = True
    if req.steps:
        content["task"]["steps"] = int(req.steps)
    if req.synth_step is not None:
        content["task"]["synth_step"] = req.synth_step.to_json()
    if req.optimizer_state is not None:
        _put(content, "optimizer", encoded(req.optimizer_state, "float32"))
    if req.secure is not None:
        put_payload(content, "secure", req.secure)
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
        weights=record_to_weights(content["global"], _cast_names(content, "global")),
        optimizer_mode=optimizer_mode(str(task.get("optimizer_mode", DEFAULT_MODE))),
        proximal_mu=float(task.get("proximal_mu", 0.0)),
        optimizer_state=record_to_weights(content["optimizer"]) if "optimizer" in content else None,
        min_summary_cases=int(task.get("min_summary_cases", MIN_SUMMARY_CASES)),
        transfer=transfer_dtype(str(task.get("transfer", DEFAULT_TRANSFER))),
        privacy=PrivacyConfig.model_validate_json(str(task.get("privacy", "{}"))),
        secure=get_payload(content, "secure", writable=True),
        planned_rounds=int(task.get("planned_rounds", 0)),
        synth_step=SynthStep.from_json(str(task["synth_step"])) if "synth_step" in task else None,
        cross=_cross_models(content),
        home=bool(task.get("home", False)),
        steps=int(task.get("steps", 0)),
    )


def _cross_models(content: RecordDict) -> dict[str, Weights]:
    """The other sites' local models of a request (label -> weights); a ValueError for a
    label that is not ``site@round`` or a record that is missing."""
    labels = [str(x) for x in content["task"].get("cross", [])]  # type: ignore[union-attr]
    out = {}
    for i, label in enumerate(labels):
        parse_cross_label(label)
        name = f"cross.{i}"
        if name not in content or label in out:
            raise ValueError(f"cross-site model {label!r} missing or repeated in the request")
        out[label] = record_to_weights(content[name], _cast_names(content, name))  # type: ignore[arg-type]
    return out


def _put_summaries(
    content: RecordDict, name: str, summaries: Mapping[str, Mapping[str, Summary]],
    prefix: str = "",
) -> None:  # fmt: skip
    """``summaries[region][metric]`` as the metric record ``name`` (keys
    ``<prefix><region>/<metric>/{mean,std,n}``), merged into one already there."""
    rec = content[name] if name in content else MetricRecord({})
    for region, by_metric in summaries.items():
        for metric, s in by_metric.items():
            rec[f"{prefix}{region}/{metric}/mean"] = float(s.mean)  # type: ignore[index]
            rec[f"{prefix}{region}/{metric}/std"] = float(s.std)  # type: ignore[index]
            rec[f"{prefix}{region}/{metric}/n"] = int(s.n)  # type: ignore[index]
    content[name] = rec


def _get_summaries(rec: MetricRecord) -> dict[str, dict[str, dict[str, Summary]]]:
    """What ``_put_summaries`` wrote, as ``{prefix: {region: {metric: Summary}}}`` (the
    prefix without its trailing ``/``; "" for a record written without one)."""
    out: dict[str, dict[str, dict[str, Summary]]] = {}
    for key in rec:
        head, _, part = str(key).rpartition("/")
        if part != "mean":
            continue
        rest, _, metric = head.rpartition("/")
        prefix, _, region = rest.rpartition("/")
        out.setdefault(prefix, {}).setdefault(region, {})[metric] = Summary(
            float(rec[f"{head}/mean"]),
            float(rec[f"{head}/std"]),
            int(rec[f"{head}/n"]),  # type: ignore[arg-type]
        )
    return out


def encode_reply(rep: TaskReply, transfer: TransferDtype = DEFAULT_TRANSFER) -> RecordDict:
    """A reply; its weights in the request's ``transfer`` dtype, its optimizer state as
    it is."""
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
    if rep.worker is not None:
        metrics["worker"] = int(rep.worker)
    if rep.lr is not None:
        metrics["lr"] = float(rep.lr)
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
        _put(content, "weights", weights_to_record(rep.weights, transfer))
    if rep.optimizer_state is not None:
        _put(content, "optimizer", weights_to_record(rep.optimizer_state))
    if rep.hidden is not None:
        put_payload(content, "hidden", rep.hidden)
    for label, summaries in rep.cross.items():
        _put_summaries(content, "cross", summaries, f"{label}/")
    if rep.home:
        _put_summaries(content, "home", rep.home)
    if rep.privacy_spent is not None:
        content["privacy_spent"] = ConfigRecord({"json": rep.privacy_spent.model_dump_json()})
    return content


def decode_reply(content: RecordDict) -> TaskReply:
    """A site's reply at the aggregator: its arrays are read-only views of the message's
    bytes (the float16-sent weights: new float32 arrays)."""
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
        weights=_reply_arrays(content, "weights"),
        n_train=int(m["n_train"]),
        n_val=int(m["n_val"]),
        train_loss=float(m["train_loss"]) if "train_loss" in m else None,
        lr=float(m["lr"]) if "lr" in m else None,
        train_wall_s=float(m["train_wall_s"]),
        val_wall_s=float(m["val_wall_s"]),
        startup_s=float(m.get("startup_s", 0.0)),
        worker=int(m["worker"]) if "worker" in m else None,  # type: ignore[arg-type]
        validation=validation,
        validated=bool(m.get("validated", bool(validation))),
        optimizer_state=_reply_arrays(content, "optimizer"),
        compute=_compute_used(content["site"]),
        hidden=get_payload(content, "hidden", writable=False),
        privacy_spent=_privacy_spent(content),
        cross=_reply_cross(content),
        home=_get_summaries(content["home"]).get("", {}) if "home" in content else {},  # type: ignore[arg-type]
    )


def _reply_cross(content: RecordDict) -> dict[str, dict[str, dict[str, Summary]]]:
    """A reply's cross-site summaries by model label (a ValueError for a label that is not
    ``site@round``); the coordinator bounds the values (``bounds.check_cross``)."""
    if "cross" not in content:
        return {}
    out = _get_summaries(content["cross"])  # type: ignore[arg-type]
    for label in out:
        parse_cross_label(label)
    return out


def _privacy_spent(content: RecordDict) -> PrivacySpent | None:
    if "privacy_spent" not in content:
        return None
    return PrivacySpent.model_validate_json(str(content["privacy_spent"]["json"]))  # type: ignore[index]


def put_payload(content: RecordDict, name: str, payload: Payload) -> None:
    """``payload`` into ``content`` as two records: ``<name>.arrays`` (its numpy arrays,
    ``.npy`` format) and ``<name>.values`` (bytes, text, numbers)."""
    arrays = {k: array_to_flower(v) for k, v in payload.items() if isinstance(v, np.ndarray)}
    values = {k: v for k, v in payload.items() if not isinstance(v, np.ndarray)}
    content[f"{name}.arrays"] = ArrayRecord(array_dict=arrays)
    content[f"{name}.values"] = ConfigRecord(values)  # type: ignore[arg-type]


def get_payload(content: RecordDict, name: str, writable: bool) -> Payload | None:
    """What ``put_payload`` put under ``name`` (None when absent); arrays are read-only
    views of the message's bytes unless ``writable``."""
    if f"{name}.values" not in content:
        return None
    out: Payload = dict(content[f"{name}.values"])  # type: ignore[arg-type]
    for k, arr in content[f"{name}.arrays"].items():  # type: ignore[union-attr]
        out[k] = flower_to_array(arr, writable)
    return out


def encode_payload(payload: Payload) -> RecordDict:
    """A query's content (``Transport.query``): one payload."""
    content = RecordDict({})
    put_payload(content, "payload", payload)
    return content


def decode_payload(content: RecordDict, writable: bool = True) -> Payload:
    out = get_payload(content, "payload", writable)
    if out is None:
        raise ValueError("no payload in the message")
    return out


def _reply_arrays(content: RecordDict, name: str) -> Weights | None:
    if name not in content:
        return None
    return record_to_weights(content[name], _cast_names(content, name), writable=False)  # type: ignore[arg-type]


def _compute_used(site: ConfigRecord) -> ComputeUsed | None:
    """The device and precision a reply says it used; None when it says none, or says
    something no fedseg site writes (a long or odd text: nothing of it is recorded)."""
    try:
        return ComputeUsed.from_extra(dict(site))
    except ValidationError:
        return None


def encode_hello_reply(site: str, declared: DeclaredCases | None = None) -> RecordDict:
    """A site's hello: its name and, when its data folder reads, its split's case counts
    and the modalities it has (optional key ``modalities``)."""
    rec = ConfigRecord({"name": site})
    if declared is not None:
        rec["n_train"], rec["n_val"] = int(declared.n_train), int(declared.n_val)
        if declared.modalities is not None:
            rec["modalities"] = [str(m) for m in declared.modalities]
    return RecordDict({"site": rec})


def decode_hello_reply(content: RecordDict) -> tuple[str, DeclaredCases | None]:
    """The site's name and declared case counts and modalities (None when it declared
    none; modalities None from a site that did not say them: an older fedseg)."""
    rec = content["site"]
    declared = None
    if "n_train" in rec and "n_val" in rec:
        mods = rec.get("modalities")
        declared = DeclaredCases(
            n_train=int(rec["n_train"]), n_val=int(rec["n_val"]),
            modalities=None if mods is None else [str(m) for m in mods],  # type: ignore[union-attr]
        )  # fmt: skip
    return str(rec["name"]), declared
