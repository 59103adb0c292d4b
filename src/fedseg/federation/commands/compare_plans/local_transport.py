"""The in-process transport of ``fedseg compare``: each site's task runs here, one after
the other (the real ``run_task``), so a comparison needs no engine processes. Each site
declares its split's case counts as a real site's hello does (``client_app``). Weights make
the round trip of the plan's ``transfer`` dtype both ways (``rounds.transfer``), so a float16
transfer has the effect it has over the engine, and the bytes counted are the wire's."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from fedseg.federation.commands.compare_plans.attacks import Poison, poison_reply
from fedseg.federation.rounds.aggregation import n_bytes
from fedseg.federation.rounds.coordinator import Exchanged, SiteFailure
from fedseg.federation.rounds.site import run_task
from fedseg.federation.rounds.site_queries import SiteContext, answer
from fedseg.federation.rounds.tasks import Payload, TaskReply, TaskRequest, declared_cases
from fedseg.federation.rounds.transfer import round_trip
from fedseg.model.compute import ComputeOverrides
from fedseg.run_folder import DeclaredCases, SiteRoundStatus


class LocalTransport:
    """``coordinator.Transport`` that runs each site's task here, one after the other, with
    the site's private state in ``workspaces[site]``. A poisoned site's reply carries its
    lie (``attacks.poison_reply``). ``min_summary_cases`` is every site's own floor
    (``disclosure``); 1, the default, lets the plan's ``privacy.min_summary_cases`` rule, as in
    a simulation: one operator holds all the data. ``compute``: this machine's device and
    precision choices, every site's (``run_task``). A failed task is its ``TaskFailed``
    line, as a real site sends it."""

    def __init__(self, data: dict[str, Path], workspaces: dict[str, Path],
                 poison: Poison | None = None,
                 on_site: Callable[[str], None] | None = None,
                 min_summary_cases: int = 1,
                 compute: ComputeOverrides | None = None,
                 creds: dict[str, Path] | None = None) -> None:  # fmt: skip
        self.data, self.workspaces, self.poison, self.on_site = data, workspaces, poison, on_site
        self.min_summary_cases = min_summary_cases
        self.compute = compute
        #: each site's private protocol state (a real site's Flower ``context.state``) and
        #: its consortium credentials (``creds``: simulated ones, ``pki.throwaway_site_creds``)
        self.contexts = {s: SiteContext(s, d, workspaces.get(s), creds=(creds or {}).get(s))
                         for s, d in data.items()}  # fmt: skip
        #: sites an exchange stopped before running (``stop_when``): never started, free
        self._late: set[str] = set()

    def connected_sites(self, wanted: Sequence[str], wait_s: float) -> list[str]:
        return [s for s in wanted if s in self.data]

    def declared_cases(self) -> dict[str, DeclaredCases]:
        out = {}
        for site, data in self.data.items():
            declared = declared_cases(data)
            if declared is not None:
                out[site] = declared
        return out

    def exchange(self, requests: dict[str, TaskRequest], timeout_s: float,
                 on_result: Callable[[str, Exchanged], None],
                 stop_when: Callable[[set[str]], bool] | None = None) -> None:  # fmt: skip
        """``coordinator.Transport.exchange``, one site after the other in ``requests``'
        order; ``stop_when`` is asked after each site, and the sites not run when it stops
        the exchange are left out (free at once: ``pull_late``)."""
        done: set[str] = set()
        for site, req in requests.items():
            if stop_when is not None and done and stop_when(set(done)):
                self._late.update(s for s in requests if s not in done)
                return
            done.add(site)
            t0 = time.perf_counter()
            arrived, sent = round_trip(req.weights, req.transfer)
            if req.optimizer_state is not None:
                sent += n_bytes(req.optimizer_state)
            cross = {}
            for label, w in req.cross.items():  # other sites' local models, as sent
                cross[label], size = round_trip(w, req.transfer)
                sent += size
            try:
                rep = run_task(site, self.data[site],
                               dataclasses.replace(req, weights=arrived, cross=cross),
                               self.workspaces[site], self.min_summary_cases,
                               self.compute, self.contexts[site])  # fmt: skip
                self._poison(site, req, rep)
                got = 0
                if rep.weights is not None:
                    rep.weights, got = round_trip(rep.weights, req.transfer)
                if rep.optimizer_state is not None:
                    got += n_bytes(rep.optimizer_state)
                ex = Exchanged(rep, sent, got, time.perf_counter() - t0)
            except Exception as exc:  # a site's failure is its round's result, not ours
                line = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
                ex = Exchanged(
                    SiteFailure(SiteRoundStatus.FAILED, line), sent, 0, time.perf_counter() - t0
                )
            on_result(site, ex)
            del ex
            if self.on_site is not None:
                self.on_site(site)

    def pull_late(self) -> set[str]:
        """``coordinator.Transport.pull_late``: the sites a stopped exchange never ran."""
        free, self._late = self._late, set()
        return free

    def query(
        self, kind: str, payloads: dict[str, Payload], timeout_s: float
    ) -> dict[str, Payload | SiteFailure]:
        """``coordinator.Transport.query``: each site's handler (``site_queries``) runs here."""
        return answer_here(kind, self.contexts, payloads)

    def _poison(self, site: str, req: TaskRequest, rep: TaskReply) -> None:
        if self.poison is not None and self.poison.site == site:
            poison_reply(self.poison, req, rep)


def answer_here(
    kind: str, contexts: Mapping[str, SiteContext], payloads: dict[str, Payload]
) -> dict[str, Payload | SiteFailure]:
    """Each site's answer to a ``kind`` query, its handler run in this process with its
    ``contexts[site]``; a handler that raises is that site's failure (its last line)."""
    out: dict[str, Payload | SiteFailure] = {}
    for site, payload in payloads.items():
        try:
            out[site] = answer(kind, contexts[site], payload)
        except Exception as exc:  # a site's failure is its answer, not ours
            line = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
            out[site] = SiteFailure(SiteRoundStatus.FAILED, line)
    return out
