"""The FeTS challenge partition file: the reader (round trip, every refusal) and `fedseg data
partition` laying out real cases as symlinks that `fedseg data check` accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedseg.data.partition import link_partition, read_partition
from fedseg.errors import FedsegError
from tests.helpers import run_fedseg


def _csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_read_partition_round_trip(tmp_path: Path) -> None:
    table = {"inst2": ["FeTS_003"], "inst10": ["FeTS_001", "FeTS_002"], "inst1": ["FeTS_004"]}
    lines = [f"{site.removeprefix('inst')},{s}" for site, subs in table.items() for s in subs]
    path = _csv(tmp_path / "p.csv", "Partition_ID,Subject_ID\n" + "\n".join(lines) + "\n\n")
    got = read_partition(path)
    assert got == table and list(got) == ["inst1", "inst2", "inst10"]  # ordered by ID
    # the prose's InstitutionName, other column order, extra columns, a BOM, spaces
    path = _csv(
        tmp_path / "q.csv",
        "\ufeffSubject_ID, InstitutionName ,Grade\nFeTS_1,A, HGG\nFeTS_2 , B,LGG\nFeTS_3,A,x\n",
    )
    assert read_partition(path) == {"instA": ["FeTS_1", "FeTS_3"], "instB": ["FeTS_2"]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Site,Case\n1,a\n", "unknown header Site,Case; a partition file has the columns"),
        ("", r"unknown header \(empty file\)"),
        ("Partition_ID,Subject_ID\n1,a\n2,b\n1,a\n", r"p.csv:4: subject a is listed twice "
         r"\(first on line 2\)"),
        ("Partition_ID,Subject_ID\n", r"no subject listed \(empty partition\)"),
        ("Partition_ID,Subject_ID\n1,\n", "p.csv:2: empty Subject_ID"),
        ("Partition_ID,Subject_ID\n,a\n", "p.csv:2: empty Partition_ID"),
        ("Partition_ID,Subject_ID\n1\n", "p.csv:2: 1 column"),
        ("Partition_ID,Subject_ID\n1,../etc\n", r"subject id '../etc' is not a plain name"),
    ],
)  # fmt: skip
def test_read_partition_refusals(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(FedsegError, match=message) as err:
        read_partition(_csv(tmp_path / "p.csv", text))
    assert "\n" not in str(err.value)


def test_read_partition_unreadable(tmp_path: Path) -> None:
    for path in (tmp_path / "none.csv", tmp_path):
        with pytest.raises(FedsegError, match="cannot read the partition file"):
            read_partition(path)
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(FedsegError, match="cannot read the partition file"):
        read_partition(tmp_path / "bin.csv")


def test_data_partition_links_real_cases(tmp_path: Path, tiny_sites: dict[str, Path]) -> None:
    cases = tiny_sites["site1"]  # real NIfTI case folders site1_000..site1_003
    csv = _csv(
        tmp_path / "partitioning.csv",
        "Partition_ID,Subject_ID\n4,site1_000\n4,site1_002\n4,site1_003\n7,site1_001\n",
    )
    out = tmp_path / "sites"
    result = run_fedseg("data", "partition", csv, "--cases", cases, "--out", out, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "2 institution folders, 4 cases linked" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["inst4", "inst7"]
    for site, subjects in (("inst4", ["site1_000", "site1_002", "site1_003"]),
                           ("inst7", ["site1_001"])):  # fmt: skip
        links = sorted((out / site).iterdir())
        assert [p.name for p in links] == subjects
        assert all(p.is_symlink() and p.resolve() == (cases / p.name).resolve() for p in links)
    check = run_fedseg("data", "check", out / "inst4", timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "3 cases: 3 ok" in check.stdout
    # a non-empty out folder is refused
    again = run_fedseg("data", "partition", csv, "--cases", cases, "--out", out, timeout=120)
    assert again.returncode != 0 and "is not an empty folder" in again.stderr


def test_link_partition_missing_subject(tmp_path: Path) -> None:
    cases = tmp_path / "cases"
    for s in ("a", "c"):
        (cases / s).mkdir(parents=True)
    csv = _csv(tmp_path / "p.csv", "Partition_ID,Subject_ID\n1,a\n1,b\n2,c\n2,d\n")
    with pytest.raises(FedsegError) as err:
        link_partition(csv, cases, tmp_path / "out")
    assert str(err.value) == (
        f"subject b and 1 more of {csv} has no case folder in {cases}; add {cases / 'b'} "
        f"or remove its line from the CSV"
    )
    assert not (tmp_path / "out").exists()  # nothing written
    with pytest.raises(FedsegError, match="not a folder"):
        link_partition(csv, tmp_path / "nothing", tmp_path / "out")
