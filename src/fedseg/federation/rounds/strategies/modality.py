"""``modality-fedavg``: FedAvg of the ModalityBank generator, one weight per site *and*
weight group (``model.generator.param_group``), so a modality's bank is averaged only over
the sites that have that modality.

Two phases, told by the round number alone (so a resumed run continues in the right one):

- pre-training, rounds ``1..pretrain_rounds``: the kernel (W, b_conv) and the bank of the
  reference modality are trained by the sites that have it and weighted by their training
  cases; every other group weighs 0 (kept from the global model). Sites without the
  reference modality only validate;
- bank phase, the rounds after: group ``bank:<m>`` weighs a site's training cases if the
  site declared modality ``m`` in its hello, else 0; ``shared`` weighs its training cases;
  ``kernel`` weighs 0 (frozen).

``group_weights(site, n_train, rnd)`` is that table for one site; ``combine`` is
``aggregation.grouped_average`` over it, so the strategy streams (``Strategy.streams``).
The coordinator tells the strategy the phases and the sites' declared modalities
(``set_federation``) and checks with the same table that a site changed no array whose
group it does not train (``frozen_groups``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from fedseg.federation.rounds.aggregation import grouped_average
from fedseg.federation.rounds.strategies.base import SiteTask, SiteUpdate
from fedseg.federation.rounds.strategies.parallel import ParallelParams, ParallelStrategy
from fedseg.model.generator import KERNEL, SHARED, bank_group, param_group
from fedseg.model.weights import Weights

PRETRAIN = "pretrain"
BANK_PHASE = "bank"


class ModalityFedAvg(ParallelStrategy[ParallelParams]):
    """FedAvg per weight group of the ModalityBank generator (module doc)."""

    streams = True
    tasks = ("synthesis",)

    def __init__(self, params: ParallelParams, local_epochs: int) -> None:
        super().__init__(params, local_epochs)
        self.pretrain_rounds = 0
        self.reference: str | None = None
        #: site -> the modalities it declared (None: all the generator's)
        self.site_modalities: dict[str, list[str] | None] = {}
        self.modalities: list[str] = []

    def set_federation(
        self,
        pretrain_rounds: int,
        reference: str | None,
        modalities: Sequence[str],
        site_modalities: Mapping[str, list[str] | None],
    ) -> None:
        """The run's phases (``pretrain_rounds`` rounds on ``reference`` first), the
        generator's ``modalities`` and each site's declared ones (None: all of them)."""
        self.pretrain_rounds = pretrain_rounds
        self.reference = reference
        self.modalities = list(modalities)
        self.site_modalities = dict(site_modalities)

    def phase(self, rnd: int) -> str:
        """``pretrain`` for rounds ``1..pretrain_rounds``, ``bank`` after."""
        return PRETRAIN if rnd <= self.pretrain_rounds else BANK_PHASE

    def has(self, site: str, modality: str) -> bool:
        declared = self.site_modalities.get(site)
        return modality in (self.modalities if declared is None else declared)

    def group_weights(self, site: str, n_train: float, rnd: int) -> dict[str, float]:
        """The weight of each group of ``site``'s update in round ``rnd`` (module doc);
        groups not named weigh 0."""
        if self.phase(rnd) == PRETRAIN:
            ref = self.reference
            if ref is None or not self.has(site, ref):
                return {}
            return {KERNEL: n_train, bank_group(ref): n_train}
        out = {bank_group(m): n_train for m in self.modalities if self.has(site, m)}
        out[SHARED] = n_train
        return out

    def frozen_groups(self, site: str, rnd: int) -> list[str]:
        """The groups ``site`` must send back unchanged in round ``rnd`` (weight 0)."""
        trained = self.group_weights(site, 1.0, rnd)
        groups = [KERNEL, SHARED, *(bank_group(m) for m in self.modalities)]
        return [g for g in groups if g not in trained]

    def configure_round(
        self, rnd: int, sites: Sequence[str], busy: Collection[str] = ()
    ) -> dict[str, SiteTask]:
        tasks = super().configure_round(rnd, sites, busy)
        if self.phase(rnd) == PRETRAIN and self.reference is not None:
            ref = self.reference  # a site without the reference modality has nothing to train
            idle = SiteTask(validate=True, epochs=0)
            tasks = {s: t if self.has(s, ref) else idle for s, t in tasks.items()}
        return tasks

    def combine(self, rnd: int, global_weights: Weights, updates: Sequence[SiteUpdate]) -> Weights:
        weights = [self.group_weights(u.site, float(max(u.n_train, 0)), rnd) for u in updates]
        if all(sum(w.values()) == 0 for w in weights):  # every site reported 0 cases
            weights = [self.group_weights(u.site, 1.0, rnd) for u in updates]
        return grouped_average([u.weights for u in updates], weights, param_group, global_weights)

    def contributors(self, rnd: int, updates: Sequence[SiteUpdate]) -> dict[str, list[str]]:
        """group -> the sites whose update it was averaged over (weight > 0)."""
        out: dict[str, list[str]] = {}
        for u in updates:
            for g, w in self.group_weights(u.site, 1.0, rnd).items():
                if w > 0:
                    out.setdefault(g, []).append(u.site)
        return out
