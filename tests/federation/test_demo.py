"""`fedseg demo`, the README's main command, end to end (one round to stay short)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedseg.data.nifti import load_array
from fedseg.tracking.store import RunStore
from tests.helpers import run_fedseg


@pytest.mark.slow
def test_demo_makes_sites_federates_reports_and_segments(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = run_fedseg("demo", "--out", out, "--rounds", "1", "--no-live", timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in (out / "data").iterdir() if p.is_dir()) == [
        "site1", "site2", "site3",
    ]  # fmt: skip
    with RunStore(out / "run") as store:
        assert store.last_done_round() == 1
        assert set(store.sites()) == {"site1", "site2", "site3"}
    report = (out / "run" / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 2
    segs = list((out / "segmented").glob("*_seg.nii.gz"))
    assert len(segs) == 1 and set(load_array(segs[0]).ravel().tolist()) <= {0, 1, 2, 4}
    for line in ("run folder:", "best model:", "report:", "segmented case:"):
        assert line in proc.stdout
