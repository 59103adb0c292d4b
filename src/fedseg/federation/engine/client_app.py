"""The Flower ClientApp: a site's process answers the aggregator's messages.

Node config (``flower-supernode --node-config``): ``site-name`` (the name the plan knows
it by), ``data-dir`` (the site's data folder), optional ``workspace`` (private state;
default ``<data-dir>/.fedseg/<run-id>``), ``threads`` (torch CPU threads, 0: default) and
``min-summary-cases`` (the site's own floor for what its summaries may cover, default 3;
``rounds.disclosure``), and, each only when the site's operator chose it, ``device``,
``precision``, ``channels-last`` and ``compile`` (``fedseg site start --device ...``: this
machine's ``ComputeOverrides`` over the recipe's ``train.compute``; ``compute_node_config``
writes them, ``node_compute_overrides`` reads them back).

Under Flower's simulation engine a node is virtual and its node config holds only
``partition-id`` and ``num-partitions``; :func:`node_settings` then takes that partition's
entry of the run's node table (run-config key ``sim-nodes``: ``flwr-home/sim_nodes.json``,
written by ``engine_run`` with the same settings a SuperNode gets on its command line).
A node whose own config names its site (every SuperNode: a deployment) never reads the
table, whatever the run config says: the aggregator chooses the run config, not who a site
is. Every handler reads the site's settings through :func:`node_settings`.

A failed task is answered with an error whose reason is ``TaskFailed``'s line (category and
scrubbed text), never the exception's own text; the full traceback is in the site's log.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flwr.app import ConfigRecord, Context, Error, Message
from flwr.clientapp import ClientApp

from fedseg.errors import FedsegError
from fedseg.federation.engine.app_bundle import SIM_NODES_KEY, ConfigValue
from fedseg.federation.engine.messages import (
    decode_payload,
    decode_request,
    encode_hello_reply,
    encode_payload,
    encode_reply,
)
from fedseg.federation.engine.task_worker import TASK_T0_ENV
from fedseg.federation.rounds.site_queries import SiteContext, answer, queries
from fedseg.federation.rounds.tasks import declared_cases

if TYPE_CHECKING:  # torch-free at run time: a site's hello must start fast
    from fedseg.model.compute import ComputeOverrides

#: Node-config keys, shared with ``fedseg site start`` (federation.deploy).
NODE_SITE_NAME = "site-name"
NODE_DATA_DIR = "data-dir"
NODE_MIN_SUMMARY_CASES = "min-summary-cases"
#: the site's consortium credentials folder (site.key, site.crt, ca.crt), for privacy
#: protocols that sign what a site sends (secure aggregation)
NODE_CREDS_DIR = "creds-dir"
#: the ``context.state`` record holding a site's private protocol state between messages
STATE_RECORD = "fedseg"
#: ``ComputeOverrides`` field -> its node-config key
NODE_COMPUTE = {
    "device": "device", "precision": "precision", "channels_last": "channels-last",
    "compile": "compile",
}  # fmt: skip
#: Flower's error code of a ClientApp that raised (``flwr.common.constant.ErrorCode``)
CLIENT_APP_RAISED_EXCEPTION = 2
#: a virtual node's own node config under Flower's simulation engine
#: (``flwr.common.constant.PARTITION_ID_KEY``, ``NUM_PARTITIONS_KEY``)
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"

app = ClientApp()


def compute_node_config(overrides: ComputeOverrides | None) -> dict[str, ConfigValue]:
    """The node-config entries of a site's compute choices (none for the recipe's own)."""
    if overrides is None:
        return {}
    return {NODE_COMPUTE[k]: v for k, v in overrides.model_dump(exclude_none=True).items()}


def node_compute_overrides(node_config: Mapping[str, Any]) -> ComputeOverrides:
    """The site's compute choices from its node config (``compute_node_config``'s)."""
    from fedseg.model.compute import ComputeOverrides  # torch: only where training happens

    return ComputeOverrides.model_validate(
        {field: node_config[key] for field, key in NODE_COMPUTE.items() if key in node_config}
    )


def simulated(context: Context) -> bool:
    """Whether this node is a simulation engine's virtual node (no site name of its own)."""
    return NODE_SITE_NAME not in context.node_config


def node_settings(context: Context) -> Mapping[str, ConfigValue]:
    """The site's settings (site-name, data-dir, threads, ...): the node's own config when
    it names its site (a SuperNode; the run config's ``sim-nodes`` is then ignored), else
    entry ``partition-id`` of the simulation's node table, which must have exactly
    ``num-partitions`` entries."""
    own = context.node_config
    if NODE_SITE_NAME in own:
        return own
    table = str(context.run_config.get(SIM_NODES_KEY, "") or "")
    part, total = own.get(PARTITION_ID), own.get(NUM_PARTITIONS)
    if not table or not isinstance(part, int) or not isinstance(total, int):
        return own  # no site name: the handlers say so
    try:
        nodes = json.loads(Path(table).read_text())
    except (OSError, ValueError) as exc:
        raise FedsegError(f"the simulation's node table {table} is not readable: {exc}") from None
    if not isinstance(nodes, list) or len(nodes) != total or not 0 <= part < total:
        n = len(nodes) if isinstance(nodes, list) else "no"
        raise FedsegError(
            f"the simulation has {total} nodes but its node table {table} lists {n} sites: "
            "start the run again with `fedseg simulate --engine simulation`"
        )
    entry = nodes[part]
    if not isinstance(entry, dict) or not entry.get(NODE_SITE_NAME):
        raise FedsegError(f"entry {part} of the simulation's node table {table} names no site")
    return entry


def _site(context: Context) -> str:
    site = node_settings(context).get(NODE_SITE_NAME)
    if not site:
        raise ValueError(
            f"this site process has no name: start it with --node-config {NODE_SITE_NAME}=NAME"
        )
    return str(site)


def site_context(context: Context) -> SiteContext:
    """The site as its protocol steps see it; ``state`` is a copy of the run's private
    state (``save_state`` writes it back into Flower's ``context.state``)."""
    cfg = node_settings(context)
    rec = context.state.get(STATE_RECORD)
    state = {str(k): bytes(v) for k, v in rec.items()} if rec is not None else {}  # type: ignore[union-attr, arg-type]
    data, ws, creds = cfg.get(NODE_DATA_DIR), cfg.get("workspace"), cfg.get(NODE_CREDS_DIR)
    return SiteContext(
        site=_site(context), data=Path(str(data)) if data else None,
        workspace=Path(str(ws)) if ws else None, state=state,
        creds=Path(str(creds)) if creds else None,
    )  # fmt: skip


def save_state(context: Context, ctx: SiteContext) -> None:
    """Keep ``ctx.state`` in Flower's ``context.state`` (it stays on the site's node)."""
    context.state[STATE_RECORD] = ConfigRecord(dict(ctx.state))  # type: ignore[arg-type]


def _query_handler(kind: str) -> Any:
    def handle(msg: Message, context: Context) -> Message:
        ctx = site_context(context)
        try:
            out = answer(kind, ctx, decode_payload(msg.content))
        except Exception as exc:  # only the category and a scrubbed line leave the site
            from fedseg.federation.rounds.disclosure import ErrorCategory, public_error
            from fedseg.federation.rounds.site import site_log

            site_log(ctx.workspace, f"{kind} failed: {exc!r}")
            reason = public_error(exc, ErrorCategory.INTERNAL)
            return Message(Error(CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=msg)
        save_state(context, ctx)
        return Message(encode_payload(out), reply_to=msg)

    return handle


for _kind in queries():
    app.query(_kind)(_query_handler(_kind))


@app.query("hello")
def hello(msg: Message, context: Context) -> Message:
    data = node_settings(context).get(NODE_DATA_DIR)
    declared = declared_cases(Path(str(data))) if data else None
    return Message(encode_hello_reply(_site(context), declared), reply_to=msg)


def process_age_s() -> float:
    """Seconds since this process started (Linux; 0 elsewhere): the app's startup cost."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


def task_startup_s() -> float:
    """Seconds since this task was taken: since the warm worker took it (``TASK_T0_ENV``),
    else since this fresh process started (its imports are the task's start-up)."""
    t0 = os.environ.get(TASK_T0_ENV)
    if t0:
        with contextlib.suppress(ValueError):
            return max(0.0, time.time() - float(t0))
    return process_age_s()


@app.train()
def train(msg: Message, context: Context) -> Message:
    # a simulation's worker is long-lived: its age is not this task's start-up
    startup_s = 0.0 if simulated(context) else task_startup_s()
    cfg = node_settings(context)
    threads = int(cfg.get("threads", 0) or 0)
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    data = cfg.get(NODE_DATA_DIR)
    if not data:
        raise ValueError(
            f"site {_site(context)} has no data folder: set --node-config {NODE_DATA_DIR}=DIR"
        )
    # torch: only where training happens
    from fedseg.federation.rounds.disclosure import MIN_SUMMARY_CASES, ErrorCategory, public_error
    from fedseg.federation.rounds.site import TaskFailed, run_task, site_log

    ws = cfg.get("workspace")
    ctx = site_context(context)
    try:
        req = decode_request(msg.content)
    except Exception as exc:  # a malformed task: nothing of the site's in it
        site_log(None, f"malformed task: {exc!r}")
        reason = public_error(exc, ErrorCategory.INTERNAL)
        return Message(Error(CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=msg)
    try:
        reply = run_task(
            _site(context), Path(str(data)), req, Path(str(ws)) if ws else None,
            int(cfg.get(NODE_MIN_SUMMARY_CASES, MIN_SUMMARY_CASES)),
            node_compute_overrides(cfg), ctx,
        )  # fmt: skip
    except TaskFailed as exc:  # logged in full at the site; only the line travels
        return Message(Error(CLIENT_APP_RAISED_EXCEPTION, exc.line), reply_to=msg)
    save_state(context, ctx)
    reply.startup_s = startup_s
    return Message(encode_reply(reply, req.transfer), reply_to=msg)
