"""Secure aggregation's stages with five in-memory sites: the unmasked sum, drop-outs, the
refusals, identity checks, and what the aggregator holds of one site."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from fedseg.errors import FedsegError
from fedseg.federation.security.pki import CA_CERT, SITE_CERT, load_cert
from fedseg.privacy.fixed_point import mean_bound
from fedseg.privacy.secagg.protocol import SignedKeys, default_threshold, site_shares
from fedseg.privacy.secagg.shamir import combine_secret, split_secret
from tests.privacy.secagg_helpers import Round, consortium

SITES = ["s1", "s2", "s3", "s4", "s5"]
CLIP = 1.0
WEIGHTS = {"s1": 3.0, "s2": 10.0, "s3": 1.0, "s4": 7.0, "s5": 2.0}


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return consortium(tmp_path_factory.mktemp("ca"), SITES)


def _updates(seed: int = 0, size: int = 1000) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = {}
    for s in SITES:
        d = {"a": rng.normal(size=size), "b.w": rng.normal(size=(3, 5))}
        norm = np.sqrt(sum(np.sum(v**2) for v in d.values()))
        out[s] = {k: v * (0.9 * CLIP / norm) for k, v in d.items()}  # clipped
    return out


def _exact(updates, sites) -> dict[str, np.ndarray]:
    return {k: sum(WEIGHTS[s] * updates[s][k] for s in sites) for k in updates[sites[0]]}


def _check(got, exact, sites, scale):
    total = sum(WEIGHTS[s] for s in sites)
    bound = mean_bound(len(sites), scale, total)
    for k in exact:
        assert np.max(np.abs(got[k] / total - exact[k] / total)) <= bound


def _round(creds, **kw) -> tuple[Round, dict]:
    r = Round(creds, threshold=kw.pop("threshold", 3), **kw)
    return r, r.shares(r.keys())


def test_shamir_wrapper_any_t_shares(creds):
    secret = bytes(range(48))
    shares = split_secret(secret, 3, 5)
    assert combine_secret({1: shares[0], 3: shares[2], 5: shares[4]}, 3) == secret
    assert combine_secret(dict(enumerate(shares, 1)), 3) == secret
    assert combine_secret({2: shares[1], 4: shares[3]}, 2) != secret  # 2 of a 3-of-5: noise
    with pytest.raises(FedsegError, match="cannot rebuild"):
        combine_secret({1: shares[0], 2: shares[1]}, 3)
    assert default_threshold(5) == 4 and default_threshold(3) == 2 and default_threshold(4) == 3


def test_unmasked_sum_equals_the_weighted_sum_within_the_bound(creds):
    r, sealed = _round(creds)
    upd = _updates()
    scale = r.mask(sealed, upd, WEIGHTS, CLIP)
    got = r.unmask(SITES, [], SITES, scale)
    _check(got, _exact(upd, SITES), SITES, scale)


def test_drop_before_the_masked_upload_exact_sum_of_the_others(creds):
    r, sealed = _round(creds)
    upd = _updates(1)
    scale = r.mask(sealed, {s: u for s, u in upd.items() if s != "s2"}, WEIGHTS, CLIP)
    others = [s for s in SITES if s != "s2"]
    got = r.unmask(others, ["s2"], others, scale)  # s2's mask key rebuilt, its pairs removed
    _check(got, _exact(upd, others), others, scale)


def test_drop_after_the_masked_upload_is_included_with_its_seed_rebuilt(creds):
    r, sealed = _round(creds)
    upd = _updates(2)
    scale = r.mask(sealed, upd, WEIGHTS, CLIP)
    # s4 sent its masked update, then died: the others' shares rebuild its self-mask seed
    got = r.unmask(SITES, [], ["s1", "s2", "s3", "s5"], scale)
    _check(got, _exact(upd, SITES), SITES, scale)


def test_two_drop_outs_threshold_three_still_unmask(creds):
    r, sealed = _round(creds)
    upd = _updates(3)
    scale = r.mask(sealed, {s: upd[s] for s in ("s1", "s2", "s3", "s4")}, WEIGHTS, CLIP)
    got = r.unmask(["s1", "s2", "s3", "s4"], ["s5"], ["s1", "s2", "s3"], scale)
    _check(got, _exact(upd, ["s1", "s2", "s3", "s4"]), ["s1", "s2", "s3", "s4"], scale)


def test_fewer_than_threshold_refused(creds):
    r, sealed = _round(creds, threshold=4)
    upd = _updates(4)
    scale = r.mask(sealed, {s: upd[s] for s in SITES[:3]}, WEIGHTS, CLIP)
    with pytest.raises(FedsegError, match="threshold is 4: refused"):
        r.unmask(SITES[:3], SITES[3:], SITES[:3], scale)
    # enough included, but fewer than t answering: the aggregator cannot rebuild
    r2, sealed2 = _round(creds, threshold=4)
    scale = r2.mask(sealed2, upd, WEIGHTS, CLIP)
    with pytest.raises(FedsegError, match="only 3 site"):
        r2.unmask(SITES, [], SITES[:3], scale)


def test_asking_one_site_for_both_secrets_of_another_refused(creds):
    from fedseg.privacy.secagg.protocol import site_unmask

    r, sealed = _round(creds)
    upd = _updates(5)
    r.mask(sealed, upd, WEIGHTS, CLIP)
    st = r.states["s1"]
    with pytest.raises(FedsegError, match="both secrets of s3"):
        site_unmask(st, ["s1", "s2", "s3", "s4"], ["s3", "s5"])
    # the same in two requests: first s3 as dropped (its mask key), then as included
    site_unmask(st, ["s1", "s2", "s4", "s5"], ["s3"])
    with pytest.raises(FedsegError, match="already revealed the other secret of s3"):
        site_unmask(st, ["s1", "s2", "s3", "s4"], ["s5"])


def _swap(keys: dict, site: str, **change) -> dict:
    k = keys[site]
    return {**keys, site: SignedKeys(**{**k.__dict__, **change})}


def test_bad_signature_foreign_ca_and_wrong_name_refused(creds, tmp_path):
    r = Round(creds, threshold=3)
    keys = r.keys()
    ca = load_cert(creds["s1"] / CA_CERT)
    st = r.states["s1"]
    # the aggregator swaps s2's mask key: the signature no longer covers it
    bad = _swap(keys, "s2", mask_pub=keys["s3"].mask_pub)
    with pytest.raises(FedsegError, match="not signed by its consortium key"):
        site_shares(st, ca, bad, 3)
    # a certificate from another CA
    other = consortium(tmp_path / "other", ["s2"])
    with pytest.raises(FedsegError, match="this CA"):
        site_shares(st, ca, _swap(keys, "s2", cert_pem=(other["s2"] / SITE_CERT).read_bytes()), 3)
    # s3's certificate and keys presented as s2's
    renamed = {**keys, "s2": keys["s3"]}
    with pytest.raises(FedsegError, match="certificate of 's3'"):
        site_shares(st, ca, renamed, 3)
    # our own keys replaced
    with pytest.raises(FedsegError, match="other keys as this site's own"):
        site_shares(st, ca, _swap(keys, "s1", transport_pub=keys["s2"].transport_pub), 3)
    # too low a threshold, too few sites
    with pytest.raises(FedsegError, match="threshold 2 is outside"):
        site_shares(st, ca, keys, 2)
    with pytest.raises(FedsegError, match="at least 3 sites"):
        site_shares(st, ca, {s: keys[s] for s in ("s1", "s2")}, 2)


def test_masked_vector_uncorrelated_with_the_true_update(creds):
    r, sealed = _round(creds)
    d = 100_000
    rng = np.random.default_rng(7)
    upd = {s: {"w": rng.uniform(-1, 1, d) / np.sqrt(d)} for s in SITES}
    upd["s1"] = {"w": np.linspace(-1, 1, d) / np.sqrt(d)}  # a strongly structured update
    r.mask(sealed, upd, WEIGHTS, CLIP)
    held = r.masked["s1"]["w"]  # all the aggregator holds of s1
    assert held.dtype == np.uint32
    r_val = np.corrcoef(held.astype(np.float64), upd["s1"]["w"])[0, 1]
    assert abs(r_val) < 4 / np.sqrt(d)
    top = (held >> 24).astype(np.int64)  # top byte: uniform over 256 values
    counts = np.bincount(top, minlength=256)
    assert stats.chisquare(counts).pvalue > 1e-4
    # without the masks the top byte of a small update is 0 or 255 only: far from uniform
    from fedseg.privacy.fixed_point import choose_scale, encode

    plain = encode(upd["s1"]["w"], WEIGHTS["s1"], choose_scale(CLIP, 23.0, 5, 32), CLIP, 32)
    assert stats.chisquare(np.bincount(plain.words >> 24, minlength=256)).pvalue < 1e-100
