"""What the images show: MR contrasts, distinct sites, and a bad site's wrong labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy import stats

from fedseg.data.cases import discover_cases, load_case
from fedseg.data.labels import ED, ET, NCR
from fedseg.data.preprocess import zscore_nonzero
from fedseg.data.synth import BadKind, SynthConfig, synth_case

T1, T1GD, T2, FLAIR = range(4)


@pytest.mark.parametrize("site,case", [(0, 0), (1, 1), (2, 2), (0, 3)])
def test_contrasts_match_real_mri(tiny_config: SynthConfig, site: int, case: int) -> None:
    c = synth_case(tiny_config, tiny_config.site_profiles(), site, case)
    img, lab, anat = c.image, c.label, c.anatomy
    healthy = lab == 0
    wm = healthy & (anat.wm > 0.85)
    gm = healthy & (anat.gm > 0.7)
    csf = healthy & (anat.csf > 0.7)
    assert min(wm.sum(), gm.sum(), csf.sum()) > 20

    def mean(m: int, mask: np.ndarray) -> float:
        return float(img[m][mask].mean())

    # Normal tissue: WM brighter than GM on T1, darker on T2; CSF bright on T2, dark on FLAIR.
    assert mean(T1, wm) > mean(T1, gm) > mean(T1, csf)
    assert mean(T2, csf) > mean(T2, gm) > mean(T2, wm)
    assert mean(FLAIR, csf) < mean(FLAIR, wm)
    # Tumor: FLAIR-bright edema, enhancing rim brighter than necrosis on T1Gd, dark on T1.
    assert mean(FLAIR, lab == ED) > 1.3 * mean(FLAIR, wm)
    assert mean(T2, lab == ED) > 1.3 * mean(T2, wm)
    assert mean(T1GD, lab == ET) > 1.2 * mean(T1GD, wm)
    assert mean(T1, lab == ET) < mean(T1, wm)
    if (lab == NCR).sum() > 3:
        assert mean(T1GD, lab == ET) > 1.5 * mean(T1GD, lab == NCR)
        assert mean(T2, lab == NCR) > mean(T2, wm)


def _site_features(root: Path, site: str) -> np.ndarray:
    """Per case: log median T1 (scanner scale) and the high-frequency share of the
    z-scored FLAIR inside the brain (noise against blur)."""
    feats = []
    for case in discover_cases(root / site):
        vols = load_case(case, with_label=False)
        brain = ndi.binary_erosion(vols.image[0] > 0, iterations=2)
        z = zscore_nonzero(vols.image)[FLAIR]
        high = z - ndi.uniform_filter(z, 3)
        feats.append([np.log(np.median(vols.image[T1][brain])), high[brain].std()])
    return np.array(feats)


def test_sites_are_not_identically_distributed(
    tiny_dataset: tuple[Path, dict[str, list[Path]]],
) -> None:
    root, result = tiny_dataset
    per_site = [_site_features(root, s) for s in sorted(result)]
    for k, name in enumerate(("intensity scale", "noise level")):
        site_means = np.array([f[:, k].mean() for f in per_site])
        within = np.mean([f[:, k].var(ddof=1) for f in per_site])
        # One-way ANOVA F: differences between sites dwarf those between a site's cases.
        f_ratio = site_means.var(ddof=1) * len(per_site[0]) / max(within, 1e-12)
        n_sites, n_cases = len(per_site), sum(len(f) for f in per_site)
        critical = stats.f.ppf(0.99, n_sites - 1, n_cases - n_sites)
        assert f_ratio > critical, f"{name}: sites do not differ (F = {f_ratio:.1f}, p > 0.01)"


def test_tumor_sizes_differ_between_sites() -> None:
    profiles = SynthConfig(sites=4, seed=3).site_profiles()
    radii = sorted(p.tumor_radius_mm for p in profiles)
    assert radii[-1] > 1.5 * radii[0]
    assert len({p.noise for p in profiles}) == 4
    assert len({p.intensity_scale for p in profiles}) == 4


def _bad(kind: BadKind, case: int = 0) -> tuple[np.ndarray, np.ndarray, SynthConfig]:
    config = SynthConfig(sites=2, cases_per_site=2, spacing=4.0, bad_sites=[2], bad_kind=kind)
    c = synth_case(config, config.site_profiles(), 1, case)
    return c.label, c.clean_label, config


def test_clean_site_writes_the_clean_label() -> None:
    config = SynthConfig(sites=2, cases_per_site=1, spacing=4.0, bad_sites=[2], bad_kind="swapped")
    c = synth_case(config, config.site_profiles(), 0, 0)
    assert np.array_equal(c.label, c.clean_label)


def test_swapped_site_has_necrosis_and_edema_exchanged() -> None:
    label, clean, _ = _bad(BadKind.SWAPPED)
    assert (clean == NCR).any() and (clean == ED).any()
    assert np.array_equal(label == ED, clean == NCR)
    assert np.array_equal(label == NCR, clean == ED)
    assert np.array_equal(label == ET, clean == ET)


def test_eroded_site_draws_every_region_too_small() -> None:
    label, clean, _ = _bad(BadKind.ERODED)
    wt, wt_clean = label > 0, clean > 0
    assert not np.any(wt & ~wt_clean), "eroded tumor must lie inside the true tumor"
    assert wt.sum() < 0.8 * wt_clean.sum()
    tc, tc_clean = np.isin(label, (NCR, ET)), np.isin(clean, (NCR, ET))
    assert tc.sum() < tc_clean.sum()


def test_shifted_site_moves_the_tumor_by_its_shift() -> None:
    label, clean, config = _bad(BadKind.SHIFTED)
    shift = np.array(config.site_profiles()[1].bad_shift_vox)
    assert np.abs(shift).sum() >= 2
    moved = np.argwhere(label > 0).mean(axis=0) - np.argwhere(clean > 0).mean(axis=0)
    np.testing.assert_allclose(moved, shift, atol=1.0)
    assert (label != clean).sum() > 0.3 * (clean > 0).sum()
