"""Partial participation: which sites train in a round, drawn from a seed.

The draw depends only on (seed, round, the set of site names), not on the order the sites
are listed or connected in, so a restarted aggregator draws the same sites again. A busy
site (still working on a task cut after quorum: ``rounds.straggler``) is passed over: the
next site in the round's draw order takes its place, so the count stays the same while
enough sites are free.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from fedseg.errors import FedsegError


def n_participants(n_sites: int, fraction: float | None, count: int | None) -> int:
    """How many of ``n_sites`` train: ``count`` if given, else ``round(fraction * n)``
    (at least 1), else all."""
    if count is not None:
        if count < 1:
            raise FedsegError(f"sites_per_round must be at least 1, got {count}")
        return min(count, n_sites)
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise FedsegError(f"participation fraction must be in (0, 1], got {fraction}")
        return max(1, min(n_sites, round(fraction * n_sites)))
    return n_sites


def sample_sites(
    sites: Sequence[str], rnd: int, seed: int, fraction: float | None = None,
    count: int | None = None, busy: Collection[str] = (),
) -> list[str]:  # fmt: skip
    """The sites of ``sites`` that train in round ``rnd``, in the order of ``sites``: the
    first ``k`` of the round's draw order (``k`` from all of ``sites``) that are not
    ``busy`` (fewer when fewer are free)."""
    k = n_participants(len(sites), fraction, count)
    taken = set(busy)
    free = [s for s in sites if s not in taken]
    if k >= len(free):
        return free
    pool = sorted(sites)
    # The k smallest of one uniform key per site. (Generator.choice/integers drawn from
    # consecutive round seeds repeat the same pick for runs of rounds; float keys do not.)
    keys = np.random.default_rng(np.random.SeedSequence([seed, rnd])).random(len(pool))
    order = [pool[i] for i in np.argsort(keys, kind="stable")]
    chosen = set([s for s in order if s not in taken][:k])
    return [s for s in sites if s in chosen]
