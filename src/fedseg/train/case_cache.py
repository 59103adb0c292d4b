"""Prepared training cases and the site's on-disk cache of them and of its validation cases.

``prepare_case`` turns a labelled case into what the patch sampler reads (crop all-zero
planes, z-score, pad to the patch, labels -> regions, tumor voxel indices). That costs a
NIfTI decompression and a normalisation per case, so a site keeps the result on disk:
``<data>/.fedseg/cache/<case id>/<entry>/{image,regions,tumor}.npy``, opened with
``np.load(mmap_mode="r")``; patches are sliced from the memory map (a copy per patch), and
forked loader workers share its pages. Validation scores a case on its original grid, so
its entry holds the volumes as ``load_case`` gives them (``cached_volumes``: the image
stored cropped to its non-zero box, zeros put back on reading; the label and affine as
they are), and the metrics are exactly those of reading the NIfTI files.

An entry's name is ``<source>-v<PREP_VERSION>-<variant>``: ``source`` hashes the case's
files (resolved path, size, mtime_ns, inode), its layout and channels, so a changed or
replaced NIfTI gives a new entry (so does a modality that gains an image: a declared-absent
channel, prepared as zeros, gets a new entry once ``fedseg complete`` writes its
``.syn`` file); the version changes when the stored arrays change; the
variant is the pad-to patch size (``<X>x<Y>x<Z>``) or ``volumes``. When a case's entry is
made or opened, its entries for other sources or versions are removed (those for other
variants of the same files stay: two recipes on one data folder do not evict each other).

Writes go to a temporary folder beside the entry, renamed into place once complete, so a
reader sees a whole entry or none; when two processes prepare the same case at once, the
first rename wins and the other process opens the winner's entry. An entry that cannot be
read back (a crash mid-write, a damaged disk) is removed and made again. A cache folder
that cannot be written raises ``CacheNotWritable`` (``writable_cache`` checks a data
folder before any case is prepared): the callers fall back to reading the files.
``cache_size``/``clear_cache`` serve ``fedseg data cache-clear``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedseg.data.cases import Case, CaseVolumes, load_case
from fedseg.data.labels import labels_to_regions
from fedseg.data.preprocess import crop_and_normalize, nonzero_box, uncrop
from fedseg.errors import DataError
from fedseg.train.config import Shape3
from fedseg.train.patches import pad_to

#: The site's own folder inside its data folder: run workspaces and the case cache.
SITE_FOLDER = ".fedseg"
#: The case cache, inside ``SITE_FOLDER``.
CACHE_FOLDER = "cache"
#: Bump when ``prepare_case`` gives different arrays for the same files.
PREP_VERSION = 1
#: An entry's files, ``<name>.npy``, with their dtype and rank: a ``PreparedCase``'s arrays...
PREPARED: dict[str, tuple[np.dtype, int]] = {
    "image": (np.dtype(np.float32), 4),
    "regions": (np.dtype(np.uint8), 4),
    "tumor": (np.dtype(np.int64), 1),
}
#: ... or a validation case's ``CaseVolumes`` as loaded (its original grid): the image
#: cropped to ``box`` (rows: start, stop of x, y, z; all zero outside it), the full label.
VOLUMES: dict[str, tuple[np.dtype, int]] = {
    "image": (np.dtype(np.float32), 4),
    "box": (np.dtype(np.int64), 2),
    "label": (np.dtype(np.uint8), 3),
    "affine": (np.dtype(np.float64), 2),
}
#: The entry variant of ``VOLUMES`` (a prepared case's variant is its patch size).
VOLUMES_VARIANT = "volumes"
_TMP = ".tmp-"
log = logging.getLogger(__name__)
#: A temporary folder older than this is a crashed writer's and is removed.
_TMP_MAX_AGE_S = 3600.0


class CacheNotWritable(Exception):
    """The case cache ``folder`` cannot be written (``reason``: the operating system's)."""

    def __init__(self, folder: Path, cause: BaseException) -> None:
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause)
        super().__init__(f"case cache {folder} not writable ({reason})")
        self.folder, self.reason = folder, reason


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


def writable_cache(root: Path) -> Path:
    """The case cache of the data folder ``root``, made if missing, after checking that a
    file can be written in it; ``CacheNotWritable`` if not."""
    folder = cache_folder(root)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=_TMP, dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise CacheNotWritable(folder, exc) from None
    return folder


def case_root(case: Case) -> Path | None:
    """The data folder whose cache holds ``case``: where it was discovered, else its folder."""
    return case.root if case.root is not None else case.folder


def source_key(case: Case) -> str:
    """A hash of the case's files (resolved path, size, mtime_ns, inode), layout and channels.
    Only modalities with an image are hashed: a zero-filled (absent) channel has no line, so
    completing it changes the key. Read by ``stat`` only: a warm site recomputes it for
    every case at every task (``train.warm``)."""
    h = hashlib.sha256(f"{case.layout.value}\n".encode())
    files = [(m, src.path, src.channel) for m, src in sorted(case.images.items())]
    files.append(("label", case.label, None))
    for name, path, channel in files:
        if path is None:
            h.update(f"{name}:none\n".encode())
            continue
        real = os.path.realpath(path)  # Path.resolve's string, without pathlib's cost
        st = os.stat(real)
        h.update(f"{name}:{real}:{channel}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}\n".encode())
    return h.hexdigest()[:20]


def entry_name(case: Case, variant: Shape3 | str) -> str:
    """``<source>-v<PREP_VERSION>-<variant>``: the cache entry of ``case`` prepared for a
    patch size (``<X>x<Y>x<Z>``) or its loaded volumes (``volumes``)."""
    v = variant if isinstance(variant, str) else "x".join(str(s) for s in variant)
    return f"{source_key(case)}-v{PREP_VERSION}-{v}"


def _case_dir(folder: Path, case_id: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", case_id)
    return folder / (safe if safe.strip(".") else f"_{safe}")


Arrays = dict[str, np.ndarray]
Spec = dict[str, tuple[np.dtype, int]]


def _open_entry(entry: Path, spec: Spec) -> Arrays:
    """The arrays of a complete entry, memory-mapped; ValueError/OSError if it is damaged."""
    arrays = {}
    for name, (dtype, ndim) in spec.items():
        arr = np.load(entry / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        if arr.dtype != dtype or arr.ndim != ndim:
            raise ValueError(f"{entry / name}.npy: {arr.dtype} {arr.shape}, expected {dtype}")
        arrays[name] = arr
    image, other = arrays["image"], arrays.get("regions")
    if other is not None and image.shape[1:] != other.shape[1:]:
        raise ValueError(f"{entry}: image and regions differ in shape")
    box = arrays.get("box")
    if box is not None and (box.shape != (3, 2) or tuple(box[:, 1] - box[:, 0]) != image.shape[1:]):
        raise ValueError(f"{entry}: image and box differ in shape")
    return arrays


def _write_entry(entry: Path, arrays: Arrays) -> None:
    """Write ``arrays`` to a temporary folder and rename it to ``entry``; if another
    process renamed its own first, keep theirs. OSError: the folder is not writable."""
    tmp = entry.parent / f"{_TMP}{entry.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        for name, arr in arrays.items():
            with open(tmp / f"{name}.npy", "wb") as f:
                np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
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


def _cached(
    case: Case, folder: Path, variant: Shape3 | str, spec: Spec, make: Callable[[], Arrays]
) -> Arrays:
    """The arrays of the entry ``variant`` of ``case``, memory-mapped, made first (``make``)
    if missing or damaged. ``CacheNotWritable`` when the entry cannot be written; errors
    reading the case are ``make``'s."""
    case_dir = _case_dir(folder, case.case_id)
    try:
        entry = case_dir / entry_name(case, variant)
    except OSError:
        return make()  # a source file cannot be read: ``make`` raises the loader's error
    if entry.is_dir():
        try:
            arrays = _open_entry(entry, spec)
        except (OSError, ValueError):
            shutil.rmtree(entry, ignore_errors=True)  # damaged: make it again
        else:
            _remove_stale(case_dir, entry.name)
            return arrays
    arrays = make()
    try:
        _write_entry(entry, arrays)
        _remove_stale(case_dir, entry.name)
        return _open_entry(entry, spec)
    except (OSError, ValueError) as exc:
        raise CacheNotWritable(folder, exc) from None


def cached_case(case: Case, patch_size: Shape3, folder: Path) -> PreparedCase:
    """``prepare_case``'s arrays for ``case``, memory-mapped from its entry in the cache
    ``folder``, preparing and writing the entry first if it is missing or damaged.

    ``CacheNotWritable`` when the entry cannot be written (the caller prepares in memory).
    """

    def make() -> Arrays:
        p = prepare_case(case, patch_size)
        return {"image": p.image, "regions": p.regions, "tumor": p.tumor}

    a = _cached(case, folder, patch_size, PREPARED, make)
    return PreparedCase(case.case_id, a["image"], a["regions"], a["tumor"])


def cached_volumes(case: Case, folder: Path) -> CaseVolumes:
    """``load_case``'s volumes of a labelled ``case`` (its original grid, as validation
    scores it), memory-mapped from the cache ``folder``; ``CacheNotWritable`` as ``cached_case``."""

    def make() -> Arrays:
        vol = load_case(case)
        if vol.label is None:
            raise DataError(f"case {case.case_id} has no label map; validation needs labels")
        box = nonzero_box(vol.image)
        return {
            "image": vol.image[(slice(None), *box)],
            "box": np.array([[b.start, b.stop] for b in box], dtype=np.int64),
            "label": vol.label,
            "affine": np.asarray(vol.affine, dtype=np.float64),
        }

    a = _cached(case, folder, VOLUMES_VARIANT, VOLUMES, make)
    box = (slice(*a["box"][0]), slice(*a["box"][1]), slice(*a["box"][2]))
    image = uncrop(a["image"], box, a["label"].shape)  # zeros outside the box, as loaded
    label, affine = np.array(a["label"]), np.array(a["affine"])
    return CaseVolumes(case.case_id, image, label, affine, case.present)


class VolumeReader:
    """Reads validation cases through the cache of their data folder (``cached_volumes``);
    where that cannot be written, from their files (``load_case``), saying so once."""

    def __init__(self) -> None:
        self._unwritable: set[Path] = set()

    def __call__(self, case: Case) -> CaseVolumes:
        root = case_root(case)
        if root is not None and root not in self._unwritable:
            try:
                return cached_volumes(case, writable_cache(root))
            except CacheNotWritable as exc:
                self._unwritable.add(root)
                log.warning("%s; validation cases read from their files", exc)
        return load_case(case)


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
