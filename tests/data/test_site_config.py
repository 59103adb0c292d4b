"""A site's own data declaration (``<data>/fedseg_site.yaml``): read, checked, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedseg.data.cases import declared_absent
from fedseg.data.site_config import SITE_CONFIG_FILE, SiteDataConfig, read_site_config
from fedseg.errors import FedsegError


def test_no_file_means_nothing_absent(tmp_path: Path) -> None:
    cfg = read_site_config(tmp_path)
    assert cfg == SiteDataConfig() and cfg.absent_modalities == []
    assert cfg.present == ["t1", "t1ce", "t2", "flair"]


def test_declared_modalities_in_modality_order(tmp_path: Path) -> None:
    (tmp_path / SITE_CONFIG_FILE).write_text("absent_modalities: [flair, t1, flair]\n")
    cfg = read_site_config(tmp_path)
    assert cfg.absent_modalities == ["t1", "flair"] and cfg.present == ["t1ce", "t2"]
    assert declared_absent(tmp_path) == ("t1", "flair")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("absent_modalities: [dwi]\n", "absent_modalities: unknown modality 'dwi'"),
        ("absent_modalities: [t1, t1ce, t2, flair]\n", "cannot lack every modality"),
        ("absent: [flair]\n", "absent: Extra inputs are not permitted"),
        ("absent_modalities: [flair\n", "not valid YAML"),
        ("- flair\n", "mapping of keys to values"),
    ],
)
def test_bad_file_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / SITE_CONFIG_FILE).write_text(text)
    with pytest.raises(FedsegError) as info:
        read_site_config(tmp_path)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(tmp_path / SITE_CONFIG_FILE) in str(info.value)
