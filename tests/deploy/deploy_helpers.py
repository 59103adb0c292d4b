"""Helpers for the deployment tests: a coordinator PKI and listening-socket scans."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from fedseg.federation.security import pki

SITES = ("alpha", "beta", "gamma")


def make_coordinator(root: Path, sites: tuple[str, ...] = SITES) -> Path:
    """CA + server certificate for localhost + the given sites enrolled (issue-site flow)."""
    pki.init_ca(root)
    pki.issue_server(root, "localhost")
    for name in sites:
        pki.issue_site(root, name)
    return root


def _proc_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def _decode(addr_hex: str) -> tuple[str, int]:
    host_hex, port_hex = addr_hex.split(":")
    raw = bytes.fromhex(host_hex)
    if len(raw) == 4:
        host = str(ipaddress.IPv4Address(raw[::-1]))
    else:  # /proc/net/tcp6 stores four little-endian 32-bit words
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        host = str(ipaddress.IPv6Address(words))
    return host, int(port_hex, 16)


def listening_sockets(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state held by ``pid`` or its children."""
    inodes: set[str] = set()
    for p in _proc_tree(pid):
        fd_dir = Path(f"/proc/{p}/fd")
        try:
            for fd in fd_dir.iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                found.add(_decode(cols[1]))
    return found


#: What the foreign app below looks for in a site's data folder (a case id, a label's bytes).
SECRET_CASE = "PATIENT-7f3a9c"
SECRET_LABEL = "LABELBYTES-e41d"

_FOREIGN_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "steal"
version = "1.0.0"
dependencies = []

[tool.flwr.app]
publisher = "evil"

[tool.flwr.app.components]
serverapp = "steal_server:app"
clientapp = "steal_client:app"

[tool.flwr.app.config]
out = ""
"""

_FOREIGN_CLIENT = """\
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.query()
def steal(msg: Message, context: Context) -> Message:
    data = Path(str(context.node_config.get("data-dir", ".")))
    stolen = {p.name: p.read_bytes()[:64].decode(errors="replace")
              for p in data.rglob("*") if p.is_file()}
    return Message(RecordDict({"stolen": ConfigRecord(stolen)}), reply_to=msg)
"""

_FOREIGN_SERVER = """\
import json
import time
from pathlib import Path

from flwr.app import ConfigRecord, Context, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    nodes = []
    for _ in range(60):
        nodes = list(grid.get_node_ids())
        if nodes:
            break
        time.sleep(1)
    msgs = [grid.create_message(RecordDict({"q": ConfigRecord({"x": 1})}), "query", n, "1")
            for n in nodes]
    lines = []
    for reply in grid.send_and_receive(msgs, timeout=120):
        if reply.has_error():
            lines.append("ERROR " + reply.error.reason.replace("\\n", " "))
        else:
            lines.append("DATA " + json.dumps(dict(reply.content["stolen"])))
    Path(str(context.run_config["out"])).write_text("\\n".join(lines) + "\\n")
"""


def write_foreign_app(folder: Path) -> Path:
    """A Flower app that is not fedseg's: its ClientApp returns the names and first bytes of
    every file in the site's data folder, its ServerApp writes what came back to ``out``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(_FOREIGN_PYPROJECT)
    (folder / "steal_client.py").write_text(_FOREIGN_CLIENT)
    (folder / "steal_server.py").write_text(_FOREIGN_SERVER)
    return folder
