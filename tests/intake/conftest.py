"""Fixtures for intake tests: a minimal synthetic case moved by known rigid transforms, and a
real Orthanc PACS on free loopback ports."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from fedseg.data import nifti
from fedseg.data.atlas import Atlas, load_atlas
from fedseg.data.cases import MODALITIES
from fedseg.intake import itk_bridge
from fedseg.intake.registration import block_average, euler_from
from tests.helpers import free_port

#: Known per-sequence rigid motions: (rotation axis, degrees, translation mm). They map the
#: native (scanner) space of each sequence to the atlas space.
MOTIONS: dict[str, tuple[tuple[float, float, float], float, tuple[float, float, float]]] = {
    "t1": ((0, 0, 1), 6.0, (4.0, -3.0, 2.0)),
    "t1ce": ((1, 0.3, 0), 8.0, (-6.0, 5.0, 3.0)),
    "t2": ((0, 1, 0), -5.0, (3.0, 4.0, -5.0)),
    "flair": ((1, 1, 0), 7.0, (-2.0, -6.0, 4.0)),
}


@dataclass
class SyntheticCase:
    """Atlas-space truth (arrays on ``grid``) and where the moved native case was written."""

    truth: dict[str, np.ndarray]
    label: np.ndarray
    grid_affine: np.ndarray
    folder: Path
    case_id: str


def rotation(axis: tuple[float, float, float], degrees: float) -> np.ndarray:
    """Rodrigues rotation matrix."""
    k = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * kx + (1 - np.cos(t)) * kx @ kx


def atlas_truth(
    atlas: Atlas, spacing: float
) -> tuple[dict[str, np.ndarray], np.ndarray, sitk.Image]:
    """Four made-up contrasts and a 3-label tumor on the atlas grid at ``spacing`` mm."""
    grid = itk_bridge.reference_grid(atlas.affine, atlas.t1.shape, spacing)

    def down(arr: np.ndarray) -> np.ndarray:
        img = block_average(itk_bridge.from_array(arr.astype(np.float32), atlas.affine), spacing)
        return itk_bridge.to_array(sitk.Resample(img, grid, sitk.Transform(), sitk.sitkLinear))

    # Contrasts are remapped T1 intensities (not the tissue maps, which sit ~1 mm off the
    # atlas T1 along x): same anatomy, different contrast, as MI registration expects.
    t1 = down(atlas.t1)
    brain = t1 > 1.0
    rel = t1 / np.percentile(t1[brain], 99)  # ~0.3 CSF, ~0.6 GM, ~0.9 WM
    # A tumor in the right hemisphere: necrosis (1) in enhancing rim (4) in edema (2).
    affine = itk_bridge.affine_of(grid)
    ijk = np.indices(t1.shape).reshape(3, -1).T
    xyz = (ijk @ affine[:3, :3].T + affine[:3, 3]).reshape(*t1.shape, 3)
    center = (
        np.array([28.0, 10.0, 20.0]) + affine[:3, :3] @ (np.array(t1.shape) / 2) + affine[:3, 3]
    )
    r = np.linalg.norm(xyz - center, axis=-1)
    label = np.zeros(t1.shape, np.uint8)
    label[(r < 22) & brain] = 2
    label[(r < 13) & brain] = 4
    label[(r < 8) & brain] = 1
    tumor = label > 0
    truth = {
        "t1": t1 * (1 - 0.3 * tumor),
        "t1ce": t1 * 0.8 + 700 * (label == 4) + 40 * brain,
        "t2": (400 + 800 * (1.1 - rel)) * brain + 600 * (label == 2) + 300 * (label == 1),
        "flair": (300 + 600 * np.exp(-(((rel - 0.6) / 0.25) ** 2))) * brain + 500 * (label == 2),
    }
    return {m: v.astype(np.float32) for m, v in truth.items()}, label, grid


def native_transform(m: str) -> sitk.Euler3DTransform:
    """The native->atlas point map of sequence ``m`` (what resampling into native space uses)."""
    axis, deg, shift = MOTIONS[m]
    return euler_from(rotation(axis, deg), np.asarray(shift))


def write_moved_case(
    root: Path,
    truth: dict[str, np.ndarray],
    label: np.ndarray,
    grid: sitk.Image,
    case_id: str,
    spacing: float = 2.4,
) -> Path:
    """Move each atlas-space sequence by its own rigid motion onto a native scanner grid
    (LPS axes, ``spacing`` mm, a 202x240x154 mm box) and write a BraTS case; the label moves
    with T1Gd."""
    affine = itk_bridge.affine_of(grid)
    size = [round(202 / spacing), round(240 / spacing), round(154 / spacing)]
    native = sitk.Image(size, sitk.sitkFloat32)
    native.SetSpacing((spacing,) * 3)
    center = np.asarray(
        grid.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in grid.GetSize()])
    )
    native.SetOrigin(tuple(center - np.array(size) * spacing / 2))
    folder = root / case_id
    for m in MODALITIES:
        src = itk_bridge.from_array(truth[m], affine)
        moved = sitk.Resample(src, native, native_transform(m), sitk.sitkLinear, 0.0)
        nifti.save(
            folder / f"{case_id}_{m}.nii.gz",
            itk_bridge.to_array(moved),
            itk_bridge.affine_of(moved),
        )
    lab = sitk.Resample(
        itk_bridge.from_array(label, affine),
        native,
        native_transform("t1ce"),
        sitk.sitkNearestNeighbor,
        0,
    )
    nifti.save(
        folder / f"{case_id}_seg.nii.gz",
        itk_bridge.to_array(lab, np.uint8),
        itk_bridge.affine_of(lab),
        label=True,
    )
    return folder


@pytest.fixture(scope="session")
def atlas() -> Atlas:
    return load_atlas()


# --------------------------------------------------------------------------- Orthanc PACS


@dataclass
class Orthanc:
    """A running Orthanc: DICOM on ``dicom_port`` (AE ``aet``), REST on ``http_port``; it
    sends C-MOVE results to AE ``calling_ae`` at 127.0.0.1:``move_port``."""

    aet: str
    dicom_port: int
    http_port: int
    calling_ae: str
    move_port: int
    process: subprocess.Popen
    log: Path

    def rest(self, method: str, path: str, body: bytes | None = None) -> object:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}", body, method=method
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")

    def upload(self, files: list[Path]) -> None:
        """Store DICOM files through the REST API (POST /instances)."""
        for f in files:
            self.rest("POST", "/instances", f.read_bytes())

    def pacs_yaml(self, path: Path, **overrides: object) -> Path:
        cfg = {
            "calling_ae": self.calling_ae,
            "peer": {"host": "127.0.0.1", "port": self.dicom_port, "ae_title": self.aet},
            "retrieve": "get",
            "move_port": self.move_port,
            "move_bind": "127.0.0.1",
            "timeout_s": 20,
            **overrides,
        }
        path.write_text(yaml.safe_dump(cfg))
        return path


def start_orthanc(folder: Path, extra: dict | None = None) -> Orthanc:
    """Start Orthanc with a private config in ``folder``; wait until REST and DICOM answer."""
    binary = shutil.which("Orthanc") or next(
        (p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc") if Path(p).exists()), None
    )
    if binary is None:
        pytest.skip("Orthanc is not installed (apt-get install orthanc)")
    folder.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port, move_port = free_port(), free_port(), free_port()
    config = {
        "Name": "fedseg-test",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "StorageCompression": False,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": "ORTHANCTEST",
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": True,
        "DicomModalities": {"fedseg": ["FEDSEGTEST", "127.0.0.1", move_port]},
        "Plugins": [],
        "ConcurrentJobs": 1,
        "SaveJobs": False,
        "DicomScuTimeout": 10,
        **(extra or {}),
    }
    (folder / "orthanc.json").write_text(json.dumps(config, indent=2))
    log = folder / "orthanc.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [binary, str(folder / "orthanc.json")], stdout=out, stderr=subprocess.STDOUT
        )
    server = Orthanc("ORTHANCTEST", dicom_port, http_port, "FEDSEGTEST", move_port, proc, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited at start:\n{log.read_text()[-2000:]}")
        try:
            server.rest("GET", "/system")
            with socket.create_connection(("127.0.0.1", dicom_port), timeout=1):
                return server
        except OSError:
            time.sleep(0.2)
    stop_orthanc(server)
    raise RuntimeError(f"Orthanc did not answer within 30 s:\n{log.read_text()[-2000:]}")


def stop_orthanc(server: Orthanc) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """A fresh Orthanc PACS on free loopback ports, stopped after the test."""
    server = start_orthanc(tmp_path / "orthanc")
    yield server
    stop_orthanc(server)


def make_pki(folder: Path) -> dict[str, Path]:
    """A throw-away CA and two certificates for 127.0.0.1: ``server`` (Orthanc), ``client``
    (us). Uses the openssl command; skips the test where it is missing."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl command not found (needed to make test certificates)")
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=folder)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=fedseg test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
        )
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            f"{name}.pem",
        )
    return {
        n: folder / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")
    }
