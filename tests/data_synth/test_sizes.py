"""Site sizes at the study's scale: the size draws, held-out sites, the synth options' rules,
and 71 skewed sites generated for real (label-only, 8 mm: seconds)."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from fedseg.data.cases import label_only_cases
from fedseg.data.synth import SynthConfig, generate_dataset, read_held_out, read_record
from fedseg.data.synth.sizes import (
    few_validation_sites,
    held_out_sites,
    read_sizes,
    site_sizes,
    synth_counts,
)
from fedseg.errors import FedsegError


def test_71_skewed_sites_generated(tmp_path: Path) -> None:
    sizes = site_sizes(71, 300, "lognormal:1.2", 0)
    assert sum(sizes) == 300 and len(sizes) == 71 and min(sizes) >= 2
    assert max(sizes) > 5 * statistics.median(sizes)
    assert site_sizes(71, 300, "lognormal:1.2", 0) == sizes  # deterministic for a seed
    assert site_sizes(71, 300, "lognormal:1.2", 1) != sizes
    config = SynthConfig(
        sites=71, cases_per_site=sizes, spacing=8, labels_only=True, held_out=6, seed=0
    )
    result = generate_dataset(tmp_path, config)
    assert list(result) == [f"site{i}" for i in range(1, 72)]
    assert [len(result[s]) for s in result] == sizes
    assert [len(label_only_cases(tmp_path / s)) for s in result] == sizes
    assert read_record(tmp_path).cases_per_site == sizes
    held = read_held_out(tmp_path)
    assert held == config.held_out_sites() == held_out_sites(config.site_names(), 6, 0)
    assert len(held) == 6 and set(held) <= set(result)


@pytest.mark.parametrize(
    ("dist", "n", "total"),
    [("equal", 5, 12), ("lognormal", 71, 600), ("lognormal:0", 7, 30), ("zipf:1.1", 33, 400),
     ("zipf", 23, 46), ("LogNormal:2.5", 10, 1000)],
)  # fmt: skip
def test_site_sizes_sum_minimum_seed(dist: str, n: int, total: int) -> None:
    sizes = site_sizes(n, total, dist, seed=3, min_cases=2)
    assert len(sizes) == n and sum(sizes) == total and min(sizes) >= 2
    assert site_sizes(n, total, dist, seed=3, min_cases=2) == sizes


def test_site_sizes_shapes() -> None:
    assert site_sizes(5, 12, "equal") == [3, 3, 2, 2, 2]  # remainder to the first sites
    assert site_sizes(4, 8, "lognormal:0") == [2, 2, 2, 2]
    study = site_sizes(71, 600, "lognormal:1.2", 0)  # a few large, many with a handful
    assert statistics.median(study) <= 6 and sum(s > 40 for s in study) >= 2
    zipf = site_sizes(33, 400, "zipf:1.1", 0)
    assert max(zipf) > 10 * statistics.median(zipf)
    assert (
        zipf.index(max(zipf)) != 0
        or site_sizes(33, 400, "zipf:1.1", 1).index(max(site_sizes(33, 400, "zipf:1.1", 1))) != 0
    )  # ranks are shuffled over the sites, not always site1 first


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((5, 50, "pareto:2"), "unknown size distribution 'pareto:2'"),
        ((5, 50, "equal:3"), "unknown size distribution 'equal:3'"),
        ((5, 50, "lognormal:x"), "give a number 0 or more after lognormal:"),
        ((5, 50, "zipf:0"), "give a number above 0 after zipf:"),
        ((5, 9, "lognormal:1.2"), "9 cases cannot give 5 sites 2 each; give at least 10"),
        ((0, 9, "equal"), "0 sites: give at least one site"),
    ],
)
def test_site_sizes_refusals(args: tuple, message: str) -> None:
    with pytest.raises(FedsegError, match=message) as err:
        site_sizes(*args)
    assert "\n" not in str(err.value)


def test_held_out_draw() -> None:
    names = [f"site{i}" for i in range(1, 72)]
    held = held_out_sites(names, 6, 0)
    assert len(held) == 6 and held == sorted(held, key=names.index)
    assert held_out_sites(names, 6, 0) == held and held_out_sites(names, 6, 1) != held
    assert held_out_sites(names, 0, 0) == []
    with pytest.raises(FedsegError, match=r"hold out 0\.\.70 of the 71 sites"):
        held_out_sites(names, 71, 0)
    with pytest.raises(ValueError, match=r"held_out 3: hold out 0\.\.2"):
        SynthConfig(sites=3, held_out=3)


def test_read_sizes(tmp_path: Path) -> None:
    path = tmp_path / "sizes.txt"
    path.write_text("# the study's counts\n12\n\n3  # small\n40\n")
    assert read_sizes(path) == [12, 3, 40]
    path.write_text("12\n0\n")
    with pytest.raises(FedsegError, match=r"sizes.txt:2: '0' is not a case count"):
        read_sizes(path)
    with pytest.raises(FedsegError, match="cannot read the sizes file"):
        read_sizes(tmp_path / "none.txt")


def test_synth_counts_rules(tmp_path: Path) -> None:
    assert synth_counts() == synth_counts(sites=3, cases_per_site=8)
    assert synth_counts(sites=4).cases_per_site == 8
    assert synth_counts(sites=4, sizes="equal").cases_per_site == 8  # --sizes equal: today's
    assert synth_counts(sites=4, cases=10).cases_per_site == [3, 3, 2, 2]
    drawn = synth_counts(sites=71, cases=600, sizes="lognormal:1.2", seed=2)
    assert drawn.cases_per_site == site_sizes(71, 600, "lognormal:1.2", 2)
    (tmp_path / "sizes.txt").write_text("5\n7\n")
    from_file = synth_counts(sizes=str(tmp_path / "sizes.txt"))
    assert (from_file.sites, from_file.cases_per_site) == (2, [5, 7])
    csv = tmp_path / "p.csv"
    csv.write_text("Partition_ID,Subject_ID\n2,b\n1,a\n2,c\n")
    part = synth_counts(partition=csv)
    assert part.sites == 2 and part.cases_per_site == [1, 2]
    assert part.partition == {"inst1": ["a"], "inst2": ["b", "c"]}
    refusals = [
        ({"sizes": "lognormal:1.2"}, "give it with --cases TOTAL"),
        ({"cases": 9, "cases_per_site": 3}, "--cases with --cases-per-site"),
        ({"sizes": "zipf", "cases_per_site": 3}, "--sizes with --cases-per-site"),
        ({"partition": csv, "cases": 9}, "--cases with --partition"),
        ({"partition": csv, "sites": 3}, "has 2 institutions; drop --sites"),
        ({"sizes": str(tmp_path / "sizes.txt"), "cases": 13}, "sums to 12; drop --cases"),
    ]
    for kwargs, message in refusals:
        with pytest.raises(FedsegError, match=message):
            synth_counts(**kwargs)


def test_few_validation_sites() -> None:
    # first split: round(n * 0.2) validation cases, at least 1 -> 13 cases give 3
    config = SynthConfig(sites=4, cases_per_site=[2, 12, 13, 40], val_cases={"site1": 1})
    assert few_validation_sites(config) == ["site1", "site2"]
    config = SynthConfig(sites=2, cases_per_site=[4, 13], val_cases={"site1": 3})
    assert few_validation_sites(config) == []


def test_partition_config_names_sites_and_cases(tmp_path: Path) -> None:
    table = {"inst1": ["FeTS_001", "FeTS_002"], "inst10": ["FeTS_007"]}
    config = SynthConfig(
        sites=2, cases_per_site=[2, 1], partition=table, spacing=8, labels_only=True
    )
    assert config.site_names() == ["inst1", "inst10"]
    assert [p.name for p in config.site_profiles()] == ["inst1", "inst10"]
    result = generate_dataset(tmp_path / "a", config)
    assert [f.name for f in result["inst1"]] == ["FeTS_001", "FeTS_002"]
    assert (tmp_path / "a/inst10/FeTS_007/FeTS_007_seg.nii.gz").is_file()
    again = generate_dataset(tmp_path / "b", read_record(tmp_path / "a"))
    assert [f.name for f in again["inst10"]] == ["FeTS_007"]
    with pytest.raises(ValueError, match=r"partition has 2 sites of \[2, 1\] cases"):
        SynthConfig(sites=2, cases_per_site=[1, 2], partition=table)
    with pytest.raises(ValueError, match=r"the sites are inst1\.\.inst10"):
        SynthConfig(sites=2, cases_per_site=[2, 1], partition=table, missing={"site1": ["t1"]})


def test_read_held_out_checks_the_record(tmp_path: Path) -> None:
    import yaml

    config = SynthConfig(sites=3, cases_per_site=1, spacing=8, labels_only=True)
    generate_dataset(tmp_path, config)
    assert read_held_out(tmp_path) == []  # none drawn
    path = tmp_path / "synth.yaml"
    doc = yaml.safe_load(path.read_text())
    del doc["held_out"]
    path.write_text(yaml.safe_dump(doc))
    assert read_held_out(tmp_path) == []  # a record written before --held-out existed
    doc["held_out"] = ["site9"]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(FedsegError, match="held_out must list site names of the data set"):
        read_held_out(tmp_path)
