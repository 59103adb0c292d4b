"""Named numpy arrays: the form in which weights and optimizer state travel, are averaged
and are saved.

``Weights`` is an ordered ``dict`` name -> array. For a network it is in the network's
``state_dict`` order, buffers included (e.g. integer ``num_batches_tracked`` counters of
batch norm); an optimizer state has the same form (``model.optimizer_state.OptimizerState``).

Conventions:
- Several groups of arrays share one file or message by namespace: ``nest("m", arrays)``
  names each array ``m/<name>``, ``unnest("m", state)`` takes them back out.
- ``save_arrays``/``load_arrays`` are the one npz format on disk: written to a temp file,
  fsynced and renamed over the target, so a reader (or a killed writer) never sees half a
  file; read without pickle, shapes (0-d included) and dtypes exactly as saved; written
  and read (``ArraysOnDisk``) one array at a time.
- State a site carries from round to round (``<stem>_<round>.npz`` in its workspace):
  ``save_round_arrays`` keeps two files at most, ``load_round_arrays`` reads the one a round
  starts from.

torch is imported only by ``get_weights``/``set_weights``, so the array helpers (and the
aggregation math built on them) load without it.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import nn

Weights = dict[str, np.ndarray]

#: separator between a namespace and an array name (``nest``)
SEP = "/"


def get_weights(net: nn.Module) -> Weights:
    """Copy of the network's state as numpy arrays (dtypes kept)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}


def set_weights(net: nn.Module, weights: Weights) -> None:
    """Load ``weights`` into ``net`` (strict: same keys and shapes)."""
    import torch

    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}
    net.load_state_dict(state, strict=True)


def nest(prefix: str, arrays: Mapping[str, np.ndarray] | None) -> Weights:
    """``arrays`` under namespace ``prefix``: each ``name`` becomes ``prefix/name``
    (None or empty: nothing)."""
    return {f"{prefix}{SEP}{k}": v for k, v in (arrays or {}).items()}


def unnest(prefix: str, state: Mapping[str, np.ndarray]) -> Weights:
    """The arrays of ``state`` under namespace ``prefix``, without it (empty if none);
    the inverse of ``nest``."""
    head = prefix + SEP
    return {k[len(head) :]: v for k, v in state.items() if k.startswith(head)}


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray], sync: bool = True) -> None:
    """Write ``arrays`` to ``path`` as one npz, atomically (temp file, fsync, rename).
    ``sync=False`` skips the fsync: the file is whole or absent after a killed process, but
    a crash of the machine may leave it torn (for files their reader can do without:
    ``arrays_intact`` tells)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:  # np.savez's layout, one array in memory at a time
        with zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
            for k, v in arrays.items():
                with z.open(f"{k}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(v), allow_pickle=False)
        fh.flush()
        if sync:
            os.fsync(fh.fileno())
    os.replace(tmp, path)


def arrays_intact(path: Path) -> bool:
    """Whether ``path`` is a whole ``save_arrays`` file: a readable zip whose every member's
    CRC matches (a torn file after a machine crash is not)."""
    try:
        with zipfile.ZipFile(Path(path)) as z:
            return z.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False


def load_arrays(path: Path) -> Weights:
    """The arrays ``save_arrays`` wrote to ``path``, in their order."""
    with np.load(Path(path), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class ArraysOnDisk(Mapping[str, np.ndarray]):
    """The arrays ``save_arrays`` wrote to ``path`` as a read-only mapping that reads an
    array only when it is accessed (a new array each time), so a whole model file need not
    be in memory at once; the names are read when it is made."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with np.load(self.path, allow_pickle=False) as z:
            self._names = list(z.files)

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._names:
            raise KeyError(key)
        with np.load(self.path, allow_pickle=False) as z:
            return z[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _round_files(folder: Path, stem: str) -> dict[int, Path]:
    """``<stem>_<round>.npz`` files of ``folder`` by round."""
    out = {}
    for p in Path(folder).glob(f"{stem}_*.npz"):
        tail = p.stem[len(stem) + 1 :]
        if tail.isdigit():
            out[int(tail)] = p
    return out


def load_round_arrays(folder: Path, stem: str, rnd: int) -> Weights | None:
    """The arrays of the latest ``<stem>_<round>.npz`` in ``folder`` with round < ``rnd``
    (None if there is none): a redone round starts from the same state as its first try."""
    files = {r: p for r, p in _round_files(folder, stem).items() if r < rnd}
    return load_arrays(files[max(files)]) if files else None


def save_round_arrays(folder: Path, stem: str, rnd: int, arrays: Mapping[str, np.ndarray]) -> Path:
    """Save ``folder/<stem>_<rnd:04d>.npz`` and prune: at most two files are kept, the new
    one and the one round ``rnd`` started from (``load_round_arrays``' choice), which is all
    a redone round needs. Returns the new file."""
    started_from = max((r for r in _round_files(folder, stem) if r < rnd), default=None)
    path = Path(folder) / f"{stem}_{rnd:04d}.npz"
    save_arrays(path, arrays)
    for r, p in _round_files(folder, stem).items():
        if r not in (rnd, started_from):
            p.unlink(missing_ok=True)
    return path
