"""Whether a run stops now on ``train.plateau``, read from its store: the one check behind
a federation's rounds (``Coordinator``) and a centralized run's epochs. It reads only the
store, so a resumed run reaches the same decision."""

from __future__ import annotations

from collections.abc import Sequence

from fedseg.run_folder import PlateauStop
from fedseg.tracking.curves import round_scores
from fedseg.tracking.store import RunStore
from fedseg.train.plateau import PlateauConfig, plateau_best


def plateau_stop(
    store: RunStore, cfg: PlateauConfig, trained: int, cap: int, *,
    sites: Sequence[str] | None = None, first_round: int = 0,
) -> PlateauStop | None:  # fmt: skip
    """After ``trained`` rounds (epochs) of at most ``cap``: the stop, recorded in the
    store's meta (``RunMeta.set_plateau``), when the round scores of ``sites`` (None: the
    federation's) from round ``first_round`` on have plateaued under ``cfg``; else None."""
    if cfg.rounds is None or trained <= first_round:
        return None
    scores = {m: s.mean for m, s in round_scores(store, sites=sites).items()
              if s.n > 0 and m >= first_round}  # fmt: skip
    best = plateau_best(scores, cfg)
    if best is None:
        return None
    stop = PlateauStop(last_round=trained, best_round=best, cap=cap)
    store.meta.set_plateau(stop)
    return stop
