"""The aggregator's side of a round in which it may not see single updates (plan
``privacy.secure_aggregation`` or ``privacy.he``), engine-free.

A ``HiddenSum`` runs the mechanism's protocol around the round's training exchange:

1. ``prepare``: before the training messages, the protocol's first steps with the round's
   training sites (``Transport.query``: key agreement, shares, keys); returns each site's
   part of its training request (``TaskRequest.secure``). A site left out of the result
   sits the round out (it failed a step: the coordinator records that and sends it no
   training, never a training without protection);
2. ``take``: each training reply's protected update (``TaskReply.hidden``) as it arrives,
   parked on disk; a malformed one raises ``UpdateRejected`` (that site is rejected);
3. ``combine``: after the exchange, the last steps (unmasking, decryption) and the
   case-weighted mean of the included sites' new weights, or None when too few sites
   remain for the mechanism to reveal a sum.

The coordinator hands the mean to the strategy as one update (``SECURE_SUM``): every
streaming strategy (``Strategy.streams``) gives the same model from it as from the single
updates, because they read updates only through their weighted average.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from fedseg.federation.rounds.tasks import Payload
from fedseg.plan import PlanConfig
from fedseg.run_folder import DeclaredCases
from fedseg.tracking.store import RunStore

if TYPE_CHECKING:
    from fedseg.federation.rounds.coordinator import Transport
    from fedseg.model.weights import Weights

#: the site name of the one update a hidden sum hands the strategy
SECURE_SUM = "<secure sum>"


@dataclass(frozen=True)
class RevealedMean:
    """What a hidden sum reveals: the case-weighted mean of the included sites' new weights,
    the sites included and their training cases in total."""

    weights: Weights
    sites: list[str]
    n_train: int


class HiddenSum(Protocol):
    def prepare(
        self, rnd: int, sites: list[str], declared: dict[str, DeclaredCases],
        global_weights: Weights, transport: Transport,
    ) -> dict[str, Payload]:  # fmt: skip
        """The protocol's steps before training; each site's ``TaskRequest.secure``."""
        ...

    def take(self, site: str, hidden: Payload, n_train: int) -> None:
        """Park one site's protected update (raise ``UpdateRejected`` when malformed)."""
        ...

    def combine(
        self, rnd: int, global_weights: Weights, transport: Transport
    ) -> RevealedMean | None:
        """The protocol's last steps and the revealed mean (None: too few sites)."""
        ...


def make_hidden_sum(plan: PlanConfig, run_dir: Path, store: RunStore) -> HiddenSum | None:
    """The plan's hiding mechanism for the aggregator, or None when updates travel clear."""
    if not plan.privacy.hides_updates:
        return None
    if plan.privacy.secure_aggregation:
        from fedseg.federation.rounds.secure_aggregation import SecureAggregation

        return SecureAggregation(plan, run_dir, store)
    from fedseg.federation.rounds.he_aggregation import HeAggregation  # he.scheme: ckks

    return HeAggregation(plan, run_dir, store)
