"""The generator's training unit (``synth.train.train_bank``) and its validation
(``synth.validate.validate_bank``) on tiny real cases: it learns, it changes only what a
site may change, its discriminators stay in the site's workspace and a redone round is
reproducible."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from fedseg.data.cases import MODALITIES, Case, discover_cases
from fedseg.errors import FedsegError
from fedseg.model.generator import GeneratorConfig, new_generator_weights, param_group
from fedseg.model.metrics import METRIC_RANGES
from fedseg.model.weights import Weights, load_arrays
from fedseg.synth.config import SynthesisConfig
from fedseg.synth.train import BankResult, train_bank
from fedseg.synth.validate import SYNTH_METRICS, validate_bank

ALL = list(MODALITIES)
THREE = ["t1", "t1ce", "t2"]


def _cfg(size: int) -> SynthesisConfig:
    """A tiny generator (2D, base 4, depth 2) and discriminators (2 layers, 8 channels)."""
    return SynthesisConfig(
        generator=GeneratorConfig(base_filters=4, depth=2),
        discriminator={"channels": 8, "layers": 2},
        data={"slice_size": (size, size), "batch_size": 4},
    )


#: 64 x 64 slices (the 4 mm grid is 60 x 60) for learning; 32 x 32 crops for the rules
LEARN, SMALL = _cfg(64), _cfg(32)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread: oversubscribed OpenMP threads on the shared cores make tiny
    convolutions many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cases(tiny_sites: dict[str, Path]) -> list[Case]:
    """Two tiny full cases (60 x 60 x 39 at 4 mm)."""
    return discover_cases(tiny_sites["site1"])[:2]


def _train(cfg: SynthesisConfig, weights: Weights, cases: list[Case], present: list[str],
           **kw: object) -> BankResult:  # fmt: skip
    args: dict = {"phase": "bank", "modality": None, "steps": 3, "seed": 0, "workspace": None,
                  "rnd": 1} | kw  # fmt: skip
    return train_bank(cfg, weights, cases, present, **args)


def _mean_ssim(cfg: SynthesisConfig, w: Weights, cases: list[Case]) -> dict[str, float]:
    results = validate_bank(cfg, w, cases, ALL)
    return {m: float(np.mean([r.metrics[m]["ssim"] for r in results])) for m in ALL}


def _same(a: Weights, b: Weights, names: list[str]) -> bool:
    return all(np.array_equal(a[n], b[n]) for n in names)


def test_a_tiny_generator_learns_every_modality(cases: list[Case]) -> None:
    # 30 steps of batch 4 against one discriminator per modality: both losses fall by more
    # than 10 % and the brain-masked SSIM on the training cases rises by >= 0.1 for every
    # modality (measured: G 0.28 -> 0.20, D 0.82 -> 0.52, SSIM 0.31-0.38 -> 0.46-0.59)
    w0 = new_generator_weights(LEARN.generator, 0)
    before = _mean_ssim(LEARN, w0, cases)
    res = _train(LEARN, w0, cases, ALL, steps=30)
    after = _mean_ssim(LEARN, res.weights, cases)
    assert res.n_train == 2 and len(res.losses) == len(res.d_losses) == 30
    assert res.train_loss == pytest.approx(np.mean(res.losses))
    assert res.d_loss == pytest.approx(np.mean(res.d_losses))
    first, last = np.mean(res.losses[:5]), np.mean(res.losses[-5:])
    assert last < 0.9 * first, res.losses
    assert np.mean(res.d_losses[-5:]) < 0.9 * np.mean(res.d_losses[:5]), res.d_losses
    for m in ALL:
        assert after[m] >= before[m] + 0.1, (m, before, after)


def test_validation_reports_the_present_modalities_in_range(cases: list[Case]) -> None:
    w = new_generator_weights(SMALL.generator, 1)
    results = validate_bank(SMALL, w, cases, ["flair", "t1"])
    assert [r.case_id for r in results] == [c.case_id for c in cases]
    for r in results:
        assert list(r.metrics) == ["t1", "flair"]  # MODALITIES order
        for values in r.metrics.values():
            assert tuple(values) == SYNTH_METRICS
            for metric, v in values.items():
                lo, hi = METRIC_RANGES[metric]
                assert lo <= v <= hi


def test_bank_phase_changes_only_the_present_banks(cases: list[Case]) -> None:
    w0 = new_generator_weights(SMALL.generator, 0)
    res = _train(SMALL, w0, cases, THREE)
    groups = {n: param_group(n) for n in w0}
    frozen = [n for n, g in groups.items() if g in ("kernel", "bank:flair")]
    assert frozen and _same(res.weights, w0, frozen)  # bit for bit
    assert list(res.weights) == list(w0)
    for m in THREE:
        names = [n for n, g in groups.items() if g == f"bank:{m}"]
        assert not _same(res.weights, w0, names), m
    assert all(res.weights[n].dtype == np.float32 for n in w0)


def test_pretrain_changes_the_kernel_and_the_reference_bank_only(cases: list[Case]) -> None:
    w0 = new_generator_weights(SMALL.generator, 0)
    res = _train(SMALL, w0, cases, THREE, phase="pretrain", modality="t1")
    assert res.d_loss is None and res.d_losses == []
    groups = {n: param_group(n) for n in w0}
    for group in ("kernel", "bank:t1"):
        assert not _same(res.weights, w0, [n for n, g in groups.items() if g == group])
    others = [n for n, g in groups.items() if g not in ("kernel", "bank:t1")]
    assert _same(res.weights, w0, others)
    with pytest.raises(FedsegError, match="pre-training on flair"):
        _train(SMALL, w0, cases, THREE, phase="pretrain", modality="flair")


def test_same_seed_same_result(cases: list[Case]) -> None:
    w0 = new_generator_weights(SMALL.generator, 0)
    a, b = _train(SMALL, w0, cases, ALL), _train(SMALL, w0, cases, ALL)
    c = _train(SMALL, w0, cases, ALL, seed=1)
    assert _same(a.weights, b.weights, list(w0)) and a.losses == b.losses
    assert not _same(a.weights, c.weights, list(w0))


def test_discriminators_stay_in_the_workspace_and_a_redone_round_repeats(
    cases: list[Case], tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    w = new_generator_weights(SMALL.generator, 0)
    results = {}
    for rnd in (1, 2, 3):
        results[rnd] = _train(SMALL, w, cases, THREE, workspace=ws, rnd=rnd, seed=rnd)
        w = results[rnd].weights
    # two files kept: the last round's and the one it started from
    assert sorted(p.name for p in ws.iterdir()) == [
        "discriminators_0002.npz",
        "discriminators_0003.npz",
    ]
    saved = load_arrays(ws / "discriminators_0003.npz")
    heads = {k.split("/")[0] + "/" + k.split("/")[1] for k in saved}
    assert heads == {"adam_g/bank"} | {f"{ns}/{m}" for ns in ("d", "adam_d") for m in THREE}
    # round 3 redone (an aggregator restart): same start (file 2), same result
    again = _train(SMALL, results[2].weights, cases, THREE, workspace=ws, rnd=3, seed=3)
    assert _same(again.weights, results[3].weights, list(w)) and again.losses == results[3].losses
    # ... and the file did matter: fresh discriminators and Adam give another result
    fresh = _train(SMALL, results[2].weights, cases, THREE, workspace=None, rnd=3, seed=3)
    assert not _same(fresh.weights, results[3].weights, list(w))
    # nothing of a discriminator is in what a site sends
    assert all(param_group(n) for n in again.weights)


def test_3d_patches_train_and_validate(cases: list[Case]) -> None:
    # spatial_dims 3: patches of 16 x 16 x 12 from the 60 x 60 x 39 volume (padded to
    # multiples of 2), validation on the whole volume with 3D SSIM
    cfg = SynthesisConfig(
        generator=GeneratorConfig(spatial_dims=3, base_filters=2, depth=2),
        discriminator={"channels": 4, "layers": 2},
        data={"patch_size": (16, 16, 12), "batch_size": 1},
    )
    w0 = new_generator_weights(cfg.generator, 0)
    res = _train(cfg, w0, cases[:1], ["t2", "flair"], steps=2)
    assert res.n_train == 1 and len(res.d_losses) == 2
    frozen = [n for n in w0 if param_group(n) in ("kernel", "bank:t1", "bank:t1ce")]
    assert _same(res.weights, w0, frozen)
    (result,) = validate_bank(cfg, res.weights, cases[:1], ["t2", "flair"])
    assert list(result.metrics) == ["t2", "flair"]
    assert all(-1 <= v["ssim"] <= 1 for v in result.metrics.values())


def test_a_declared_absent_modality_cannot_be_trained(cases: list[Case]) -> None:
    declared = [dataclasses.replace(c, absent=("flair",)) for c in cases]
    w0 = new_generator_weights(SMALL.generator, 0)
    with pytest.raises(FedsegError, match="flair declared absent at this site"):
        _train(SMALL, w0, declared, ALL)
    with pytest.raises(FedsegError, match="flair declared absent at this site"):
        validate_bank(SMALL, w0, declared, ALL)
