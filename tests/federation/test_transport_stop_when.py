"""The transports' side of the straggler cut (``Transport.exchange``'s ``stop_when`` and
``pull_late``), without engine processes.

``FlowerTransport``: a stand-in ``Grid`` holds real encoded replies (``messages.encode_reply``)
and hands them over when the test says they have come. ``stop_when`` ends the exchange with
the sites still out not handed over; ``pull_late`` pulls their late replies (and drops
them) or gives up on a node that has gone. ``LocalTransport`` (``fedseg compare``) runs the
sites one after the other and stops before the next one. The real-engine straggler run is
the simulation engine's slow test (issue 19, later step)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from fedseg.federation.engine import server_app
from fedseg.federation.engine.messages import encode_reply
from fedseg.federation.engine.server_app import FlowerTransport
from fedseg.federation.rounds.coordinator import Exchanged, SiteFailure
from fedseg.federation.rounds.tasks import TaskReply, TaskRequest
from fedseg.model.summary import Summary
from fedseg.run_folder import SiteRoundStatus


@dataclass
class StandInGrid:
    """What ``FlowerTransport`` uses of Flower's ``Grid``: messages are kept by id; a reply
    is pulled once the test made it ready (``ready``)."""

    nodes: set[int]
    sent: dict[str, int] = field(default_factory=dict)  # message id -> node
    ready: dict[str, Any] = field(default_factory=dict)  # message id -> reply content
    pulls: int = 0

    def get_node_ids(self) -> list[int]:
        return sorted(self.nodes)

    def create_message(self, content: Any, kind: str, node: int, group: str) -> Any:
        return SimpleNamespace(node=node)

    def push_messages(self, msgs: list[Any]) -> list[str]:
        ids = []
        for m in msgs:
            mid = f"m{len(self.sent)}"
            self.sent[mid] = m.node
            ids.append(mid)
        return ids

    def pull_messages(self, ids: list[str]) -> list[Any]:
        self.pulls += 1
        out = []
        for mid in ids:
            if mid in self.ready:
                content = self.ready.pop(mid)
                out.append(SimpleNamespace(
                    metadata=SimpleNamespace(reply_to_message_id=mid), content=content,
                    has_error=lambda: False,
                ))  # fmt: skip
        return out

    def reply(self, node: int, site: str) -> None:
        """The reply of ``node``'s latest message comes in."""
        mid = max((m for m, n in self.sent.items() if n == node), key=lambda m: int(m[1:]))
        rep = TaskReply(site=site, n_train=1, n_val=1, train_loss=0.5,
                        weights={"w": np.ones(2, np.float32)},
                        validation={"mean": {"dice": Summary(0.5, 0.1, 1)}})  # fmt: skip
        self.ready[mid] = encode_reply(rep)


def _request() -> TaskRequest:
    return TaskRequest(round=1, model_round=0, validate=True, epochs=1, seed=0, run_id="r",
                       recipe="{}", weights={"w": np.zeros(2, np.float32)})  # fmt: skip


@pytest.fixture(autouse=True)
def _fast_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_app, "POLL_S", 0.01)


def _transport(grid: StandInGrid) -> FlowerTransport:
    t = FlowerTransport(grid, log=lambda _: None)  # type: ignore[arg-type]
    t.node_site = {1: "a", 2: "b", 3: "c"}
    return t


def test_stop_when_ends_the_exchange_and_late_replies_are_pulled() -> None:
    grid = StandInGrid({1, 2, 3})
    t = _transport(grid)
    got: dict[str, Exchanged] = {}
    asked: list[set[str]] = []

    def stop_when(received: set[str]) -> bool:
        asked.append(set(received))
        if not grid.ready and "a" not in received:
            grid.reply(1, "a")  # a answers after the first poll
        return "a" in received  # the "quorum": a

    t.exchange({s: _request() for s in "abc"}, 30.0, got.__setitem__, stop_when)
    assert list(got) == ["a"] and isinstance(got["a"].result, TaskReply)
    assert asked[0] == set() and asked[-1] == {"a"}
    assert sorted(s for s, _ in t._late.values()) == ["b", "c"]  # kept for pull_late
    assert t.pull_late() == set()  # nothing came yet
    grid.reply(2, "b")
    assert t.pull_late() == {"b"}  # pulled and dropped
    assert t.pull_late() == set()
    grid.nodes.discard(3)  # c's node went away (a restarted site is a new node)
    assert t.pull_late() == {"c"} and t._late == {}


def test_without_stop_when_the_timeout_hands_over_a_timeout() -> None:
    grid = StandInGrid({1, 2})
    t = _transport(grid)
    got: dict[str, Exchanged] = {}
    t.exchange({"a": _request(), "b": _request()}, 0.05, got.__setitem__)
    assert set(got) == {"a", "b"}
    for ex in got.values():
        assert isinstance(ex.result, SiteFailure)
        assert ex.result.status == SiteRoundStatus.TIMEOUT
    assert sorted(s for s, _ in t._late.values()) == ["a", "b"]  # its late reply is pulled later
    grid.reply(1, "a")
    assert t.pull_late() == {"a"}


def test_local_transport_stops_before_the_next_site(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path) -> None:  # fmt: skip
    from fedseg.federation.commands.compare_plans import local_transport

    ran: list[str] = []

    def run_task(site: str, *args: Any, **kw: Any) -> TaskReply:
        ran.append(site)
        return TaskReply(site=site, n_train=1, n_val=1, weights={"w": np.ones(2, np.float32)})

    monkeypatch.setattr(local_transport, "run_task", run_task)
    sites = {s: tmp_path / s for s in "abc"}
    t = local_transport.LocalTransport(sites, sites)
    got: dict[str, Exchanged] = {}
    t.exchange({s: _request() for s in "abc"}, 30.0, got.__setitem__,
               stop_when=lambda received: len(received) >= 1)  # fmt: skip
    assert ran == ["a"] and list(got) == ["a"]
    assert t.pull_late() == {"b", "c"}  # never started: free at once
    assert t.pull_late() == set()
    t.exchange({s: _request() for s in "abc"}, 30.0, got.__setitem__)
    assert ran == ["a", "a", "b", "c"]
