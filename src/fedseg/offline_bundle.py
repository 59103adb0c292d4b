"""An offline installation bundle: every wheel a role needs, the SRI24 atlas, an installer.

Hospital machines are often cut off from the internet. ``fedseg offline-bundle OUT`` (run on a
machine with a package index, from a source checkout) writes::

    OUT/wheels/*.whl        fedseg's own wheel and every dependency, as wheels (pip wheel)
    OUT/cache/sri24/        the atlas files intake registers to (data.atlas.ATLAS_FILES)
    OUT/install.sh          venv + ``pip install --no-index --find-links wheels``
    OUT/SHA256SUMS          one line per file, ``sha256sum -c`` format
    OUT/bundle.json         what was bundled: roles, extras, torch wheel, fedseg version

The installer never reaches an index: it runs pip with ``--no-index`` and without any pip
configuration file, so a wheel missing from the bundle fails the install instead of being
fetched. torch is installed first and checked after, as in the Makefile (the pin matters:
another version pulls gigabytes of CUDA packages). The CPU build is bundled unless
``torch_index`` names another index (e.g. PyTorch's CUDA one), which is then used for torch
and its own dependencies only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from fedseg.data.atlas import ATLAS_FILES, atlas_dir
from fedseg.errors import FedsegError

TORCH_PIN = "torch==2.13.0"
#: the optional dependency groups (pyproject extras) each role needs beyond the core
ROLE_EXTRAS: dict[str, tuple[str, ...]] = {
    "site": ("intake", "privacy"),  # DICOM/PACS intake; DP, secure aggregation, HE at the site
    "coordinator": ("privacy", "simulation"),  # HE keys, accounting; 71-site simulation
    "user": ("openvino",),  # segment a case on a CPU with the exported INT8 model
}
WHEELS, CACHE, INSTALLER, SUMS, MANIFEST = (
    "wheels", "cache", "install.sh", "SHA256SUMS", "bundle.json")  # fmt: skip


@dataclass(frozen=True)
class BundleManifest:
    """What ``bundle.json`` records."""

    fedseg_version: str
    roles: tuple[str, ...]
    extras: tuple[str, ...]
    torch_wheel: str
    wheels: int
    python: str


def extras_of(roles: Sequence[str]) -> tuple[str, ...]:
    """The sorted union of the roles' extras; a one-line error naming the known roles."""
    unknown = [r for r in roles if r not in ROLE_EXTRAS]
    if unknown or not roles:
        raise FedsegError(
            f"unknown role(s) {', '.join(unknown) or '(none given)'}: pick from "
            f"{', '.join(ROLE_EXTRAS)} (comma-separated)"
        )
    return tuple(sorted({e for r in roles for e in ROLE_EXTRAS[r]}))


def project_root() -> Path:
    """The source checkout fedseg runs from (its ``pyproject.toml``); a one-line error when
    fedseg was installed from a wheel (the bundle builds fedseg's own wheel from source)."""
    import fedseg

    root = Path(fedseg.__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise FedsegError(
            "fedseg offline-bundle builds from a source checkout, and this fedseg was installed "
            "from a wheel: run it from a clone (`pip install -e .` there)"
        )
    return root


def installer_text(extras: Sequence[str]) -> str:
    """``install.sh``: a venv (``$1``, default ./fedseg-venv) with torch first, then fedseg
    and its extras, all from ``wheels/`` with no index; the atlas into ``$FEDSEG_CACHE``."""
    spec = f"fedseg[{','.join(extras)}]" if extras else "fedseg"
    pyv = f"{sys.version_info.major}.{sys.version_info.minor}"
    return f"""#!/usr/bin/env bash
# Install fedseg with no network: every wheel comes from this folder.
# usage: bash install.sh [VENV_DIR]   (default ./fedseg-venv; python3.11 on PATH)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${{1:-fedseg-venv}}"
py="${{PYTHON:-python3}}"
"$py" -c "import sys; sys.exit(0 if sys.version_info[:2] == ({sys.version_info.major}, \
{sys.version_info.minor}) else 'the wheels are for Python {pyv}: set PYTHON=python{pyv}')"
"$py" -m venv "$venv"
# no index, no pip configuration: a wheel missing here fails instead of being downloaded
unset PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_CONSTRAINT
export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
pip=("$venv/bin/python" -m pip install -q --no-index --find-links "$here/{WHEELS}")
"${{pip[@]}}" '{TORCH_PIN}'
"${{pip[@]}}" '{spec}' '{TORCH_PIN}'
"$venv/bin/python" -c "import torch, sys; v = torch.__version__.split('+')[0]; \\
  sys.exit(0 if v == '{TORCH_PIN.split("==")[1]}' else f'torch became {{torch.__version__}}')"
cache="${{FEDSEG_CACHE:-$HOME/.cache/fedseg}}"
mkdir -p "$cache"
cp -R "$here/{CACHE}/sri24" "$cache/"
echo "fedseg installed in $venv (run $venv/bin/fedseg); atlas in $cache/sri24"
echo "if FEDSEG_CACHE is not $cache when fedseg runs, set it: export FEDSEG_CACHE=$cache"
"""


def _pip(args: list[str], what: str) -> None:
    """``python -m pip ARGS``; a one-line error with pip's last line when it fails."""
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True,
                          check=False)  # fmt: skip
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        raise FedsegError(f"{what} failed: {lines[-1] if lines else 'pip gave no reason'} "
                          "(a package index must be reachable to build the bundle)")  # fmt: skip


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_bundle(
    out: Path,
    roles: Sequence[str],
    *,
    torch_index: str | None = None,
    step: Callable[[str], None] = lambda _: None,
) -> BundleManifest:
    """Write the bundle into ``out`` (new or empty) for ``roles``; ``step`` hears each stage.
    Raises a one-line ``FedsegError`` (bad roles, ``out`` not empty, pip failed)."""
    extras = extras_of(roles)
    root = project_root()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FedsegError(f"{out} exists and is not an empty folder: pick a new OUT")
    wheels = out / WHEELS
    wheels.mkdir(parents=True)
    step("torch")
    torch_args = ["wheel", "-q", "--wheel-dir", str(wheels), TORCH_PIN]
    if torch_index:
        torch_args += ["--index-url", torch_index]
    _pip(torch_args, f"fetching {TORCH_PIN}")
    step("fedseg and its dependencies")
    spec = f"{root}[{','.join(extras)}]" if extras else str(root)
    # the torch wheel just fetched satisfies the pin, so pip does not look for another build
    _pip(["wheel", "-q", "--wheel-dir", str(wheels), "--find-links", str(wheels),
          spec, TORCH_PIN], "building the wheels")  # fmt: skip
    torch_wheels = sorted(p.name for p in wheels.glob("torch-*.whl"))
    if len(torch_wheels) != 1:
        raise FedsegError(
            f"the bundle holds {len(torch_wheels)} torch wheels "
            f"({', '.join(torch_wheels)}); expected one: pick one --torch-index"
        )
    step("atlas")
    atlas, kept = atlas_dir(), out / CACHE / "sri24"
    kept.mkdir(parents=True)
    for name in ATLAS_FILES:
        shutil.copy2(atlas / name, kept / name)
    (out / INSTALLER).write_text(installer_text(extras))
    os.chmod(out / INSTALLER, 0o755)
    from importlib.metadata import version

    manifest = BundleManifest(
        fedseg_version=version("fedseg"), roles=tuple(roles), extras=extras,
        torch_wheel=torch_wheels[0], wheels=len(list(wheels.glob("*.whl"))),
        python=f"{sys.version_info.major}.{sys.version_info.minor}",
    )  # fmt: skip
    (out / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    step("checksums")
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != SUMS)
    (out / SUMS).write_text("".join(f"{_sha256(p)}  {p.relative_to(out)}\n" for p in files))
    return manifest


def bundle_size(out: Path) -> int:
    """Bytes of every file under ``out``."""
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
