"""Missing modalities as a first-class fact: a site's declared absence (``fedseg_site.yaml``)
is accepted everywhere (discovery, check, split, loading), an accidental gap is still an
error, and generator-made ``.syn`` images count as the modality's image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedseg.data.cases import (
    FILE_KEYS,
    MODALITIES,
    SYNTHETIC_MARK,
    as_absent,
    discover_cases,
    label_only_cases,
    load_case,
    require_all_modalities,
    synthetic_generator,
    synthetic_image_path,
    write_synthetic_image,
)
from fedseg.data.checks import check_case, check_dataset
from fedseg.data.labels import Layout
from fedseg.data.site_config import SITE_CONFIG_FILE
from fedseg.data.splits import make_split
from fedseg.errors import FedsegError
from fedseg.model.evaluate import select_cases
from fedseg.model.segmenter import resolve_case

GEN = "ab12cd34ef56ab78" + "0" * 48  # a generator's weights hash (64 hex digits)


def _site(root: Path, factory, n: int = 3, absent: tuple[str, ...] = ("flair",), **kw) -> Path:
    """``n`` labelled cases without the ``absent`` files; the declaration unless ``declare``
    is False; ``layout`` BraTS 2021 unless given."""
    layout = kw.get("layout", Layout.BRATS2021)
    for i in range(n):
        image, label = factory.volumes(seed=i)
        factory.write(root, layout, f"case{i:03d}", image, label)
        for m in absent:
            (root / f"case{i:03d}" / f"case{i:03d}{FILE_KEYS[layout][m]}.nii.gz").unlink()
    if kw.get("declare", True):
        (root / SITE_CONFIG_FILE).write_text(f"absent_modalities: [{', '.join(absent)}]\n")
    return root


def _complete(case, modality: str, factory, level: float = 777.0) -> Path:
    """Write a marked synthetic image of ``modality`` for ``case``, as `fedseg complete` does."""
    image, _ = factory.volumes(seed=9)
    vol = np.where(image[0] > 0, level, 0.0).astype(np.float32)
    return write_synthetic_image(
        synthetic_image_path(case, modality), vol, factory.affine, modality, GEN
    )


def test_declared_absence_is_absent_not_missing(tmp_path: Path, factory) -> None:
    cases = discover_cases(_site(tmp_path, factory))
    assert [c.absent for c in cases] == [("flair",)] * 3
    assert all(c.complete and not c.missing and c.present == ("t1", "t1ce", "t2") for c in cases)
    assert cases[0].lacking == ("flair",)
    # one case folder inside the site takes the site's declaration
    (single,) = discover_cases(tmp_path / "case001")
    assert single.absent == ("flair",) and not single.missing


def test_check_accepts_declared_absence_with_one_site_note(tmp_path: Path, factory) -> None:
    root = _site(tmp_path, factory)
    report = check_dataset(root)
    assert report.passed and report.ok == 3
    assert all(not r.problems for r in report.cases)  # nothing per case
    assert report.notes == ("flair declared absent for this site (fedseg_site.yaml)",)


def test_accidental_gap_is_still_missing_image(tmp_path: Path, factory) -> None:
    root = _site(tmp_path, factory)
    (root / "case001" / "case001_t2.nii.gz").unlink()
    cases = discover_cases(root)
    assert cases[1].missing == ("t2",) and cases[1].absent == ("flair",)
    assert [(p.severity, p.code) for p in check_case(cases[1])] == [("error", "missing-image")]
    with pytest.raises(FedsegError, match="missing modalities t2"):
        load_case(cases[1])
    # without a declaration every gap is missing, as before
    undeclared = _site(tmp_path / "plain", factory, n=1, declare=False)
    (case,) = discover_cases(undeclared)
    assert case.missing == ("flair",) and not case.absent and not case.complete
    assert [p.code for p in check_case(case)] == ["missing-image"]


def test_present_but_declared_absent_is_warned_and_not_read(tmp_path: Path, factory) -> None:
    root = _site(tmp_path, factory, n=2, absent=())
    (root / SITE_CONFIG_FILE).write_text("absent_modalities: [t1ce]\n")
    cases = discover_cases(root)
    assert all(c.ignored == ("t1ce",) and c.absent == ("t1ce",) for c in cases)
    assert "t1ce" not in cases[0].images
    problems = check_case(cases[0])
    assert [(p.severity, p.code) for p in problems] == [("warning", "absent-but-present")]
    assert "declared absent" in problems[0].message
    report = check_dataset(root)
    assert report.passed and report.with_warnings == 2
    assert report.notes == ("t1ce declared absent for this site (fedseg_site.yaml)",)
    vol = load_case(cases[0])
    assert not vol.image[MODALITIES.index("t1ce")].any()


def test_msd_declared_absence_ignores_the_channel(tmp_path: Path, factory) -> None:
    image, label = factory.volumes()
    factory.write(tmp_path, Layout.MSD, "BRATS_001", image, label)
    (tmp_path / SITE_CONFIG_FILE).write_text("absent_modalities: [t2]\n")
    (case,) = discover_cases(tmp_path)
    assert case.absent == ("t2",) and case.ignored == ("t2",) and case.complete
    vol = load_case(case)
    assert not vol.image[MODALITIES.index("t2")].any() and vol.present == ("t1", "t1ce", "flair")


def test_load_case_gives_a_zero_channel(tmp_path: Path, factory) -> None:
    cases = discover_cases(_site(tmp_path, factory, n=1, absent=("t1", "flair")))
    image, label = factory.volumes(seed=0)
    vol = load_case(cases[0])
    assert vol.image.shape == (4, *factory.shape) and vol.image.dtype == np.float32
    assert vol.present == ("t1ce", "t2")
    for i, m in enumerate(MODALITIES):
        if m in vol.present:
            np.testing.assert_array_equal(vol.image[i], image[i])
        else:
            assert not vol.image[i].any()
    np.testing.assert_array_equal(vol.label, label)
    np.testing.assert_array_equal(vol.affine, factory.affine)  # from the first present one


@pytest.mark.parametrize("layout", [Layout.BRATS2021, Layout.BRATS2023])
def test_syn_image_discovered_marked_and_checked(tmp_path: Path, factory, layout) -> None:
    root = _site(tmp_path, factory, n=2, layout=layout)
    case = discover_cases(root)[0]
    path = _complete(case, "flair", factory)
    key = FILE_KEYS[layout]["flair"]
    assert path == case.folder / f"case000{key}{SYNTHETIC_MARK}.nii.gz"
    assert synthetic_generator(path) == ("flair", GEN[:16])
    done, other = discover_cases(root)
    assert done.synthetic == ("flair",) and not done.absent and done.images["flair"].path == path
    assert done.present == MODALITIES and done.real == ("t1", "t1ce", "t2")
    assert other.absent == ("flair",) and not other.synthetic
    vol = load_case(done)
    assert vol.present == MODALITIES and vol.image[3].max() == 777.0
    problems = check_case(done)
    assert [(p.severity, p.code) for p in problems] == [("info", "synthetic")]
    assert problems[0].message == f"flair synthetic, generator {GEN[:16]}"
    report = check_dataset(root)
    assert report.passed and report.ok == 2  # an info is not a warning
    assert report.notes == (
        f"flair declared absent for this site (fedseg_site.yaml); 1 of 2 cases completed "
        f"by generator {GEN[:16]}",
    )


def test_completed_case_without_declaration_passes_as_full(tmp_path: Path, factory) -> None:
    root = _site(tmp_path, factory, n=1, declare=False)
    (case,) = discover_cases(root)
    assert case.missing == ("flair",)
    _complete(case, "flair", factory)
    (case,) = discover_cases(root)
    assert case.complete and case.present == MODALITIES and case.synthetic == ("flair",)
    assert check_dataset(root).passed
    require_all_modalities(case)  # a completed case can be segmented


def test_real_file_wins_over_syn(tmp_path: Path, factory) -> None:
    root = _site(tmp_path, factory, n=1, absent=(), declare=False)
    (case,) = discover_cases(root)
    real = case.images["flair"].path
    _complete(case, "flair", factory)
    (again,) = discover_cases(root)
    assert again.images["flair"].path == real and not again.synthetic
    assert load_case(again).image[3].max() < 777.0


def test_syn_mark_needs_the_syn_name_and_unmarked_is_listed(tmp_path: Path, factory) -> None:
    root = _site(tmp_path, factory, n=1)
    (case,) = discover_cases(root)
    with pytest.raises(FedsegError, match=r"ends in \.syn\.nii\.gz"):
        write_synthetic_image(case.folder / "x_flair.nii.gz", np.zeros((2, 2, 2)), np.eye(4),
                              "flair", GEN)  # fmt: skip
    image, _ = factory.volumes(seed=3)
    factory.save_raw(synthetic_image_path(case, "flair"), image[3])  # no header mark
    (case,) = discover_cases(root)
    assert synthetic_generator(case.images["flair"].path) is None
    (problem,) = check_case(case)
    assert problem.message == "flair synthetic, generator unknown (no fedseg mark in the header)"


def test_synthetic_path_refuses_msd_and_unknown_modality(tmp_path: Path, factory) -> None:
    image, label = factory.volumes()
    factory.write(tmp_path, Layout.MSD, "BRATS_001", image, label)
    (case,) = discover_cases(tmp_path)
    with pytest.raises(FedsegError, match="convert it to BraTS folders"):
        synthetic_image_path(case, "flair")
    with pytest.raises(FedsegError, match="unknown modality 'dwi'"):
        synthetic_image_path(case, "dwi")


def test_split_takes_sites_with_declared_absence(tmp_path: Path, factory) -> None:
    root = _site(tmp_path, factory, n=5)
    (root / "case004" / "case004_t2.nii.gz").unlink()  # accidental: still left out
    split, changes = make_split(root)
    assert sorted(c.case_id for c in split.train + split.val) == [f"case00{i}" for i in range(4)]
    assert changes.skipped == ("case004",)
    # nothing usable at all: the one-line error says what a case needs
    bare = _site(tmp_path / "bare", factory, n=2, declare=False)
    with pytest.raises(FedsegError, match="every modality the site does not declare absent"):
        make_split(bare)


def test_segmenting_a_case_that_lacks_a_modality_is_refused(tmp_path: Path, factory) -> None:
    root = _site(tmp_path, factory, n=2)
    with pytest.raises(FedsegError) as info:
        resolve_case([root / "case000"])
    assert str(info.value) == (
        "case case000 lacks flair (declared absent in its site's fedseg_site.yaml); give "
        "--generator or complete it with `fedseg complete`"
    )
    case = resolve_case([root / "case000"], allow_lacking=True)  # the caller completes it
    assert case.absent == ("flair",)
    # a missing (undeclared) modality: refused as before; ``as_absent`` lets a completer load
    plain = _site(tmp_path / "plain", factory, n=1, declare=False)
    with pytest.raises(FedsegError, match="missing modalities flair"):
        resolve_case([plain / "case000"])
    loose = as_absent(resolve_case([plain / "case000"], allow_lacking=True))
    assert loose.absent == ("flair",) and not loose.missing
    assert load_case(loose).present == ("t1", "t1ce", "t2")


def test_evaluating_a_site_with_declared_absence_is_refused(tmp_path: Path, factory) -> None:
    root = _site(tmp_path, factory, n=3)
    with pytest.raises(FedsegError, match=r"case case000 lacks flair .* `fedseg complete` first"):
        select_cases(root, "all")
    assert len(select_cases(root, "all", allow_absent=True)) == 3
    for case in discover_cases(root):
        _complete(case, "flair", factory)
    assert len(select_cases(root, "all")) == 3  # completed: a full site


def test_label_only_folder(tmp_path: Path, factory) -> None:
    image, label = factory.volumes()
    for cid in ("p2", "p1"):
        factory.save_raw(tmp_path / cid / f"{cid}_seg.nii.gz", label)
        factory.save_raw(tmp_path / cid / f"{cid}_brain.nii.gz", (image[0] > 0).astype(np.uint8))
    factory.save_raw(tmp_path / "p3" / "p3_seg.nii.gz", label)  # no brain mask: left out
    found = label_only_cases(tmp_path)
    assert [(c.case_id, c.label.name, c.brain.name) for c in found] == [
        ("p1", "p1_seg.nii.gz", "p1_brain.nii.gz"),
        ("p2", "p2_seg.nii.gz", "p2_brain.nii.gz"),
    ]
    with pytest.raises(FedsegError, match="label maps and brain masks without images"):
        discover_cases(tmp_path)
    assert label_only_cases(tmp_path / "p1")[0].case_id == "p1"  # one case folder


def test_all_synthetic_case_is_a_full_case(tmp_path: Path, factory) -> None:
    """A `fedseg sample` case: every image generator-made, the label map copied."""
    image, label = factory.volumes()
    factory.write(tmp_path, Layout.BRATS2021, "s000", image, label)
    keys = FILE_KEYS[Layout.BRATS2021]
    (case,) = discover_cases(tmp_path)
    for i, m in enumerate(MODALITIES):
        (tmp_path / "s000" / f"s000{keys[m]}.nii.gz").unlink()
        write_synthetic_image(synthetic_image_path(case, m), image[i], factory.affine, m, GEN)
    (case,) = discover_cases(tmp_path)
    assert case.synthetic == MODALITIES and case.real == () and case.complete
    np.testing.assert_array_equal(load_case(case).image, image)
    report = check_dataset(tmp_path)
    assert report.passed and report.ok == 1 and not report.notes
    assert [p.code for p in report.cases[0].problems] == ["synthetic"] * 4
