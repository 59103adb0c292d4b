"""Prepared training cases and their on-disk cache under the site's data folder.

``prepare_case`` turns a labelled case into what the patch sampler reads (crop all-zero
planes, z-score, pad to the patch, labels -> regions, tumor voxel indices). That costs a
NIfTI decompression and a normalisation per case, so a site keeps the result on disk:
``<data>/.fedseg/cache/<case id>/<entry>/{image,regions,tumor}.npy``, opened with
``np.load(mmap_mode="r")``; patches are sliced from the memory map (a copy per patch), and
forked loader workers share its pages.

An entry's name is ``<source>-v<PREP_VERSION>-<X>x<Y>x<Z>``: ``source`` hashes the case's
files (resolved path, size, mtime_ns, inode), its layout and channels, so a changed or
replaced NIfTI gives a new entry; the version changes when ``prepare_case``'s arrays change;
the patch size is the pad-to size. When a case's entry is made or opened, its entries for
other sources or versions are removed (those for other patch sizes of the same files stay:
two recipes on one data folder do not evict each other).

Writes go to a temporary folder beside the entry, renamed into place once complete, so a
reader sees a whole entry or none; when two processes prepare the same case at once, the
first rename wins and the other process opens the winner's entry. An entry that cannot be
read back (a crash mid-write, a damaged disk) is removed and prepared again.
``cache_size``/``clear_cache`` serve ``fedseg data cache-clear``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedseg.data.cases import Case, load_case
from fedseg.data.labels import labels_to_regions
from fedseg.data.preprocess import crop_and_normalize
from fedseg.errors import DataError
from fedseg.train.config import Shape3
from fedseg.train.patches import pad_to

#: The site's own folder inside its data folder: run workspaces and the case cache.
SITE_FOLDER = ".fedseg"
#: The case cache, inside ``SITE_FOLDER``.
CACHE_FOLDER = "cache"
#: Bump when ``prepare_case`` gives different arrays for the same files.
PREP_VERSION = 1
#: An entry's files: ``<name>.npy`` for each array of ``PreparedCase``, with its dtype and rank.
ARRAYS: dict[str, tuple[np.dtype, int]] = {
    "image": (np.dtype(np.float32), 4),
    "regions": (np.dtype(np.uint8), 4),
    "tumor": (np.dtype(np.int64), 1),
}
_TMP = ".tmp-"
#: A temporary folder older than this is a crashed writer's and is removed.
_TMP_MAX_AGE_S = 3600.0


@dataclass(frozen=True)
class PreparedCase:
    """A case ready for sampling: ``image`` (4, X, Y, Z) float32 cropped to the brain,
    z-scored and padded to at least the patch; ``regions`` (3, X, Y, Z) uint8 (ET, TC, WT);
    ``tumor`` flat indices (int64) of WT voxels, for tumor-biased sampling. The arrays are
    in memory or memory-mapped read-only from the cache."""

    case_id: str
    image: np.ndarray
    regions: np.ndarray
    tumor: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.image.nbytes + self.regions.nbytes + self.tumor.nbytes


def prepare_case(case: Case, patch_size: Shape3) -> PreparedCase:
    """Load, crop all-zero planes, z-score, pad to ``patch_size``, labels -> regions."""
    vol = load_case(case)
    if vol.label is None:
        raise DataError(f"case {case.case_id} has no label map; training needs labelled cases")
    image, box = crop_and_normalize(vol.image)
    regions = labels_to_regions(vol.label[box]).astype(np.uint8)
    image, regions = pad_to(image, patch_size), pad_to(regions, patch_size)
    tumor = np.flatnonzero(regions[2]).astype(np.int64)
    return PreparedCase(case.case_id, image, regions, tumor)


def cache_folder(root: Path) -> Path:
    """The case cache of the data folder ``root``."""
    return Path(root) / SITE_FOLDER / CACHE_FOLDER


def case_root(case: Case) -> Path | None:
    """The data folder whose cache holds ``case``: where it was discovered, else its folder."""
    return case.root if case.root is not None else case.folder


def source_key(case: Case) -> str:
    """A hash of the case's files (resolved path, size, mtime_ns, inode), layout and channels."""
    h = hashlib.sha256(f"{case.layout.value}\n".encode())
    files = [(m, src.path, src.channel) for m, src in sorted(case.images.items())]
    files.append(("label", case.label, None))
    for name, path, channel in files:
        if path is None:
            h.update(f"{name}:none\n".encode())
            continue
        real = Path(path).resolve()
        st = real.stat()
        h.update(f"{name}:{real}:{channel}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}\n".encode())
    return h.hexdigest()[:20]


def entry_name(case: Case, patch_size: Shape3) -> str:
    """``<source>-v<PREP_VERSION>-<X>x<Y>x<Z>``: the cache entry of ``case`` for ``patch_size``."""
    return f"{source_key(case)}-v{PREP_VERSION}-{'x'.join(str(s) for s in patch_size)}"


def _case_dir(folder: Path, case_id: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", case_id)
    return folder / (safe if safe.strip(".") else f"_{safe}")


def _open_entry(entry: Path, case_id: str) -> PreparedCase:
    """The arrays of a complete entry, memory-mapped; ValueError/OSError if it is damaged."""
    arrays = {}
    for name, (dtype, ndim) in ARRAYS.items():
        arr = np.load(entry / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        if arr.dtype != dtype or arr.ndim != ndim:
            raise ValueError(f"{entry / name}.npy: {arr.dtype} {arr.shape}, expected {dtype}")
        arrays[name] = arr
    if arrays["image"].shape[1:] != arrays["regions"].shape[1:]:
        raise ValueError(f"{entry}: image and regions differ in shape")
    return PreparedCase(case_id, arrays["image"], arrays["regions"], arrays["tumor"])


def _write_entry(entry: Path, prepared: PreparedCase) -> None:
    """Write ``prepared`` to a temporary folder and rename it to ``entry``; if another
    process renamed its own first, keep theirs. OSError: the folder is not writable."""
    tmp = entry.parent / f"{_TMP}{entry.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        for name in ARRAYS:
            with open(tmp / f"{name}.npy", "wb") as f:
                np.save(f, np.ascontiguousarray(getattr(prepared, name)), allow_pickle=False)
        try:
            tmp.rename(entry)
        except OSError:
            if not entry.is_dir():  # not a lost race: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale(case_dir: Path, keep: str) -> None:
    """Remove the case's entries for other sources or versions, and crashed writers' leftovers."""
    prefix = keep.rsplit("-", 1)[0] + "-"  # same source and version, any patch size
    for p in case_dir.iterdir():
        if p.name.startswith(_TMP):
            with contextlib.suppress(OSError):
                if time.time() - p.stat().st_mtime > _TMP_MAX_AGE_S:
                    shutil.rmtree(p, ignore_errors=True)
        elif not p.name.startswith(prefix):
            shutil.rmtree(p, ignore_errors=True)


def cached_case(case: Case, patch_size: Shape3, folder: Path) -> PreparedCase:
    """``prepare_case``'s arrays for ``case``, memory-mapped from its entry in the cache
    ``folder``, preparing and writing the entry first if it is missing or damaged.

    OSError when the cache folder cannot be written (the caller prepares in memory instead).
    """
    case_dir = _case_dir(folder, case.case_id)
    entry = case_dir / entry_name(case, patch_size)
    if entry.is_dir():
        try:
            prepared = _open_entry(entry, case.case_id)
        except (OSError, ValueError):
            shutil.rmtree(entry, ignore_errors=True)  # damaged: prepare it again
        else:
            _remove_stale(case_dir, entry.name)
            return prepared
    _write_entry(entry, prepare_case(case, patch_size))
    _remove_stale(case_dir, entry.name)
    return _open_entry(entry, case.case_id)


def cache_size(root: Path) -> tuple[int, int]:
    """(entries, bytes) in the case cache of the data folder ``root``."""
    folder = cache_folder(root)
    if not folder.is_dir():
        return 0, 0
    entries = [e for c in folder.iterdir() if c.is_dir() for e in c.iterdir() if e.is_dir()]
    size = sum(f.stat().st_size for e in entries for f in e.iterdir() if f.is_file())
    return len(entries), size


def clear_cache(root: Path) -> tuple[int, int]:
    """Remove the case cache of the data folder ``root``; returns what it held (entries, bytes).
    A training process that has entries open keeps reading them until it closes them."""
    held = cache_size(root)
    shutil.rmtree(cache_folder(root), ignore_errors=True)
    return held
