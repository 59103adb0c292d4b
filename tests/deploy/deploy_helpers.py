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
