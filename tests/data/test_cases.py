"""Discovery and loading of cases in each layout: channel order and converted labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedseg.data.cases import (
    MODALITIES,
    case_from_files,
    detect_layout,
    discover_cases,
    load_case,
    write_case,
)
from fedseg.data.labels import Layout
from fedseg.errors import FedsegError


def _write_site(
    root: Path, layout: Layout, factory, n: int = 2
) -> list[tuple[np.ndarray, np.ndarray]]:
    vols = []
    for i in range(n):
        image, label = factory.volumes(seed=i)
        factory.write(root, layout, f"case{i:03d}", image, label)
        vols.append((image, label))
    return vols


def test_every_layout_reads_in_modality_order(tmp_path: Path, factory, layout: Layout) -> None:
    vols = _write_site(tmp_path, layout, factory)
    assert detect_layout(tmp_path) is layout
    cases = discover_cases(tmp_path)
    assert [c.case_id for c in cases] == ["case000", "case001"]
    for case, (image, label) in zip(cases, vols, strict=True):
        assert case.layout is layout and case.complete and case.label is not None
        loaded = load_case(case)
        assert loaded.image.shape == (4, *factory.shape) and loaded.image.dtype == np.float32
        # channel i holds modality MODALITIES[i], whatever order the layout stores them in
        for i, m in enumerate(MODALITIES):
            inside = loaded.image[i][loaded.image[i] != 0]
            assert abs(inside.mean() - factory.level[m]) < 10, m
        assert np.array_equal(loaded.image, image)
        assert loaded.label is not None and loaded.label.dtype == np.uint8
        assert np.array_equal(loaded.label, label)  # converted back to BraTS 2021 values
        assert sorted(np.unique(loaded.label).tolist()) == [0, 1, 2, 4]
        assert np.allclose(loaded.spacing, 1.5) and np.allclose(loaded.affine, factory.affine)


def test_labels_on_disk_are_the_layouts_own(tmp_path: Path, factory) -> None:
    """The fixtures must really write ET=3 for BraTS 2023 and MSD, and 1 = ED for MSD."""
    import nibabel as nib

    image, label = factory.volumes()
    factory.write(tmp_path / "b23", Layout.BRATS2023, "c", image, label)
    factory.write(tmp_path / "msd", Layout.MSD, "c", image, label)
    b23 = np.asanyarray(nib.load(str(tmp_path / "b23" / "c" / "c-seg.nii.gz")).dataobj)
    msd = np.asanyarray(nib.load(str(tmp_path / "msd" / "labelsTr" / "c.nii.gz")).dataobj)
    assert sorted(np.unique(b23).tolist()) == [0, 1, 2, 3]
    assert np.array_equal(b23 == 3, label == 4)
    assert np.array_equal(msd == 1, label == 2) and np.array_equal(msd == 2, label == 1)


def test_single_case_folder(tmp_path: Path, factory) -> None:
    _write_site(tmp_path, Layout.BRATS2021, factory, n=1)
    cases = discover_cases(tmp_path / "case000")
    assert len(cases) == 1 and cases[0].case_id == "case000"


def test_missing_modality_and_label(tmp_path: Path, factory) -> None:
    _write_site(tmp_path, Layout.BRATS2023, factory, n=1)
    (tmp_path / "case000" / "case000-t2f.nii.gz").unlink()
    (tmp_path / "case000" / "case000-seg.nii.gz").unlink()
    (case,) = discover_cases(tmp_path)
    assert case.missing == ("flair",) and case.label is None and not case.complete
    with pytest.raises(FedsegError, match="missing modalities flair"):
        load_case(case)


def test_msd_test_images_have_no_label(tmp_path: Path, factory) -> None:
    _write_site(tmp_path, Layout.MSD, factory, n=1)
    (tmp_path / "imagesTs").mkdir()
    src = tmp_path / "imagesTr" / "case000.nii.gz"
    (tmp_path / "imagesTs" / "test000.nii.gz").write_bytes(src.read_bytes())
    (tmp_path / "imagesTr" / "._case000.nii.gz").write_bytes(b"resource fork")
    cases = {c.case_id: c for c in discover_cases(tmp_path)}
    assert set(cases) == {"case000", "test000"}
    assert cases["test000"].label is None
    assert load_case(cases["test000"]).label is None


def test_no_cases_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FedsegError, match="no cases found"):
        discover_cases(tmp_path / "empty")
    with pytest.raises(FedsegError, match="not a folder"):
        discover_cases(tmp_path / "missing")


def test_label_shape_mismatch_on_load(tmp_path: Path, factory) -> None:
    _write_site(tmp_path, Layout.BRATS2021, factory, n=1)
    factory.save_raw(tmp_path / "case000" / "case000_seg.nii.gz", np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(FedsegError, match="label shape"):
        load_case(discover_cases(tmp_path)[0])


def test_write_case_then_read_back(tmp_path: Path, factory) -> None:
    image, label = factory.volumes(seed=5)
    folder = write_case(tmp_path, "x1", image, label, factory.affine)
    assert (folder / "x1_t1ce.nii.gz").exists()
    loaded = load_case(discover_cases(tmp_path)[0])
    assert np.array_equal(loaded.image, image) and np.array_equal(loaded.label, label)


def test_case_from_files(tmp_path: Path, factory) -> None:
    image, _ = factory.volumes()
    paths = [
        factory.save_raw(tmp_path / f"p01_{m}.nii.gz", image[i]) for i, m in enumerate(MODALITIES)
    ]
    case = case_from_files(paths)
    assert case.case_id == "p01"
    assert np.array_equal(load_case(case).image, image)
    with pytest.raises(FedsegError, match="expected 4 image files"):
        case_from_files(paths[:3])


def test_brats_folder_ignores_macos_resource_forks(tmp_path: Path, factory) -> None:
    _write_site(tmp_path, Layout.BRATS2021, factory, n=1)
    # "._" sorts before the case's own files; it must not be taken as the T1 image
    (tmp_path / "case000" / "._case000_t1.nii.gz").write_bytes(b"\x00\x05\x16\x07 fork")
    (case,) = discover_cases(tmp_path)
    assert case.images["t1"].path.name == "case000_t1.nii.gz"
    assert load_case(case).image.shape == (4, *factory.shape)


def test_modality_shape_mismatch_names_the_modality(tmp_path: Path, factory) -> None:
    _write_site(tmp_path, Layout.BRATS2021, factory, n=1)
    factory.save_raw(tmp_path / "case000" / "case000_t2.nii.gz", np.ones((4, 4, 4), np.float32))
    with pytest.raises(FedsegError, match=r"t2 has shape \(4, 4, 4\).*co-register"):
        load_case(discover_cases(tmp_path)[0])
