"""The straggler cut-off (plan ``straggler``), engine-free: when a round stops waiting.

With ``straggler.quorum`` q set, a round's exchange ends once ``ceil(q * m)`` of its ``m``
requested trainers have delivered an update and ``grace_s`` seconds have passed since
then, or at ``round_timeout_s`` (whatever comes first); without it a round waits for every
site or the timeout, as before. ``StopRule`` is that rule as the ``stop_when`` the
coordinator hands ``Transport.exchange``: the transports (Flower's, the in-process ones)
call it with the sites handed over so far, after each result and at each poll, and stop
when it says so. The rule lives here once; the transports only ask it.

The sites still out when the rule fires (trainers and validators) are recorded
``timeout`` with ``cut after quorum (n of m)`` (``CUT_AFTER_QUORUM`` in the row's
``extra``). Such a site is still working on its task, so it is *busy*: the coordinator
gives it nothing until the transport has pulled (and dropped) its late reply, since a new
message would queue behind the running one and be late again; the participation draw
passes over it (``participation.sample_sites``). Under secure aggregation a cut trainer is
a dropped peer (the protocol's unmask stage rebuilds its masks); the quorum must then
keep at least the protocol's threshold (``privacy_refusals``).

The cut is refused for sequential plans (one site trains per round: there is no quorum to
reach).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection

from fedseg.errors import PlanError
from fedseg.plan import PlanConfig, StragglerConfig


def quorum_count(cfg: StragglerConfig, n_trainers: int) -> int | None:
    """Trainers whose updates end the wait (before the grace), ``ceil(q * m)`` and at least
    1; None when the plan has no cut."""
    if cfg.quorum is None or n_trainers == 0:
        return None
    return max(1, math.ceil(cfg.quorum * n_trainers - 1e-9))


def cut_message(replied: int, requested: int) -> str:
    """The one line a cut site's round record carries."""
    return f"cut after quorum ({replied} of {requested})"


class StopRule:
    """``stop_when`` of one exchange: true once ``need`` of ``trainers`` delivered (as
    ``delivered`` says) and ``grace_s`` has passed since on ``clock``. ``fired`` tells
    afterwards whether it ended the exchange; ``replied`` how many trainers had then."""

    def __init__(
        self, trainers: Collection[str], need: int, grace_s: float,
        delivered: Callable[[str], bool], clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.trainers = frozenset(trainers)
        self.need, self.grace_s = need, grace_s
        self.delivered, self.clock = delivered, clock
        self.quorum_at: float | None = None
        self.fired = False
        self.replied = 0

    def __call__(self, received: set[str]) -> bool:
        self.replied = sum(1 for s in received if s in self.trainers and self.delivered(s))
        if self.quorum_at is None and self.replied >= self.need:
            self.quorum_at = self.clock()
        if self.quorum_at is not None and self.clock() - self.quorum_at >= self.grace_s:
            self.fired = True
        return self.fired

    @property
    def message(self) -> str:
        return cut_message(self.replied, len(self.trainers))


def check_straggler(plan: PlanConfig, sequential: bool) -> None:
    """Refuse a cut where it cannot work (one-line ``PlanError``)."""
    if plan.straggler.quorum is not None and sequential:
        raise PlanError(
            f"straggler.quorum: strategy {plan.strategy.name} trains one site per round, "
            "there is no quorum to reach; remove the straggler key (round_timeout_s bounds "
            "a slow site)"
        )
