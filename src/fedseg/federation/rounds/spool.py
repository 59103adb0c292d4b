"""Site updates parked on disk while a round is aggregated: the aggregator holds one at a time.

A streaming strategy (``Strategy.streams``) needs the round's updates only key by key, in
a weighted sum (``aggregation.weighted_average``). The coordinator writes each update to
the round's spool folder (``run_folder.spool_dir``) as its reply arrives, keeps its norm,
and drops the arrays; the norm bounds then know the round's median change before any
update is clipped, and the aggregation, the optimizer-state average and the records'
distances read the parked arrays back one array at a time (``SpooledArrays``). The
aggregator's memory is then the global model, the new one and one array of one update,
whatever the number of sites; the spool costs one model per site of disk for the round.

Format: one file per parked mapping, its arrays' raw bytes one after the other (C order);
the index (name -> dtype, shape, offset) stays in memory. The arrays are read with plain
reads (not a memory map), so what was read is freed when it is no longer used and the
process's resident memory stays bounded too. The folder is deleted when the round ends,
and a stale one (a killed aggregator) when the next round starts.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class _Entry:
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int


class SpooledArrays(Mapping[str, np.ndarray]):
    """A read-only mapping name -> array over a spool file: each access reads that array
    (a new, writable array), in the order the arrays were written."""

    def __init__(self, path: Path, index: dict[str, _Entry]) -> None:
        self.path, self._index = path, index

    def __getitem__(self, key: str) -> np.ndarray:
        e = self._index[key]
        count = int(np.prod(e.shape, dtype=np.int64))
        arr = np.fromfile(self.path, dtype=e.dtype, count=count, offset=e.offset)
        if arr.size != count:
            raise OSError(f"{self.path}: spool file is short (array {key!r})")
        return arr.reshape(e.shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    @property
    def nbytes(self) -> int:
        return sum(int(np.prod(e.shape, dtype=np.int64)) * e.dtype.itemsize
                   for e in self._index.values())  # fmt: skip


class Spool:
    """A folder of parked arrays for one round (created on the first ``park``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._n = 0

    def park(self, arrays: Mapping[str, np.ndarray]) -> SpooledArrays:
        """Write ``arrays`` to a new file of the spool; the mapping that reads them back."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{self._n:05d}.bin"
        self._n += 1
        index: dict[str, _Entry] = {}
        offset = 0
        with open(path, "wb") as f:
            for k, v in arrays.items():
                a = np.require(v, requirements="C")  # keeps 0-d arrays 0-d
                index[k] = _Entry(a.dtype, tuple(a.shape), offset)
                f.write(memoryview(a.reshape(-1)).cast("B"))
                offset += a.nbytes
        return SpooledArrays(path, index)

    def remove(self) -> None:
        """Delete the spool folder (and its parent when that is left empty)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # not empty (a stale round's spool) or absent
            self.folder.parent.rmdir()
