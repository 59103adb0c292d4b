"""The SRI24 atlas cache on a fresh machine: several processes asking at once (two test
workers, several sites on one machine) all get the complete folder, fetched once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fedseg.data.atlas import ATLAS_FILES
from tests.helpers import fedseg_env

ASK = "from fedseg.data.atlas import atlas_dir; print(atlas_dir())"


@pytest.mark.slow
def test_processes_asking_at_once_on_an_empty_cache_all_get_the_atlas(tmp_path: Path) -> None:
    env = {**fedseg_env(), "FEDSEG_CACHE": str(tmp_path / "cache")}
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    procs = [subprocess.Popen([sys.executable, "-c", ASK], env=env, **pipes) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outs]
    target = tmp_path / "cache" / "sri24"
    assert {Path(out.strip()) for out, _ in outs} == {target}
    assert all((target / f).stat().st_size > 0 for f in ATLAS_FILES)
    assert not (tmp_path / "cache" / "sri24.partial").exists()
