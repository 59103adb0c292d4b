"""The Flower ServerApp: runs ``Coordinator`` with Flower's Grid as the transport.

Run config keys (``flwr run ... --run-config``): ``run-dir`` (absolute path of the run
folder, holding ``plan.yaml``), ``run-id`` (our run's name, shared with the sites) and,
under the simulation engine, ``sim-nodes`` (then replies are polled every ``SIM_POLL_S``).
Sites are found by asking every new node its name (a ``query.hello`` message answered
from the node's ``--node-config site-name=NAME``); the answer also declares the site's
split case counts, which bound its reports (``rounds.bounds``).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedseg.federation.engine.app_bundle import SIM_NODES_KEY
from fedseg.federation.engine.messages import (
    HELLO,
    QUERY,
    TRAIN,
    TaskRequest,
    content_bytes,
    decode_hello_reply,
    decode_payload,
    decode_reply,
    encode_payload,
    encode_requests,
)
from fedseg.federation.rounds.coordinator import (
    Coordinator,
    Exchanged,
    SiteFailure,
    record_failure,
)
from fedseg.federation.rounds.tasks import Payload
from fedseg.federation.security.enrollment import enrolled_nodes
from fedseg.run_folder import DeclaredCases, SiteRoundStatus
from fedseg.tracking.store import RunStore

#: How often replies are polled. Flower's own send_and_receive sleeps 3 s between polls;
#: polling ourselves keeps the aggregator's share of a round's latency small.
POLL_S = 0.25
#: The same under Flower's simulation engine (run-config ``sim-nodes`` set): replies sit in
#: the SuperLink's in-process state, so a poll is cheap and the round's latency is ours.
SIM_POLL_S = 0.05
HELLO_TIMEOUT_S = 120.0


class FlowerTransport:
    """``coordinator.Transport`` over a Flower ``Grid``."""

    def __init__(
        self,
        grid: Grid,
        log: Callable[[str], None] = print,
        enrolled: dict[int, str] | None = None,
        poll_s: float = POLL_S,
    ) -> None:
        """``enrolled`` (deployment): node id -> site name, as registered with the node's
        key. When given, a node's site is its enrolled name, never the name it claims, and
        nodes not enrolled are ignored, so one site cannot take another's place.
        ``poll_s``: how often replies are pulled."""
        self.grid = grid
        self.poll_s = poll_s
        self.log = log
        self.enrolled = enrolled
        self.node_site: dict[int, str] = {}
        #: site -> the case counts its latest hello declared
        self.declared: dict[str, DeclaredCases] = {}
        self._asked: set[int] = set()
        #: message id -> (site, node) of the training messages an exchange stopped
        #: waiting for
        self._late: dict[str, tuple[str, int]] = {}

    def connected_sites(self, wanted: Sequence[str], wait_s: float) -> list[str]:
        deadline = time.monotonic() + wait_s
        while True:
            self._identify_new_nodes(deadline)
            alive = set(self.grid.get_node_ids())
            found = {site for node, site in self.node_site.items() if node in alive}
            if set(wanted) <= found or time.monotonic() >= deadline:
                return [s for s in wanted if s in found]
            time.sleep(1.0)

    def _identify_new_nodes(self, deadline: float) -> None:
        new = [n for n in self.grid.get_node_ids() if n not in self._asked]
        if not new:
            return
        msgs = [
            self.grid.create_message(
                RecordDict({"hello": ConfigRecord({"from": "fedseg"})}), HELLO, n, "hello"
            )
            for n in new
        ]
        ids = {mid: n for mid, n in zip(self.grid.push_messages(msgs), new, strict=True)}
        self._asked.update(new)
        end = max(deadline, time.monotonic() + HELLO_TIMEOUT_S)
        while ids and time.monotonic() < end:
            for reply in self.grid.pull_messages(list(ids)):
                node = ids.pop(reply.metadata.reply_to_message_id, None)
                if node is None:
                    continue
                if reply.has_error():
                    self.log(f"node {node} did not say its site name: {reply.error.reason}")
                    continue
                site, declared = decode_hello_reply(reply.content)
                if self.enrolled is not None:
                    trusted = self.enrolled.get(node)
                    if trusted != site:
                        self.log(
                            f"node {node} claims site {site!r} but is enrolled as "
                            f"{trusted!r}; using the enrolled name"
                            if trusted
                            else f"node {node} ({site!r}) is not enrolled; ignored"
                        )
                    if trusted is None:
                        continue
                    site = trusted
                stale = [n for n, s in self.node_site.items() if s == site]
                for n in stale:  # a restarted site comes back as a new node
                    del self.node_site[n]
                self.node_site[node] = site
                if declared is not None:
                    self.declared[site] = declared
                else:
                    self.declared.pop(site, None)
            if ids:
                time.sleep(self.poll_s)

    def declared_cases(self) -> dict[str, DeclaredCases]:
        return dict(self.declared)

    def exchange(
        self,
        requests: dict[str, TaskRequest],
        timeout_s: float,
        on_result: Callable[[str, Exchanged], None],
        stop_when: Callable[[set[str]], bool] | None = None,
    ) -> None:
        """``coordinator.Transport.exchange``: the round's model is encoded once for all
        sites (``messages.encode_requests``); each reply is decoded and handed over as it
        is pulled, and nothing of it is kept here (replies pulled in the same poll, every
        ``poll_s``, are in memory together until each is handed over). ``stop_when`` is
        asked after each poll; the messages still out when it stops the exchange, or at
        the timeout, are kept for ``pull_late``."""
        site_node = {s: n for n, s in self.node_site.items()}
        for site in [s for s in requests if s not in site_node]:
            on_result(
                site, Exchanged(SiteFailure(SiteRoundStatus.FAILED, "not connected"), 0, 0, 0.0)
            )
        contents = encode_requests({s: r for s, r in requests.items() if s in site_node})
        msgs, sites, sizes = [], [], {}
        for site, content in contents.items():
            sizes[site] = content_bytes(content)
            msgs.append(self.grid.create_message(
                content, TRAIN, site_node[site], str(requests[site].round)
            ))  # fmt: skip
            sites.append(site)
        del contents
        t0 = time.monotonic()
        pending = dict(zip(self.grid.push_messages(msgs), sites, strict=True))
        del msgs  # the encoded model is Flower's now
        received: set[str] = set(requests) - set(sites)  # the not connected: handed over
        while pending and time.monotonic() - t0 < timeout_s:
            replies = list(self.grid.pull_messages(list(pending)))
            while replies:
                reply = replies.pop(0)
                site = pending.pop(reply.metadata.reply_to_message_id, None)
                if site is not None:
                    on_result(site, _exchanged(reply, sizes[site], time.monotonic() - t0))
                    received.add(site)
                del reply  # its bytes go as soon as the coordinator has parked them
            if pending and stop_when is not None and stop_when(set(received)):
                self._late.update({m: (s, site_node[s]) for m, s in pending.items()})
                return  # the coordinator records the sites still out
            if pending:
                time.sleep(self.poll_s)
        self._late.update({m: (s, site_node[s]) for m, s in pending.items()})
        for site in pending.values():
            late = SiteFailure(SiteRoundStatus.TIMEOUT, f"no reply within {timeout_s:.0f} s")
            on_result(site, Exchanged(late, sizes[site], 0, time.monotonic() - t0))

    def pull_late(self) -> set[str]:
        """``coordinator.Transport.pull_late``: pulls the replies to the messages earlier
        exchanges stopped waiting for, drops them (errors too: the site is free either
        way) and returns their sites. A message to a node that has gone since (a
        restarted site comes back as a new node) is given up: its site is free."""
        if not self._late:
            return set()
        free = set()
        for reply in self.grid.pull_messages(list(self._late)):
            late = self._late.pop(reply.metadata.reply_to_message_id, None)
            if late is not None:
                free.add(late[0])
            del reply
        alive = set(self.grid.get_node_ids())
        for mid, (site, node) in list(self._late.items()):
            if node not in alive:
                del self._late[mid]
                free.add(site)
        return free - {site for site, _ in self._late.values()}

    def query(
        self, kind: str, payloads: dict[str, Payload], timeout_s: float
    ) -> dict[str, Payload | SiteFailure]:
        """``coordinator.Transport.query``: one ``query.<kind>`` message per site, the
        answers pulled every ``poll_s`` until all came or ``timeout_s``."""
        site_node = {s: n for n, s in self.node_site.items()}
        out: dict[str, Payload | SiteFailure] = {
            s: SiteFailure(SiteRoundStatus.FAILED, "not connected")
            for s in payloads if s not in site_node
        }  # fmt: skip
        sites = [s for s in payloads if s in site_node]
        msgs = [self.grid.create_message(encode_payload(payloads[s]), QUERY + kind,
                                         site_node[s], kind) for s in sites]  # fmt: skip
        pending = dict(zip(self.grid.push_messages(msgs), sites, strict=True))
        t0 = time.monotonic()
        while pending and time.monotonic() - t0 < timeout_s:
            for reply in self.grid.pull_messages(list(pending)):
                site = pending.pop(reply.metadata.reply_to_message_id, None)
                if site is None:
                    continue
                if reply.has_error():
                    reason = (reply.error.reason or f"error code {reply.error.code}").strip()
                    out[site] = SiteFailure(SiteRoundStatus.FAILED, error_line(reason))
                    continue
                try:
                    out[site] = decode_payload(reply.content, writable=False)
                except (KeyError, ValueError, TypeError) as exc:
                    out[site] = SiteFailure(SiteRoundStatus.FAILED, f"malformed answer: {exc}")
            if pending:
                time.sleep(self.poll_s)
        for site in pending.values():
            out[site] = SiteFailure(
                SiteRoundStatus.TIMEOUT, f"no answer to {kind} within {timeout_s:.0f} s"
            )
        return out


def _exchanged(reply: Message, sent: int, wall: float) -> Exchanged:
    """A pulled reply as a site's result (its error, or the decoded reply)."""
    if reply.has_error():
        reason = (reply.error.reason or f"error code {reply.error.code}").strip()
        return Exchanged(SiteFailure(SiteRoundStatus.FAILED, error_line(reason)), sent, 0, wall)
    try:
        rep = decode_reply(reply.content)
    except (KeyError, ValueError, TypeError) as exc:
        failed = SiteFailure(SiteRoundStatus.FAILED, f"malformed reply: {exc}")
        return Exchanged(failed, sent, 0, wall)
    return Exchanged(rep, sent, content_bytes(reply.content), wall)


_FLOWER_REASON = re.compile(r"^<class '(?:[\w.]*\.)?(\w+)'>:<'(.*)'>$", re.DOTALL)


def error_line(reason: str) -> str:
    """One line from a Flower error reason (``<class 'pkg.Error'>:<'message'>`` ->
    ``Error: message``; otherwise its last non-empty line)."""
    m = _FLOWER_REASON.match(reason.strip())
    text = f"{m.group(1)}: {m.group(2)}" if m else reason
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else text


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_dir = Path(str(context.run_config["run-dir"]))
    run_id = str(context.run_config.get("run-id", run_dir.name))
    poll_s = SIM_POLL_S if context.run_config.get(SIM_NODES_KEY) else POLL_S
    with RunStore(run_dir) as store:
        # The launcher watches this pid: a killed aggregator is noticed at once.
        store.meta.set_aggregator_pid(os.getpid())
        try:  # the launcher checked the plan; a run folder edited since is still told
            coordinator = Coordinator(
                run_dir,
                FlowerTransport(grid, enrolled=enrolled_nodes(run_dir), poll_s=poll_s),
                run_id=run_id,
            )
        except Exception as exc:
            record_failure(store, run_dir, exc)
            raise
    coordinator.run()
