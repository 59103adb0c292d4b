"""`fedseg pki ...` end to end through the real command (a subprocess), as users type it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from fedseg.federation.security import pki
from tests.helpers import run_fedseg


def _pki_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``fedseg ARGS`` in ``cwd`` with nothing inherited but a minimal PATH."""
    return run_fedseg(*args, cwd=cwd, env={"PATH": "/usr/bin:/bin"}, inherit_env=False)


def test_coordinator_and_site_enroll_through_the_cli(tmp_path: Path) -> None:
    assert _pki_cli("pki", "init", "creds", cwd=tmp_path).returncode == 0
    done = _pki_cli("pki", "issue-server", "agg.example.org", "--ip", "10.0.0.5",
                  "--creds", "creds", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = _pki_cli("pki", "request", "hospital-a", "--out", "site", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = _pki_cli("pki", "sign", "site/hospital-a.csr", "--creds", "creds", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = _pki_cli("pki", "issue-site", "hospital-b", "--creds", "creds", cwd=tmp_path)
    assert done.returncode == 0
    listed = _pki_cli("pki", "list", "--creds", "creds", cwd=tmp_path)
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
        # a GPU this machine lacks: refused before the site connects, naming the fix
        (("site", "start", "--server", "agg:9092", "--data", ".", "--creds", "creds",
          "--device", "cuda:3", "--precision", "bf16"), "use --device cpu or --device auto"),
    ]  # fmt: skip
    _pki_cli("pki", "init", "creds", cwd=tmp_path)
    _pki_cli("pki", "issue-site", "s1", "--creds", "creds", cwd=tmp_path)
    (tmp_path / "creds/sites/s1/site.key").chmod(0o600)
    for args, message in cases:
        args = tuple("creds/sites/s1" if a == "creds" and args[0] == "site" else a for a in args)
        done = _pki_cli(*args, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr


def test_a_bad_precision_or_device_is_a_usage_error(tmp_path: Path) -> None:
    for verb, value in (("site", "--precision=fp8"), ("site", "--device=gpu"),
                        ("simulate", "--precision=fp8"), ("train", "--precision=fp8")):  # fmt: skip
        args = {
            "site": ("site", "start", "--server", "agg:9092", "--data", ".", "--creds", "c"),
            "simulate": ("simulate", "plan.yaml", "--out", "run"),
            "train": ("train", "--data", ".", "--out", "run"),
        }[verb]
        done = _pki_cli(*args, value, cwd=tmp_path)
        assert done.returncode == 2, (verb, value, done.stderr)
        option = value.split("=")[0]
        assert f"Invalid value for {option}" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing made
