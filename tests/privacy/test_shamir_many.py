"""``combine_many`` (Lagrange coefficients once per index set) against pycryptodome's
per-block ``Shamir.combine``: the same bytes, the same refusals, one coefficient set per
index set; and ``rebuild`` through it, with a bad share still caught."""

from __future__ import annotations

import random

import numpy as np
import pytest
from Crypto.Protocol.SecretSharing import Shamir

from fedseg.errors import FedsegError
from fedseg.privacy.secagg import protocol, shamir
from fedseg.privacy.secagg.shamir import BLOCK, combine_many, combine_secret, split_secret
from tests.privacy.secagg_helpers import Round, consortium

SITES = ["s1", "s2", "s3", "s4", "s5"]


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory):
    return consortium(tmp_path_factory.mktemp("ca"), SITES)


def _per_block(shares: dict[int, bytes], threshold: int) -> bytes:
    """Today's path spelled out: ``Shamir.combine`` on each 16-byte block of the lowest
    ``threshold`` indices."""
    items = sorted(shares.items())[:threshold]
    return b"".join(
        Shamir.combine([(i, s[o : o + BLOCK]) for i, s in items], ssss=False)
        for o in range(0, len(items[0][1]), BLOCK)
    )


def _cases(seed: int) -> tuple[dict[tuple, dict[int, bytes]], dict[tuple, bytes], dict]:
    """Random secrets of 16..80 bytes, thresholds 2..7 over n up to 10, each given a random
    subset of its shares of at least t (so several index sets, some with more than t)."""
    rng = random.Random(seed)
    given, secrets, thresholds = {}, {}, {}
    for k in range(24):
        n = rng.randint(3, 10)
        t = rng.randint(2, min(n, 7))
        secret = rng.randbytes(BLOCK * rng.choice([1, 2, 3, 5]))
        shares = split_secret(secret, t, n)
        pick = rng.sample(range(1, n + 1), rng.randint(t, n))
        key = (t, k)
        given[key] = {i: shares[i - 1] for i in pick}
        secrets[key], thresholds[key] = secret, t
    return given, secrets, thresholds


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_bytes_as_per_block_combine(seed):
    given, secrets, thresholds = _cases(seed)
    for t in sorted(set(thresholds.values())):
        mine = {k: s for k, s in given.items() if thresholds[k] == t}
        got = combine_many(mine, t)  # different index sets in one call
        assert list(got) == list(mine)
        for k, shares in mine.items():
            assert got[k] == _per_block(shares, t) == combine_secret(shares, t) == secrets[k]


def test_fewer_than_t_shares_give_noise_alike():
    # below the threshold both paths interpolate the same wrong polynomial: same bytes
    secret = bytes(range(32))
    shares = split_secret(secret, 4, 6)
    few = {2: shares[1], 5: shares[4], 6: shares[5]}
    got = combine_many({"x": few}, 3)["x"]
    assert got == _per_block(few, 3) and got != secret


def test_coefficients_once_per_index_set(monkeypatch):
    calls: list[tuple[int, ...]] = []
    real = shamir.lagrange_at_zero
    monkeypatch.setattr(shamir, "lagrange_at_zero", lambda ix: calls.append(ix) or real(ix))
    a, b, c = (split_secret(bytes([i]) * 32, 3, 5) for i in range(3))
    combine_many(
        {
            "a": {1: a[0], 2: a[1], 3: a[2]},
            "b": {1: b[0], 2: b[1], 3: b[2], 5: b[4]},  # more than t: the lowest three
            "c": {2: c[1], 4: c[3], 5: c[4]},
        },
        3,
    )
    assert calls == [(1, 2, 3), (2, 4, 5)]


@pytest.mark.parametrize(
    ("shares", "match"),
    [
        ({1: b"a" * 16, 2: b"b" * 16}, r"2 share\(s\) cannot rebuild a secret shared 3-of-n"),
        ({1: b"a" * 16, 2: b"b" * 32, 3: b"c" * 16}, "differ in length"),
        ({1: b"a" * 17, 2: b"b" * 17, 3: b"c" * 17}, "differ in length"),  # not 16-byte blocks
    ],
)
def test_bad_shares_refused_as_before(shares, match):
    with pytest.raises(FedsegError, match=match) as old:
        combine_secret(shares, 3)
    good = dict(enumerate(split_secret(b"k" * 16, 3, 3), 1))
    with pytest.raises(FedsegError, match=match) as new:
        combine_many({"good": good, "bad": shares}, 3)
    assert str(new.value) == str(old.value)


def test_split_refuses_lengths_not_in_blocks():
    with pytest.raises(ValueError, match="multiple of 16"):
        split_secret(b"x" * 17, 2, 3)


def test_rebuild_one_coefficient_set_and_a_bad_key_share_caught(creds, monkeypatch):
    calls: list[tuple[int, ...]] = []
    real = shamir.lagrange_at_zero
    monkeypatch.setattr(shamir, "lagrange_at_zero", lambda ix: calls.append(ix) or real(ix))
    r = Round(creds, threshold=3)
    sealed = r.shares(r.keys())
    others = [s for s in SITES if s != "s2"]  # s2 drops before masking
    r.mask(sealed, {s: {"w": np.full(4, 0.1)} for s in others}, dict.fromkeys(SITES, 1.0), 1.0)
    answers = {s: protocol.site_unmask(r.states[s], others, ["s2"]) for s in others}
    st = r.states["s1"]
    got = protocol.rebuild(st.sites, 3, st.mask_pubs, answers, others, ["s2"])
    assert set(got.self_seeds) == set(others) and set(got.mask_keys) == {"s2"}
    assert got.self_seeds["s3"] == r.states["s3"].self_seed
    assert got.mask_keys["s2"] == r.states["s2"].mask_sk
    assert calls == [(1, 3, 4)]  # four seeds and one key, one index set: s1, s3, s4
    # a site sends a corrupted share of s2's mask key: the rebuilt key does not match
    seeds, keys = answers["s1"]
    bad = {**answers, "s1": (seeds, {"s2": bytes(b ^ 1 for b in keys["s2"])})}
    with pytest.raises(FedsegError, match="mask key do not rebuild it"):
        protocol.rebuild(st.sites, 3, st.mask_pubs, bad, others, ["s2"])
