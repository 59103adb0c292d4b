"""The site's app check: only the FAB of this installation's fedseg app passes (no process;
the refusal at a real SuperNode is in tests/deploy/test_deployment.py)."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk

from fedseg.federation.engine.app_bundle import SERVER_MODULE, write_app
from fedseg.federation.engine.app_guard import (
    REFUSED,
    Refused,
    check_fab,
    content_digest,
    expected_app,
    fab_files,
    refusal_line,
    site_command,
)
from tests.deploy.deploy_helpers import write_foreign_app


def _fab(app: Path) -> bytes:
    """The FAB that ``flwr run APP`` submits (Flower's own builder)."""
    return build_fab_from_disk(app)


def _rezip(fab: bytes, change: dict[str, bytes | None]) -> bytes:
    """``fab`` deflated (Flower stores), members replaced (bytes), removed (None) or added."""
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(fab)) as src, zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            if info.filename in change:
                continue
            dst.writestr(info, src.read(info), compress_type=zipfile.ZIP_DEFLATED)
        for name, data in change.items():
            if data is not None:
                dst.writestr(name, data)
    return buf.getvalue()


def test_the_coordinators_fedseg_app_passes(tmp_path: Path) -> None:
    """What the coordinator's fedseg submits (write_app in its run folder, any path) is the
    site's expected app, and the digest does not depend on the zip's compression."""
    fab = _fab(write_app(tmp_path / "run"))
    check_fab(fab)
    deflated = _rezip(fab, {})  # same files, compressed: other FAB bytes
    assert hashlib.sha256(deflated).digest() != hashlib.sha256(fab).digest()
    check_fab(deflated)
    assert content_digest(fab_files(fab)) == expected_app().digest


@pytest.mark.parametrize(
    "change",
    [
        {f"{SERVER_MODULE}.py": b"import os\nos.system('id')\n"},  # one shim rewritten
        {"sitecustomize.py": b"print('hi')\n"},  # an extra file
        {f"{SERVER_MODULE}.py": None},  # a missing file
        {"pyproject.toml": b'[project]\nname = "fedseg-federation"\nversion = "0.0.1"\n'},
    ],
    ids=["changed", "extra", "missing", "other-pyproject"],
)
def test_anything_else_is_refused(tmp_path: Path, change: dict[str, bytes | None]) -> None:
    fab = _rezip(_fab(write_app(tmp_path / "run")), change)
    with pytest.raises(Refused):
        check_fab(fab)


def test_a_foreign_app_and_garbage_are_refused(tmp_path: Path) -> None:
    with pytest.raises(Refused, match="other files"):
        check_fab(_fab(write_foreign_app(tmp_path / "steal")))
    with pytest.raises(Refused, match="not a readable FAB"):
        check_fab(b"not a zip")


def test_an_oversized_member_is_refused_unread(tmp_path: Path) -> None:
    big = {f"{SERVER_MODULE}.py": b"#" * (2 << 20)}
    with pytest.raises(Refused, match="bytes"):
        check_fab(_rezip(_fab(write_app(tmp_path / "run")), big))


def test_the_refusal_is_one_line_naming_the_app_and_its_hashes(tmp_path: Path) -> None:
    fab = _fab(write_foreign_app(tmp_path / "steal"))
    line = refusal_line("alpha", 7, fab, "other files")
    assert "\n" not in line and REFUSED in line and "run 7" in line
    assert "evil/steal 1.0.0" in line and hashlib.sha256(fab).hexdigest() in line
    assert content_digest(fab_files(fab)) in line and expected_app().digest in line
    assert refusal_line("alpha", 7, b"junk", "x").count("unreadable") == 2


def test_the_supernode_runs_in_process_isolation_under_the_guard() -> None:
    cmd = site_command(["flower-supernode", "--superlink", "h:1"], 9094)
    assert cmd[cmd.index("--runtime-api-address") + 1] == "127.0.0.1:9094"
    tail = cmd[cmd.index("--") + 1 :]
    assert tail[:3] == ["flower-supernode", "--superlink", "h:1"]
    assert tail[tail.index("--isolation") + 1] == "process"
