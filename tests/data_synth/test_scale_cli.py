"""`fedseg data synth` at scale through the real CLI: --cases/--sizes/--held-out, and
--partition (institutions and subject ids from a FeTS challenge CSV)."""

from __future__ import annotations

from pathlib import Path

import yaml

from fedseg.data.cases import discover_cases
from fedseg.data.synth import read_held_out, read_record
from fedseg.data.synth.sizes import few_validation_sites, site_sizes
from tests.helpers import run_fedseg


def test_synth_sizes_and_held_out(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    result = run_fedseg(
        "data", "synth", out, "--sites", "14", "--cases", "32", "--sizes", "lognormal:1.2",
        "--held-out", "3", "--seed", "5", "--spacing", "8", timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    sizes = site_sizes(14, 32, "lognormal:1.2", 5)
    config = read_record(out)
    assert config.cases_per_site == sizes and sum(sizes) == 32
    assert [len(discover_cases(out / f"site{i}")) for i in range(1, 15)] == sizes
    # more than 12 sites: one summary line, not one per site
    assert f"14 sites, 32 cases in {out}/{{site1..site14}}: {min(sizes)}..{max(sizes)}" in (
        result.stdout
    )
    few = few_validation_sites(config)
    assert few and (
        f"{len(few)} of 14 sites have fewer than 3 validation cases: they train but send no "
        f"validation summary" in result.stdout
    )
    held = read_held_out(out)
    assert len(held) == 3 and held == config.held_out_sites()
    assert yaml.safe_load((out / "synth.yaml").read_text())["held_out"] == held
    assert f"held-out sites (synth.yaml held_out): {', '.join(held)}" in result.stdout
    refused = run_fedseg("data", "synth", tmp_path / "x", "--sites", "71", "--cases", "100",
                         "--sizes", "lognormal:1.2")  # fmt: skip
    assert refused.returncode != 0 and not (tmp_path / "x").exists()
    assert "100 cases cannot give 71 sites 2 each; give at least 142" in refused.stderr


def test_synth_from_partition(tmp_path: Path) -> None:
    csv = tmp_path / "partitioning_1.csv"
    csv.write_text("Partition_ID,Subject_ID\n1,FeTS_001\n1,FeTS_002\n2,FeTS_003\n2,FeTS_004\n")
    out = tmp_path / "ds"
    result = run_fedseg("data", "synth", out, "--partition", csv, "--spacing", "8", timeout=240)
    assert result.returncode == 0, result.stderr
    assert "inst1: 2 cases" in result.stdout and "inst2: 2 cases" in result.stdout
    assert [c.case_id for c in discover_cases(out / "inst2")] == ["FeTS_003", "FeTS_004"]
    assert read_record(out).partition == {
        "inst1": ["FeTS_001", "FeTS_002"],
        "inst2": ["FeTS_003", "FeTS_004"],
    }
    assert read_held_out(out) == []
