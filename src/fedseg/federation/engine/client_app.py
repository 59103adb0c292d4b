"""The Flower ClientApp: a site's process answers the aggregator's messages.

Node config (``flower-supernode --node-config``): ``site-name`` (the name the plan knows
it by), ``data-dir`` (the site's data folder), optional ``workspace`` (private state;
default ``<data-dir>/.fedseg/<run-id>``) and ``threads`` (torch CPU threads, 0: default).
"""

from __future__ import annotations

import os
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedseg.federation.engine.messages import decode_request, encode_hello_reply, encode_reply
from fedseg.federation.rounds.tasks import declared_cases

#: Node-config keys, shared with ``fedseg site start`` (federation.deploy).
NODE_SITE_NAME = "site-name"
NODE_DATA_DIR = "data-dir"

app = ClientApp()


def _site(context: Context) -> str:
    site = context.node_config.get(NODE_SITE_NAME)
    if not site:
        raise ValueError(
            f"this site process has no name: start it with --node-config {NODE_SITE_NAME}=NAME"
        )
    return str(site)


@app.query("hello")
def hello(msg: Message, context: Context) -> Message:
    data = context.node_config.get(NODE_DATA_DIR)
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


@app.train()
def train(msg: Message, context: Context) -> Message:
    startup_s = process_age_s()
    cfg = context.node_config
    threads = int(cfg.get("threads", 0) or 0)
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    data = cfg.get(NODE_DATA_DIR)
    if not data:
        raise ValueError(
            f"site {_site(context)} has no data folder: set --node-config {NODE_DATA_DIR}=DIR"
        )
    from fedseg.federation.rounds.site import run_task  # torch: only where training happens

    ws = cfg.get("workspace")
    reply = run_task(
        _site(context), Path(str(data)), decode_request(msg.content),
        Path(str(ws)) if ws else None,
    )  # fmt: skip
    reply.startup_s = startup_s
    return Message(encode_reply(reply), reply_to=msg)
