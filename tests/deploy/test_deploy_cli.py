"""`fedseg pki ...` end to end through the real command (a subprocess), as users type it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fedseg.federation.security import pki

SRC = Path(__file__).resolve().parents[2] / "src"


def fedseg(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedseg", *args],
        cwd=cwd,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_coordinator_and_site_enroll_through_the_cli(tmp_path: Path) -> None:
    assert fedseg("pki", "init", "creds", cwd=tmp_path).returncode == 0
    done = fedseg("pki", "issue-server", "agg.example.org", "--ip", "10.0.0.5",
                  "--creds", "creds", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = fedseg("pki", "request", "hospital-a", "--out", "site", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = fedseg("pki", "sign", "site/hospital-a.csr", "--creds", "creds", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (
        fedseg("pki", "issue-site", "hospital-b", "--creds", "creds", cwd=tmp_path).returncode == 0
    )
    listed = fedseg("pki", "list", "--creds", "creds", cwd=tmp_path)
    assert [ln.split()[0] for ln in listed.stdout.splitlines()] == ["hospital-a", "hospital-b"]
    enrolled = {s.name for s in pki.enrolled_sites(tmp_path / "creds")}
    assert enrolled == {"hospital-a", "hospital-b"}


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    cases = [
        (("pki", "issue-server", "agg", "--creds", "nowhere"), "run `fedseg pki init"),
        (("pki", "request", "Bad Name", "--out", "x"), "invalid site name"),
        (("pki", "sign", "missing.csr", "--creds", "creds"), "not found"),
        (("site", "start", "--server", "https://agg:9092", "--data", ".", "--creds", "creds"),
         "must be HOST:PORT"),
    ]  # fmt: skip
    fedseg("pki", "init", "creds", cwd=tmp_path)
    fedseg("pki", "issue-site", "s1", "--creds", "creds", cwd=tmp_path)
    (tmp_path / "creds/sites/s1/site.key").chmod(0o600)
    for args, message in cases:
        args = tuple("creds/sites/s1" if a == "creds" and args[0] == "site" else a for a in args)
        done = fedseg(*args, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr
