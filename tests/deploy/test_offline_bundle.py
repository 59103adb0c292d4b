"""The offline installation bundle: built from a package index, installed with none.

The slow test builds the ``user`` bundle, installs it into a fresh venv in a process that has
no network at all where the machine allows it (``unshare -n``: a network namespace with no
interface; otherwise with every pip index and configuration removed from its environment),
then runs ``fedseg data synth`` and ``fedseg segment`` from that venv and checks that the
segmentation equals the one this checkout makes with the same model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedseg.errors import FedsegError
from fedseg.offline_bundle import (
    INSTALLER,
    MANIFEST,
    SUMS,
    WHEELS,
    build_bundle,
    extras_of,
    installer_text,
)
from tests.helpers import run_fedseg
from tests.model.modelkit import tiny_model


def test_roles_map_to_extras_and_unknown_roles_are_named() -> None:
    assert extras_of(["site", "user"]) == ("intake", "openvino", "privacy")
    with pytest.raises(FedsegError, match=r"unknown role\(s\) hospital: pick from site, "):
        extras_of(["site", "hospital"])


def test_the_installer_reaches_no_index() -> None:
    text = installer_text(("intake",))
    assert "--no-index" in text and "PIP_CONFIG_FILE=/dev/null" in text
    assert "http" not in text  # no URL at all: nothing can be fetched
    assert "'fedseg[intake]' 'torch==2.13.0'" in text


def test_a_non_empty_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(FedsegError, match="exists and is not an empty folder"):
        build_bundle(tmp_path, ["user"])
    result = run_fedseg("offline-bundle", tmp_path / "b", "--roles", "nurse")
    assert result.returncode != 0
    assert "unknown role(s) nurse" in result.stderr and "Traceback" not in result.stderr


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _offline_prefix() -> list[str]:
    """``unshare -n`` when this machine lets us drop the network, else nothing."""
    if shutil.which("unshare") is None:
        return []
    ok = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
    return ["unshare", "-n"] if ok.returncode == 0 else []


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_bundle_installs_without_an_index_and_segments_like_this_checkout(
    tmp_path: Path,
) -> None:
    bundle = tmp_path / "bundle"
    built = run_fedseg("offline-bundle", bundle, "--roles", "user", timeout=900)
    assert built.returncode == 0, built.stderr[-2000:]
    manifest = json.loads((bundle / MANIFEST).read_text())
    assert manifest["extras"] == ["openvino"] and "+cpu" in manifest["torch_wheel"]
    sums = (bundle / SUMS).read_text().splitlines()
    assert len(sums) == manifest["wheels"] + 4 + 2  # wheels, atlas, installer, manifest
    assert any(line.endswith(f"{WHEELS}/{manifest['torch_wheel']}") for line in sums)

    venv, cache = tmp_path / "venv", tmp_path / "cache"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "FEDSEG_CACHE": str(cache),
           "PYTHON": sys.executable,  # venv makes the new venv from its base interpreter
           # were any of these honoured, the install could fetch: the installer drops them
           "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
           "PIP_FIND_LINKS": "/opt/wheels"}  # fmt: skip
    install = subprocess.run(
        [*_offline_prefix(), "bash", str(bundle / INSTALLER), str(venv)],
        env=env, capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-2000:]
    fedseg = venv / "bin" / "fedseg"
    origin = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import fedseg; print(fedseg.__file__)"],
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)}, capture_output=True,
        text=True, check=True, cwd=tmp_path,
    ).stdout  # fmt: skip
    assert str(venv) in origin  # the bundle's wheel, not this checkout
    assert (cache / "sri24" / "t1_stripped.nii.gz").is_file()

    offline_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path),
                   "FEDSEG_CACHE": str(cache), "NO_COLOR": "1"}  # fmt: skip
    # the same thread settings as this checkout's run below (tests/conftest.py sets them)
    offline_env |= {k: os.environ[k] for k in THREAD_VARS if k in os.environ}
    data = tmp_path / "data"
    synth = subprocess.run(
        [*_offline_prefix(), str(fedseg), "data", "synth", str(data), "--sites", "1",
         "--cases-per-site", "1", "--spacing", "6", "--seed", "3"],
        env=offline_env, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert synth.returncode == 0, synth.stderr[-2000:]
    case = next(p for p in sorted((data / "site1").iterdir()) if p.is_dir())
    model = tiny_model(tmp_path / "model.pt")
    theirs, ours = tmp_path / "offline.nii.gz", tmp_path / "here.nii.gz"
    seg = subprocess.run(
        [*_offline_prefix(), str(fedseg), "segment", str(case), "-m", str(model),
         "-o", str(theirs)],
        env=offline_env, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert seg.returncode == 0, seg.stderr[-2000:]
    here = run_fedseg("segment", case, "-m", model, "-o", ours)
    assert here.returncode == 0, here.stderr[-2000:]
    np.testing.assert_array_equal(
        np.asarray(nib.load(theirs).dataobj), np.asarray(nib.load(ours).dataobj)
    )
