"""Model retention: which round models a run keeps, and the pruning step after a round.

The rule (plan key ``retention``, ``plan.RetentionConfig``): after round ``last`` is done,
the run keeps the model of

- the best rounds: the round ``fedseg select --singlet`` picks now (``best.pt``'s source)
  and the ``--triplet`` picks (best per validation group: the three regions, or a
  generator's modalities with ``task: synthesis``), at most one more model per group;
- the last ``keep_last`` rounds (``last - keep_last + 1 .. last``; resume needs ``last``),
- every ``keep_every``-th round (``r % keep_every == 0``, round 0 included),

and deletes the other round models with their strategy-state files; ``keep_every: null``
keeps everything. A strategy-state file is resume state only: it is kept for the last
``keep_last`` rounds, also when their model stays for another reason.

The best round is chosen among the rounds whose model is still on disk (the ``checkpoints``
table lists exactly those: ``selection.best_round``), so ``best.pt`` stays ``fedseg select
--singlet``'s model: should a deleted round become the best again, the best kept round is
chosen instead. In a coordinator's run that does not happen: a round's scores are final
once the round that validates it is done, and a site that validates late makes earlier
rounds ineligible, never eligible again (``tracking.curves``), so a round that is best at
the end was best since it was scored and was never deleted: retention does not change what
``select`` picks. A deleted round's validation scores stay in the store.

Pruning is idempotent and runs after the round is recorded ``done`` (a kill before that
keeps the previous round's model, which a resume needs): it removes the store row first,
then the files, and also removes round files the store no longer lists (a kill between the
two), so nothing leaks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

from fedseg.data.labels import REGIONS
from fedseg.plan import RetentionConfig
from fedseg.run_folder import MODELS_DIR, STRATEGY_STATE_SUFFIX, model_path, strategy_state_path
from fedseg.tracking.selection import best_round
from fedseg.tracking.store import RunStore


def kept_rounds(
    rounds: Iterable[int], last: int, best: Collection[int], policy: RetentionConfig
) -> set[int]:
    """The model rounds among ``rounds`` that the policy keeps after round ``last`` with the
    best rounds ``best``."""
    rounds = set(rounds)
    if policy.keep_every is None:
        return rounds
    k = policy.keep_every
    return {r for r in rounds if r in best or r > last - policy.keep_last or r % k == 0}


def describe(policy: RetentionConfig) -> str:
    """The policy in a few words, for log lines and messages."""
    if policy.keep_every is None:
        return "keep_every null: every round kept"
    return f"best, keep_last {policy.keep_last}, keep_every {policy.keep_every}"


def round_files(run_dir: Path) -> dict[int, Path]:
    """``round -> models/round_XXXX.pt`` of the round model files in the run folder."""
    out: dict[int, Path] = {}
    for p in (Path(run_dir) / MODELS_DIR).glob("round_*.pt"):
        with contextlib.suppress(ValueError):
            out[int(p.stem.removeprefix("round_"))] = p
    return out


def best_rounds(store: RunStore, groups: Sequence[str] = REGIONS) -> set[int]:
    """The rounds ``fedseg select`` picks now: the singlet's and the triplet's
    (``selection.best_round`` in region ``mean`` and each of ``groups``: the regions, or a
    generator's modalities)."""
    picks = (best_round(store, region) for region in ("mean", *groups))
    return {p[0] for p in picks if p is not None}


def prune_models(
    run_dir: Path,
    store: RunStore,
    policy: RetentionConfig,
    last: int,
    groups: Sequence[str] = REGIONS,
) -> list[int]:
    """Delete the round models (and strategy states) the policy no longer keeps after round
    ``last`` (the best rounds are ``best_rounds(store, groups)``); their ``checkpoints``
    rows go first. Returns the rounds whose model went. Model files are not read: a
    generator's round files are pruned the same way."""
    if policy.keep_every is None:
        return []
    best = best_rounds(store, groups)
    listed = set(store.checkpoints())
    on_disk = round_files(run_dir)
    candidates = {r for r in listed | set(on_disk) if r <= last}
    gone = sorted(candidates - kept_rounds(candidates, last, best, policy))
    store.forget_checkpoints(gone)
    for r in gone:
        path = model_path(run_dir, r)
        path.unlink(missing_ok=True)
        strategy_state_path(path).unlink(missing_ok=True)
    for p in (Path(run_dir) / MODELS_DIR).glob("round_*" + STRATEGY_STATE_SUFFIX):
        with contextlib.suppress(ValueError):
            if int(p.name.removeprefix("round_").split(".")[0]) <= last - policy.keep_last:
                p.unlink(missing_ok=True)
    if gone:
        store.log(f"retention ({describe(policy)}): deleted the model of round(s) "
                  f"{', '.join(map(str, gone))}")  # fmt: skip
    return gone
