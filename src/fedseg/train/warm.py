"""A site's data kept warm across the messages one process serves (``SiteCache``).

A process that serves many tasks (a Ray actor of Flower's simulation engine serving several
virtual sites, a long-lived site worker, ``fedseg compare``'s in-process transport) would
otherwise discover a site's cases, load its split, open its prepared training cases
(``loader.CaseStore``: memory maps of the on-disk case cache, ``case_cache``) and read its
validation volumes again for every message. ``SiteCache.get(data_dir)`` gives the site's
``WarmSite`` instead, which holds them from one task to the next.

Never stale: the entry's key is recomputed on every ``get`` from the file system (no image
is read): the cases discovery finds (``data.cases.discover_cases``: names, files, layout,
declared-absent modalities), each case's ``case_cache.source_key`` (resolved path, size,
mtime_ns and inode of each file) and the split file's (size, mtime_ns, inode). A case
added, removed or edited, or the split edited, gives another key and that site's entry is
rebuilt (``load_split`` again, which also files a new case on its side); other sites'
entries stay. Like the on-disk cache, it trusts a file's size, mtime and inode: a file
rewritten in place with the same size within one tick of the file system's clock is not
seen (``os.utime`` it).

Bounded: the entries form a least-recently-used list bounded by ``budget_mb`` (each task's
``train.cache_mb``: several sites share one process) of what they hold in memory
(validation volumes, prepared cases kept in memory where the case cache cannot be written)
and by ``max_files`` memory-mapped arrays (each holds an open file; a quarter of the
process's limit). The site a task is using is never evicted; a validation volume that does
not fit even after evicting every other site is read and not kept. Held volumes are made
read-only (a caller that wrote into one would change the next task's numbers).

The site's optimizer state (``keep-local``: the file ``run_task`` saves after each
training task in the site's workspace) is held too, one file per site: ``optimizer(path)``
gives the arrays that file holds when its (size, mtime_ns, inode) are those it had when
they were saved or read here, else it reads the file again (``model.weights.load_arrays``).
The file stays the authority (a restarted process, or another process, reads it); what is
held only spares reading it back. Its bytes count against the budget like the rest, and its
arrays are read-only.

What a warm site gives is exactly what the cold path gives (the same split, the same
arrays), so a round's weights and metrics are the same with or without it.
"""

from __future__ import annotations

import os
import resource
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedseg.data.cases import Case, CaseVolumes, discover_cases
from fedseg.data.splits import SPLIT_FILE, Split, load_split
from fedseg.model.weights import load_arrays, save_arrays
from fedseg.train.case_cache import VolumeReader, source_key
from fedseg.train.config import Shape3, TrainConfig
from fedseg.train.loader import CaseStore

#: The budget of a cache made before any task names one: ``TrainConfig.cache_mb``'s default.
DEFAULT_BUDGET_MB: int = TrainConfig.model_fields["cache_mb"].default


def _file_bound() -> int:
    """A quarter of the process's open-file limit (4096 when it has none)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 4096 if soft == resource.RLIM_INFINITY or soft <= 0 else max(soft // 4, 16)


def _stat(path: Path) -> tuple[int, int, int] | None:
    """(size, mtime_ns, inode) of ``path``; None when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


@dataclass(frozen=True)
class SiteKey:
    """What a site's warm entry was built from, read by ``stat`` only (``site_key``)."""

    cases: tuple[Case, ...]
    sources: tuple[str, ...]
    split: tuple[int, int, int] | None


def site_key(root: Path, split_file: Path) -> SiteKey | None:
    """The site's key now: its discovered cases, their ``source_key``s and the split file's
    stat; None when a case's file cannot be stat'ed (it vanished while listing: never
    reused). Discovery's errors (no cases, ...) are raised as ``load_split`` raises them."""
    cases = tuple(discover_cases(root))
    try:
        sources = tuple(source_key(c) for c in cases)
    except OSError:
        return None
    return SiteKey(cases, sources, _stat(split_file))


def _arrays_bytes(arrays: Mapping[str, np.ndarray]) -> int:
    return sum(int(a.nbytes) for a in arrays.values())


def _volume_bytes(vol: CaseVolumes) -> int:
    label = vol.label.nbytes if vol.label is not None else 0
    return vol.image.nbytes + label + vol.affine.nbytes


class WarmSite:
    """One site's data as this process holds it: ``cases`` (discovered), ``split``, the
    prepared training cases per patch size (``store``) and the validation volumes
    (``read``). Made by ``SiteCache.get``; valid for the task that got it."""

    def __init__(
        self, owner: SiteCache, key: SiteKey | None, cases: tuple[Case, ...], split: Split
    ) -> None:
        self.key, self.cases, self.split = key, cases, split
        self._owner = owner
        self._stores: dict[Shape3, CaseStore] = {}
        self._val = {c.case_id: c for c in split.val}
        self._volumes: dict[str, CaseVolumes] = {}
        self._reader = VolumeReader()
        #: the optimizer state file last saved or read here: (path, its stat then, arrays)
        self._optimizer: tuple[Path, tuple[int, int, int] | None, dict[str, np.ndarray]] | None
        self._optimizer = None

    def store(self, train: TrainConfig) -> CaseStore:
        """The training split's ``CaseStore`` for ``train.patch_size`` (memory-mapped from the
        case cache; in memory up to ``train.cache_mb`` where it cannot be written), built on
        first use and kept."""
        patch = train.patch_size
        with self._owner.lock:
            store = self._stores.get(patch)
            if store is None:
                store = CaseStore(self.split.train, patch, train.cache_mb)
                self._stores[patch] = store
                self._owner.fit(self)
            return store

    def read(self, case: Case) -> CaseVolumes:
        """Validation's reader (``evaluate_cases``' ``load``): ``case``'s volumes as
        ``case_cache.VolumeReader`` gives them, kept (read-only) for the next task when it
        is one of the split's validation cases and the budget allows."""
        with self._owner.lock:
            ours = self._val.get(case.case_id) == case
            held = self._volumes.get(case.case_id) if ours else None
            if held is not None:
                return held
            vol = self._reader(case)
            if ours and self._owner.fit(self, _volume_bytes(vol)):
                for arr in (vol.image, vol.label, vol.affine):
                    if arr is not None:
                        arr.setflags(write=False)
                self._volumes[case.case_id] = vol
            return vol

    def optimizer(self, path: Path) -> dict[str, np.ndarray]:
        """The arrays of the optimizer state file ``path``: those held here when the file is
        unchanged since they were saved or read here (size, mtime_ns, inode), else read from
        it (and held, read-only, when the budget allows)."""
        path = Path(path)
        with self._owner.lock:
            held, now = self._optimizer, _stat(path)
            if held is not None and held[0] == path and now is not None and held[1] == now:
                self._owner.optimizer_hits += 1
                return held[2]
        return self._hold_optimizer(path, load_arrays(path))

    def save_optimizer(self, path: Path, state: Mapping[str, np.ndarray]) -> None:
        """Write ``state`` to ``path`` (``model.weights.save_arrays``: atomic, synced) and
        hold it for the next ``optimizer(path)``."""
        save_arrays(path, state)
        self._hold_optimizer(Path(path), dict(state))

    def _hold_optimizer(self, path: Path, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        stat = _stat(path)
        with self._owner.lock:
            self._optimizer = None
            if stat is not None and self._owner.fit(self, _arrays_bytes(state)):
                for arr in state.values():
                    arr.setflags(write=False)
                self._optimizer = (path, stat, state)
        return state

    def held(self) -> tuple[int, int]:
        """(bytes held in memory, memory-mapped arrays held)."""
        stores = [s.held() for s in self._stores.values()]
        nbytes = sum(b for b, _ in stores) + sum(map(_volume_bytes, self._volumes.values()))
        if self._optimizer is not None:
            nbytes += _arrays_bytes(self._optimizer[2])
        return nbytes, sum(f for _, f in stores)


class SiteCache:
    """The warm sites of one process, least recently used first (see the module's
    docstring for the key and the bounds; ``run_task`` sets ``budget_mb`` to each task's
    ``train.cache_mb``, applied from the next store or volume held). ``hits``/``builds``:
    how many ``get``s reused an entry or built one; ``optimizer_hits``: how many optimizer
    states were given without reading their file."""

    def __init__(self, budget_mb: int = DEFAULT_BUDGET_MB, max_files: int | None = None) -> None:
        self.budget_mb = budget_mb
        self.max_files = max_files if max_files is not None else _file_bound()
        self.lock = threading.RLock()
        self.hits = self.builds = self.optimizer_hits = 0
        self._sites: OrderedDict[tuple[Path, Path], WarmSite] = OrderedDict()

    def get(self, data_dir: Path, split_file: Path | None = None) -> WarmSite:
        """The site at ``data_dir`` (its split in ``split_file``, default
        ``<data_dir>/fedseg_split.json``): the held entry if the site's key is unchanged,
        else a new one (``load_split``)."""
        data_dir = Path(data_dir)
        path = Path(split_file) if split_file is not None else data_dir / SPLIT_FILE
        slot = (data_dir.resolve(), path.resolve())
        with self.lock:
            key = site_key(data_dir, path)
            site = self._sites.get(slot)
            if site is not None and key is not None and site.key == key:
                self._sites.move_to_end(slot)
                self.hits += 1
                self.fit(site)
                return site
            self._sites.pop(slot, None)
            split = load_split(data_dir, split_file)  # may file new cases: stat after
            if key is not None:
                key = SiteKey(key.cases, key.sources, _stat(path))
            site = WarmSite(self, key, key.cases if key else tuple(discover_cases(data_dir)), split)
            self._sites[slot] = site
            self.builds += 1
            self.fit(site)
            return site

    def fit(self, keep: WarmSite, extra_bytes: int = 0) -> bool:
        """Evict the least recently used sites other than ``keep`` until what all hold, plus
        ``extra_bytes``, is within the bounds; whether the bytes fit."""
        budget = self.budget_mb * 2**20
        with self.lock:
            while True:
                held = [s.held() for s in self._sites.values()]
                nbytes = sum(b for b, _ in held) + extra_bytes
                files = sum(f for _, f in held)
                if nbytes <= budget and files <= self.max_files:
                    return True
                victim = next((k for k, s in self._sites.items() if s is not keep), None)
                if victim is None:
                    return nbytes <= budget
                del self._sites[victim]

    def __len__(self) -> int:
        return len(self._sites)

    def __contains__(self, site: object) -> bool:
        return any(s is site for s in self._sites.values())

    def clear(self) -> None:
        with self.lock:
            self._sites.clear()


_process_cache: SiteCache | None = None
_process_lock = threading.Lock()


def process_cache() -> SiteCache:
    """This process's ``SiteCache`` (made on first use), shared by every site it serves."""
    global _process_cache
    with _process_lock:
        if _process_cache is None:
            _process_cache = SiteCache()
        return _process_cache
