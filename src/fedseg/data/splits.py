"""Persistent, stable train/validation splits of a site's cases (``<site>/fedseg_split.json``).

Stability is the contract: once a case is on a side, it stays there, across re-runs, added
cases and removed cases (a removed case is kept under ``gone`` so that it returns to its old
side if it comes back). A case's score is a hash of seed and id mapped to [0, 1):

- the first split of a folder puts the lowest-score ``round(n * fraction)`` cases (at least
  one when there are two or more) in validation, so that small sites get an exact 4:1;
- a case added later goes to validation when its score is below the fraction, so its side
  depends only on its id and the seed.

Only complete cases with a label map take part; the others are reported as skipped. A case
lacking a modality its site declares absent (``fedseg_site.yaml``) is complete: it trains
with that channel zero.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedseg.data.cases import Case, discover_cases
from fedseg.errors import FedsegError

SPLIT_FILE = "fedseg_split.json"
DEFAULT_SEED = 0
DEFAULT_VAL_FRACTION = 0.2

log = logging.getLogger(__name__)


class Side(StrEnum):
    TRAIN = "train"
    VAL = "val"


class SplitFile(BaseModel):
    """The on-disk record: parameters, current assignments, and assignments of removed cases."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    seed: int = DEFAULT_SEED
    val_fraction: float = Field(DEFAULT_VAL_FRACTION, gt=0, lt=1)
    cases: dict[str, Side] = {}
    gone: dict[str, Side] = {}


@dataclass(frozen=True)
class SplitChanges:
    """What an update did: new cases per side, cases back from ``gone``, cases now gone."""

    added_train: tuple[str, ...] = ()
    added_val: tuple[str, ...] = ()
    returned: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()  # on disk but incomplete or unlabelled
    created: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.added_train or self.added_val or self.returned or self.removed)


@dataclass(frozen=True)
class Split:
    """A site's split: ``train`` and ``val`` cases (sorted by id) present on disk."""

    path: Path
    seed: int
    val_fraction: float
    train: list[Case]
    val: list[Case]
    gone: tuple[str, ...]  # cases the file names that are not on disk anymore


def case_score(case_id: str, seed: int) -> float:
    """A stable pseudo-random number in [0, 1) from ``seed`` and ``case_id`` (SHA-256)."""
    digest = hashlib.sha256(f"{seed}:{case_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def validation_count(n: int, val_fraction: float = DEFAULT_VAL_FRACTION) -> int:
    """Validation cases of a first split of ``n`` cases: ``n * val_fraction`` rounded half
    up, at least 1 when ``n >= 2``, and never every case."""
    n_val = math.floor(n * val_fraction + 0.5)
    if n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    return n_val


def first_split(case_ids: list[str], seed: int, val_fraction: float) -> dict[str, Side]:
    """Split a new folder: the lowest-score ``validation_count`` cases go to validation."""
    n_val = validation_count(len(case_ids), val_fraction)
    ranked = sorted(case_ids, key=lambda c: (case_score(c, seed), c))
    val = set(ranked[:n_val])
    return {c: Side.VAL if c in val else Side.TRAIN for c in sorted(case_ids)}


def update_split(
    record: SplitFile | None, case_ids: list[str], seed: int, val_fraction: float
) -> tuple[SplitFile, SplitChanges]:
    """The record for the cases now present: existing sides kept, new cases by threshold.

    ``record`` None (no file yet) makes a first split. Pure: nothing is read or written.
    """
    present = set(case_ids)
    if record is None or not (record.cases or record.gone):
        sides = first_split(sorted(present), seed, val_fraction)
        new = SplitFile(seed=seed, val_fraction=val_fraction, cases=sides)
        return new, SplitChanges(
            added_train=tuple(c for c, s in sides.items() if s is Side.TRAIN),
            added_val=tuple(c for c, s in sides.items() if s is Side.VAL),
            created=record is None,
        )
    known = {**record.gone, **record.cases}
    cases: dict[str, Side] = {}
    added_train, added_val, returned = [], [], []
    for c in sorted(present):
        if c in record.cases:
            cases[c] = record.cases[c]
        elif c in record.gone:
            cases[c] = record.gone[c]
            returned.append(c)
        else:
            side = Side.VAL if case_score(c, record.seed) < record.val_fraction else Side.TRAIN
            cases[c] = side
            (added_val if side is Side.VAL else added_train).append(c)
    gone = {c: s for c, s in sorted(known.items()) if c not in present}
    removed = tuple(c for c in sorted(record.cases) if c not in present)
    new = SplitFile(seed=record.seed, val_fraction=record.val_fraction, cases=cases, gone=gone)
    return new, SplitChanges(tuple(added_train), tuple(added_val), tuple(returned), removed)


def read_split_file(path: Path) -> SplitFile | None:
    """The split record at ``path``, or None when there is none yet."""
    if not path.exists():
        return None
    try:
        return SplitFile.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError, ValidationError) as exc:
        first = str(exc).splitlines()[0]
        raise FedsegError(
            f"{path}: not a valid split file ({first}); restore it, or delete it to make a new "
            "split (this can move cases between train and validation)"
        ) from None


def write_split_file(path: Path, record: SplitFile) -> None:
    """Write atomically (temp file + rename) so an interrupted run never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(record.model_dump_json(indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise FedsegError(
            f"cannot write the split file {path} ({exc.strerror}); make the folder writable "
            "or give another split file location"
        ) from None


def _splittable(cases: list[Case]) -> tuple[dict[str, Case], tuple[str, ...]]:
    usable = {c.case_id: c for c in cases if c.complete and c.label is not None}
    skipped = tuple(c.case_id for c in cases if c.case_id not in usable)
    return usable, skipped


def make_split(
    root: Path,
    *,
    seed: int | None = None,
    val_fraction: float | None = None,
    split_file: Path | None = None,
) -> tuple[Split, SplitChanges]:
    """Create or update the split file of the site at ``root`` and return the split.

    ``seed``/``val_fraction`` None take the file's values (or the defaults for a new file);
    values that contradict an existing file are an error, since honouring them would move
    cases between sides.
    """
    root = Path(root)
    path = Path(split_file) if split_file is not None else root / SPLIT_FILE
    usable, skipped = _splittable(discover_cases(root))
    if not usable:
        raise FedsegError(
            f"no complete labelled cases in {root}: a split needs cases with a label map and "
            "every modality the site does not declare absent (fedseg_site.yaml); run "
            "`fedseg data check` on the folder"
        )
    record = read_split_file(path)
    if record is not None:
        for name, given, stored in (
            ("seed", seed, record.seed),
            ("val-fraction", val_fraction, record.val_fraction),
        ):
            if given is not None and given != stored:
                raise FedsegError(
                    f"{path} was made with {name} {stored}, not {given}; drop the option to "
                    f"keep the existing split, or delete the file to re-split (moves cases)"
                )
    # An existing (even empty) file keeps its own parameters.
    use_seed = seed if seed is not None else (record.seed if record else DEFAULT_SEED)
    use_fraction = val_fraction if val_fraction is not None else DEFAULT_VAL_FRACTION
    if val_fraction is None and record is not None:
        use_fraction = record.val_fraction
    if not 0 < use_fraction < 1:
        raise FedsegError(f"val-fraction must be between 0 and 1 (exclusive), got {use_fraction}")
    new, changes = update_split(record, list(usable), use_seed, use_fraction)
    changes = SplitChanges(
        changes.added_train,
        changes.added_val,
        changes.returned,
        changes.removed,
        skipped,
        changes.created,
    )
    if record is None or new != record:
        write_split_file(path, new)
    for c in new.gone:
        log.warning("split file %s names case %s, which is not on disk anymore", path, c)
    split = Split(
        path=path,
        seed=new.seed,
        val_fraction=new.val_fraction,
        train=[usable[c] for c, s in new.cases.items() if s is Side.TRAIN],
        val=[usable[c] for c, s in new.cases.items() if s is Side.VAL],
        gone=tuple(new.gone),
    )
    return split, changes


def set_validation_cases(root: Path, n_val: int, *, seed: int | None = None) -> Split:
    """The split of the site at ``root`` with exactly ``n_val`` validation cases: a first
    split at ``val_fraction = n_val / n`` (``first_split`` rounds ``n * fraction`` to
    ``n_val``). An existing split file is kept when it holds exactly that many, else
    refused (re-splitting moves cases between sides)."""
    root = Path(root)
    usable, _ = _splittable(discover_cases(root))
    n = len(usable)
    if not 1 <= n_val < n:
        raise FedsegError(
            f"{root}: {n} complete labelled case(s); give it 1..{n - 1} validation cases, "
            f"not {n_val}"
        )
    path = root / SPLIT_FILE
    if path.exists():
        split, _ = make_split(root, seed=seed)
        if len(split.val) != n_val:
            raise FedsegError(
                f"{path} puts {len(split.val)} case(s) in validation, not {n_val}; delete it "
                "to re-split (moves cases)"
            )
        return split
    split, _ = make_split(root, seed=seed, val_fraction=n_val / n)
    return split


def load_split(root: Path, split_file: Path | None = None) -> Split:
    """The site's split for training, creating the split file (default seed) on first use.

    New cases are added to the file by the hash threshold; cases the file names that are
    not on disk are only a logged warning (they stay listed under ``gone``).
    """
    split, _ = make_split(root, split_file=split_file)
    return split
