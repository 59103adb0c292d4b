"""A bare Flower app: each round, send the same arrays to every node and get them back.

The baseline of benchmarks/federation.py: what a round costs in Flower alone (messages,
process start-up, polling), with no training, validation, checks or bookkeeping. The
ServerApp polls replies every 0.25 s as fedseg's does (Flower's send_and_receive sleeps 3 s).
"""

from __future__ import annotations

import json
import time

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

serverapp = ServerApp()
clientapp = ClientApp()


@serverapp.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    with np.load(str(cfg["arrays"]), allow_pickle=False) as z:
        record = ArrayRecord(array_dict={k: Array(z[k]) for k in z.files})
    n_nodes = int(cfg["nodes"])
    while len(list(grid.get_node_ids())) < n_nodes:
        time.sleep(0.25)
    nodes = list(grid.get_node_ids())
    rounds = []
    for r in range(int(cfg["rounds"])):
        t0 = time.monotonic()
        msgs = [grid.create_message(RecordDict({"w": record}), "train", n, str(r)) for n in nodes]
        pending = set(grid.push_messages(msgs))
        nbytes = []
        while pending:
            for m in grid.pull_messages(list(pending)):
                pending.discard(m.metadata.reply_to_message_id)
                nbytes.append(m.content["w"].count_bytes())
            if pending:
                time.sleep(0.25)
        rounds.append({"round": r + 1, "wall_s": time.monotonic() - t0, "bytes": nbytes})
    with open(str(cfg["result"]), "w") as fh:
        json.dump({"rounds": rounds, "sent_bytes": record.count_bytes()}, fh)


@clientapp.train()
def train(msg: Message, context: Context) -> Message:
    return Message(RecordDict({"w": msg.content["w"]}), reply_to=msg)
