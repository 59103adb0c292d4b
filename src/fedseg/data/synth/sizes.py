"""How many cases each synthetic site gets, and which sites are held out (plain functions).

The study federated 71 sites of very unequal size: a few large centres, many with a handful
of cases. ``site_sizes`` draws such sizes from a named distribution:

- ``equal``: ``total`` spread as evenly as possible (the first sites take the remainder);
- ``lognormal:SIGMA`` (``lognormal`` alone: SIGMA 1.2): weights ``exp(SIGMA * z)``,
  ``z`` standard normal; 71 sites and 600 cases give a median of 4 and a few above 40;
- ``zipf:S`` (``zipf`` alone: S 1.0): weights ``rank ** -S``, ranks shuffled over the sites.

``total`` is shared in proportion to the weights; a site whose share falls below
``min_cases`` gets ``min_cases`` and the others are rescaled (the tail keeps its shape);
largest-remainder rounding (ties to the lower site number) makes the sum exactly
``total``. The draw is seeded by ``SeedSequence([seed, 0x512E])``: the same arguments give
the same sizes on any machine. We do not have the study's real per-site
counts; whoever has them passes them as a file of one count per line (``read_sizes``).

``synth_counts(...)`` turns the options of ``fedseg data synth`` (``--sites``, ``--cases``,
``--cases-per-site``, ``--sizes``, ``--partition``) into the config's sites and counts;
``few_validation_sites(config)`` names the sites whose first split gives fewer validation
cases than the disclosure floor (they train but send no validation summary).
``held_out_sites(names, k, seed)`` draws the k held-out sites (``SeedSequence([seed,
0x4E1D])``, not the largest, returned in site order). Site sizes from a challenge partition
file come from ``fedseg.data.partition.read_partition``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedseg.data.partition import read_partition
from fedseg.data.splits import validation_count
from fedseg.errors import FedsegError
from fedseg.model.summary import MIN_SUMMARY_CASES

if TYPE_CHECKING:
    from fedseg.data.synth.config import SynthConfig

DISTRIBUTIONS = ("equal", "lognormal", "zipf")
DEFAULT_PARAM = {"lognormal": 1.2, "zipf": 1.0}
SIZES_STREAM = 0x512E
HELD_OUT_STREAM = 0x4E1D


def parse_distribution(spec: str) -> tuple[str, float]:
    """``"lognormal:1.2"`` -> ``("lognormal", 1.2)``; one-line FedsegError otherwise."""
    name, sep, param = spec.strip().lower().partition(":")
    if name not in DISTRIBUTIONS or (name == "equal" and sep):
        raise FedsegError(
            f"unknown size distribution {spec!r}; use equal, lognormal:SIGMA (e.g. "
            f"lognormal:1.2) or zipf:S (e.g. zipf:1.1)"
        )
    if name == "equal":
        return name, 0.0
    if not sep:
        return name, DEFAULT_PARAM[name]
    try:
        value = float(param)
    except ValueError:
        value = float("nan")
    if not (np.isfinite(value) and value >= 0 and (name != "zipf" or value > 0)):
        low = "above 0" if name == "zipf" else "0 or more"
        raise FedsegError(f"size distribution {spec!r}: give a number {low} after {name}:")
    return name, value


def site_sizes(
    n_sites: int,
    total: int,
    distribution: str = "lognormal:1.2",
    seed: int = 0,
    min_cases: int = 2,
) -> list[int]:
    """Cases per site: ``n_sites`` counts, each at least ``min_cases``, summing to ``total``."""
    name, param = parse_distribution(distribution)
    if n_sites < 1:
        raise FedsegError(f"{n_sites} sites: give at least one site")
    if min_cases < 1:
        raise FedsegError(f"min_cases {min_cases}: every site needs at least one case")
    if total < n_sites * min_cases:
        raise FedsegError(
            f"{total} cases cannot give {n_sites} sites {min_cases} each; give at least "
            f"{n_sites * min_cases} cases or fewer sites"
        )
    rng = np.random.default_rng(np.random.SeedSequence([seed, SIZES_STREAM]))
    if name == "equal":
        weights = np.ones(n_sites)
    elif name == "lognormal":
        weights = np.exp(param * rng.standard_normal(n_sites))
    else:
        weights = rng.permutation(np.arange(1, n_sites + 1, dtype=float) ** -param)
    share = _scaled(weights, total, min_cases)
    counts = np.floor(share).astype(int)
    left = total - int(counts.sum())
    order = np.lexsort((np.arange(n_sites), -(share - counts)))  # largest remainder first
    counts[order[:left]] += 1
    return [int(c) for c in counts]


def _scaled(weights: np.ndarray, total: int, min_cases: int) -> np.ndarray:
    """Shares of ``total`` in proportion to ``weights``, raised to ``min_cases`` where
    below it, the others rescaled to keep the sum (repeated until no share is below)."""
    fixed = np.zeros(len(weights), dtype=bool)
    while True:
        free = total - min_cases * int(fixed.sum())
        share = np.where(fixed, float(min_cases), weights / weights[~fixed].sum() * free)
        low = ~fixed & (share < min_cases)
        if not low.any():
            return share
        fixed |= low


def read_sizes(path: Path) -> list[int]:
    """Cases per site from a file of one positive count per line (blank lines and ``#``
    comments skipped): the study's real counts, for whoever has them."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        raise FedsegError(
            f"{path}: cannot read the sizes file; give one case count per line"
        ) from None
    counts = []
    for n, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        if not text.isdigit() or int(text) < 1:
            raise FedsegError(f"{path}:{n}: {text!r} is not a case count; give one number >= 1")
        counts.append(int(text))
    if not counts:
        raise FedsegError(f"{path}: no case count; give one count per line, one line per site")
    return counts


def held_out_sites(names: list[str], k: int, seed: int = 0) -> list[str]:
    """``k`` of ``names`` drawn by the seed (not the largest), in the order of ``names``."""
    if k < 0 or k >= len(names):
        raise FedsegError(
            f"--held-out {k}: hold out 0..{len(names) - 1} of the {len(names)} sites "
            f"(at least one site must train)"
        )
    rng = np.random.default_rng(np.random.SeedSequence([seed, HELD_OUT_STREAM]))
    picked = set(rng.choice(len(names), size=k, replace=False).tolist())
    return [n for i, n in enumerate(names) if i in picked]


@dataclass(frozen=True)
class SiteCounts:
    """``SynthConfig``'s ``sites``, ``cases_per_site`` and ``partition`` from the options."""

    sites: int
    cases_per_site: int | list[int]
    partition: dict[str, list[str]] | None = None


DEFAULT_SITES = 3
DEFAULT_CASES_PER_SITE = 8


def synth_counts(
    *,
    sites: int | None = None,
    cases_per_site: int | None = None,
    cases: int | None = None,
    sizes: str | None = None,
    partition: Path | None = None,
    seed: int = 0,
) -> SiteCounts:
    """Sites and cases per site from ``fedseg data synth``'s options (None: not given).

    ``--partition FILE`` gives both (and the case ids); ``--sizes FILE`` (one count per line)
    gives the counts; ``--cases TOTAL`` is drawn over ``--sites`` by ``--sizes`` (default
    ``equal``); otherwise ``--cases-per-site`` (default 8) at every site.
    """
    if partition is not None:
        for flag, value in (("--cases", cases), ("--sizes", sizes),
                            ("--cases-per-site", cases_per_site)):  # fmt: skip
            if value is not None:
                raise FedsegError(f"{flag} with --partition: the partition file gives the "
                                  f"sites and their cases; drop {flag}")  # fmt: skip
        table = read_partition(partition)
        if sites is not None and sites != len(table):
            raise FedsegError(f"--sites {sites}: {partition} has {len(table)} institutions; "
                              f"drop --sites")  # fmt: skip
        return SiteCounts(len(table), [len(v) for v in table.values()], table)
    if sizes is not None and cases_per_site is not None:
        raise FedsegError("--sizes with --cases-per-site: give --cases TOTAL with --sizes, "
                          "or --cases-per-site alone")  # fmt: skip
    if cases is not None and cases_per_site is not None:
        raise FedsegError("--cases with --cases-per-site: give the total (--cases) or the "
                          "count per site (--cases-per-site), not both")  # fmt: skip
    if sizes is not None and _is_file_spec(sizes):
        counts = read_sizes(Path(sizes))
        if sites is not None and sites != len(counts):
            raise FedsegError(f"--sites {sites}: {sizes} lists {len(counts)} sites; drop --sites")
        if cases is not None and cases != sum(counts):
            raise FedsegError(f"--cases {cases}: {sizes} sums to {sum(counts)}; drop --cases")
        return SiteCounts(len(counts), counts)
    n = DEFAULT_SITES if sites is None else sites
    if cases is None:
        if sizes is not None and parse_distribution(sizes)[0] != "equal":
            raise FedsegError(f"--sizes {sizes} draws a total over the sites; give it with "
                              f"--cases TOTAL, e.g. --cases 600")  # fmt: skip
        return SiteCounts(n, DEFAULT_CASES_PER_SITE if cases_per_site is None else cases_per_site)
    dist = sizes or "equal"
    minimum = 1 if parse_distribution(dist)[0] == "equal" else 2
    return SiteCounts(n, site_sizes(n, cases, dist, seed, min_cases=minimum))


def _is_file_spec(sizes: str) -> bool:
    """``--sizes`` names a file when it is no distribution name and a file is there."""
    name = sizes.strip().lower().partition(":")[0]
    return name not in DISTRIBUTIONS and Path(sizes).is_file()


def few_validation_sites(config: SynthConfig, floor: int = MIN_SUMMARY_CASES) -> list[str]:
    """Sites whose validation side (``val_cases``, else the default first split) has fewer
    than ``floor`` cases: they train but send no validation summary."""
    out = []
    for site, n in zip(config.site_names(), config.case_counts(), strict=True):
        if config.val_cases.get(site, validation_count(n)) < floor:
            out.append(site)
    return out
