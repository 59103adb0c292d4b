"""A bare Flower app: each round, send the same arrays to every node and get them back.

The baseline of benchmarks/federation.py: what a round costs in Flower alone (messages,
process start-up, polling), with no training, validation, checks or bookkeeping. The
ServerApp polls replies every run-config ``poll_s`` seconds, which the benchmark sets to
fedseg's own poll on the same engine (Flower's send_and_receive sleeps 3 s). It runs on
plain SuperNodes (Flower's own isolation; a fedseg site's app guard refuses it) or on
Flower's simulation engine.

The ServerApp writes its result to run-config ``result``: ``{"rounds": [...], "sent_bytes":
N}``, or ``{"error": "<one line>"}`` as soon as a node answers with an error instead of the
arrays, or when ``timeout_s`` passes before the nodes connect or reply.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

serverapp = ServerApp()
clientapp = ClientApp()
#: the default reply poll (fedseg's ServerApp on the deployment engine)
POLL_S = 0.25


class BareExchangeError(RuntimeError):
    """The exchange cannot go on (the message says why, on one line)."""


def reply_bytes(reply: Message) -> int:
    """Bytes of the arrays a node echoed; a :class:`BareExchangeError` if its reply carries
    an error instead (a SuperNode that refused or failed the task)."""
    if reply.has_error():
        err = reply.error
        reason = " ".join(str(err.reason).split())[:300]
        raise BareExchangeError(
            f"node {reply.metadata.src_node_id} replied with Flower error {err.code} "
            f"instead of the arrays: {reason}"
        )
    return int(reply.content["w"].count_bytes())


def exchange(grid: Grid, record: ArrayRecord, rounds: int, n_nodes: int,
             timeout_s: float, poll_s: float = POLL_S) -> list[dict[str, object]]:  # fmt: skip
    """Wait for ``n_nodes`` nodes, then ``rounds`` rounds of send-and-echo, replies pulled
    every ``poll_s``; per round its wall time and the bytes each reply carried."""
    end = time.monotonic() + timeout_s
    while len(nodes := list(grid.get_node_ids())) < n_nodes:
        if time.monotonic() > end:
            raise BareExchangeError(
                f"only {len(nodes)} of {n_nodes} SuperNodes connected within {timeout_s:.0f} s"
            )
        time.sleep(poll_s)
    out: list[dict[str, object]] = []
    for r in range(rounds):
        t0 = time.monotonic()
        msgs = [grid.create_message(RecordDict({"w": record}), "train", n, str(r)) for n in nodes]
        pending = set(grid.push_messages(msgs))
        nbytes = []
        while pending:
            for m in grid.pull_messages(list(pending)):
                pending.discard(m.metadata.reply_to_message_id)
                nbytes.append(reply_bytes(m))
            if pending:
                if time.monotonic() > end:
                    raise BareExchangeError(
                        f"round {r + 1}: {len(pending)} of {len(nodes)} replies missing "
                        f"after {timeout_s:.0f} s"
                    )
                time.sleep(poll_s)
        out.append({"round": r + 1, "wall_s": time.monotonic() - t0, "bytes": nbytes})
    return out


@serverapp.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    with np.load(str(cfg["arrays"]), allow_pickle=False) as z:
        record = ArrayRecord(array_dict={k: Array(z[k]) for k in z.files})
    try:
        rounds = exchange(grid, record, int(cfg["rounds"]), int(cfg["nodes"]),
                          float(cfg["timeout_s"]), float(cfg.get("poll_s", POLL_S)))  # fmt: skip
        result: dict[str, object] = {"rounds": rounds, "sent_bytes": record.count_bytes()}
    except BareExchangeError as e:
        result = {"error": str(e)}
    path = Path(str(cfg["result"]))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(path)  # whole or absent: the benchmark polls for it


@clientapp.train()
def train(msg: Message, context: Context) -> Message:
    return Message(RecordDict({"w": msg.content["w"]}), reply_to=msg)
