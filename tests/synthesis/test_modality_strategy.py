"""``modality-fedavg`` in the round loop without processes: sites answer with the global
generator nudged on what they train (``BankTransport``), the real coordinator, run store and
generator files. A modality's bank is averaged only over the sites that declared it; a
site that changes an array it does not train is rejected with one line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedseg.errors import FedsegError
from fedseg.federation.rounds.coordinator import Coordinator, Exchanged, reference_modality
from fedseg.federation.rounds.strategies.modality import ModalityFedAvg
from fedseg.federation.rounds.strategies.registry import make_strategy
from fedseg.federation.rounds.tasks import TaskReply, TaskRequest
from fedseg.federation.rounds.transfer import round_trip
from fedseg.model.generator import (
    GeneratorConfig,
    identity_banks,
    new_generator_weights,
    param_group,
)
from fedseg.model.generator_file import load_generator
from fedseg.model.summary import Summary
from fedseg.model.weights import Weights
from fedseg.plan import StrategyConfig
from fedseg.run_folder import DeclaredCases, RunStatus, SiteRoundStatus, Task, model_path
from fedseg.tracking.store import RunStore
from tests.federation.fed_helpers import SITES, ArrayTransport, Dies, tiny_plan, write_run

ALL = ["t1", "t1ce", "t2", "flair"]
NO_FLAIR = ["t1", "t1ce", "t2"]
N_TRAIN = {"site1": 2, "site2": 3, "site3": 5}
#: close enough that no update is clipped by the norm bound (bounds.update_norm_ratio)
OFFSETS = {"site1": 0.02, "site2": 0.03, "site3": 0.04}
GEN = GeneratorConfig(base_filters=2, depth=2)


def synthesis_plan(tmp_path: Path, **overrides: object) -> Path:
    sites = {s: tmp_path / s for s in SITES}  # the transport never reads them
    base: dict[str, object] = {
        "task": "synthesis",
        "strategy": {"name": "modality-fedavg", "params": {"optimizer_state": "keep-local"}},
        "rounds": 2,
        "synthesis": {"generator": GEN.model_dump(), "pretrain": {"rounds": 1}},
        "retention": {"keep_every": None},  # every round's generator kept for the checks
    }
    base.update(overrides)
    return write_run(tmp_path / "run", tiny_plan(sites, **base))


class BankTransport(ArrayTransport):
    """Sites that declare ``modalities[site]`` and, asked to train, add ``offsets[site]``
    to every array of the groups their request lets them train (pre-training: the kernel
    and the reference modality's bank; bank phase: their modalities' banks), then
    ``tamper``; validation: ssim/psnr/mae per modality they have."""

    def __init__(
        self,
        modalities: dict[str, list[str]],
        tamper: Callable[[str, Weights], Weights] | None = None,
        transfer: str = "float32",
    ) -> None:
        super().__init__(OFFSETS, N_TRAIN, tamper=tamper)
        self.modalities = modalities
        self.transfer = transfer
        self.declare = {
            s: DeclaredCases(n_train=N_TRAIN[s], n_val=2, modalities=modalities[s]) for s in OFFSETS
        }

    def exchange(
        self,
        requests: dict[str, TaskRequest],
        timeout_s: float,
        on_result: Callable[[str, Exchanged], None],
    ) -> None:
        self.requests.append(requests)
        for site, req in requests.items():
            got, _ = round_trip(req.weights, req.transfer)  # what the site receives
            w = None
            if req.epochs > 0:
                job = req.synth_step
                assert job is not None
                groups = (
                    {"kernel", f"bank:{job.modality}"}
                    if job.phase == "pretrain"
                    else {f"bank:{m}" for m in self.modalities[site]}
                )
                w = {
                    k: (v + np.float32(self.offsets[site])) if param_group(k) in groups else v
                    for k, v in got.items()
                }
                if self.tamper is not None:
                    w = self.tamper(site, w)
                w, _ = round_trip(w, req.transfer)  # what the aggregator receives
            validation = {
                m: {"ssim": Summary(0.5, 0.1, 2), "psnr": Summary(20.0, 1.0, 2),
                    "mae": Summary(0.1, 0.01, 2)}
                for m in self.modalities[site]
            }  # fmt: skip
            rep = TaskReply(site=site, weights=w, n_train=N_TRAIN[site], n_val=2,
                            train_loss=0.5, validation=validation)  # fmt: skip
            on_result(site, Exchanged(rep, 10, 20, 0.1))


def _site2_without_flair() -> dict[str, list[str]]:
    return {"site1": ALL, "site2": NO_FLAIR, "site3": ALL}


def _mean(sites: list[str]) -> float:
    return sum(N_TRAIN[s] * OFFSETS[s] for s in sites) / sum(N_TRAIN[s] for s in sites)


def test_pretrain_then_identity_banks_then_bank_rounds(tmp_path: Path) -> None:
    run = synthesis_plan(tmp_path)
    t = BankTransport(_site2_without_flair())
    Coordinator(run, t).run()
    w0 = new_generator_weights(GEN, 0)
    with RunStore(run) as store:
        assert store.meta.status() == RunStatus.DONE
        assert store.meta.task() == Task.SYNTHESIS
        assert store.meta.planned_rounds() == 3  # 1 pre-training + 2 bank rounds
        assert [r["status"] for r in store.rounds()] == ["done"] * 3
        srs = {(s.round, s.site): s for s in store.site_rounds()}
        declared = store.meta.declared()
        rows = store.validation(metric="ssim")
        log = [e[2] for e in store.events()]
    assert declared["site2"].modalities == NO_FLAIR
    # the requests: round 1 pre-trains on t1 (every site has it), then bank rounds
    steps = [{s: r.synth_step for s, r in reqs.items()} for reqs in t.requests]
    assert {j.phase for j in steps[0].values()} == {"pretrain"}
    assert {j.modality for j in steps[0].values()} == {"t1"}
    assert {j.phase for j in steps[1].values()} == {"bank"} and steps[3] == dict.fromkeys(
        SITES
    )  # the final validation trains nothing
    # round 1 (pretrain): kernel and bank.t1 moved by the case-weighted mean over all sites,
    # then every bank reset to identity on the new kernel
    w1 = load_generator(model_path(run, 1))
    k = "kernel.enc0a.weight"
    np.testing.assert_allclose(w1.weights[k], w0[k] + _mean(list(SITES)), rtol=1e-6, atol=1e-6)
    ident = identity_banks(GEN, w1.weights)
    for name, v in w1.weights.items():
        assert v.tobytes() == ident[name].tobytes(), name
    assert w1.trained == ["t1"]
    # rounds 2, 3 (bank): the kernel is frozen; flair averaged over site1 and site3 only
    w3 = load_generator(model_path(run, 3))
    for name in w3.weights:
        g = param_group(name)
        if g == "kernel":
            assert w3.weights[name].tobytes() == w1.weights[name].tobytes(), name
            continue
        over = ["site1", "site3"] if g == "bank:flair" else list(SITES)
        expect = w1.weights[name] + 2 * _mean(over)
        np.testing.assert_allclose(w3.weights[name], expect, rtol=1e-5, atol=1e-6)
    assert w3.trained == ALL and w3.meta["model_round"] == "3"
    # the records: phase and groups per site, the log per group
    assert srs[(1, "site1")].extra["phase"] == "pretrain"
    assert srs[(1, "site2")].extra["averaged_into"] == ["bank:t1", "kernel"]
    assert srs[(2, "site2")].extra["averaged_into"] == ["bank:t1", "bank:t1ce", "bank:t2",
                                                         "shared"]  # fmt: skip
    assert "bank:flair" in srs[(2, "site1")].extra["averaged_into"]
    assert any("round 2 (bank): bank:flair averaged over site1, site3;" in e for e in log)
    # validation rows per modality: site2 validates no flair
    assert {(r.site, r.region) for r in rows if r.model_round == 3} == {
        (s, m) for s in SITES for m in _site2_without_flair()[s]
    }


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("bank.flair.enc0a.gamma", "bank.flair.*: changed by a site that declared no flair"),
        ("kernel.head.bias", "kernel.*: the frozen kernel changed"),
    ],
)
def test_a_site_changing_what_it_does_not_train_is_rejected(
    tmp_path: Path, name: str, line: str
) -> None:
    """site2 (no flair) sends a changed flair bank or kernel in the bank phase: rejected
    with the line, its update not used; the others' are."""

    def tamper(site: str, w: Weights) -> Weights:
        if site == "site2":
            w = {**w, name: w[name] + np.float32(1e-3)}
        return w

    # no pre-training (a random frozen kernel): round 1 is a bank round
    run = synthesis_plan(tmp_path, rounds=1, synthesis={"generator": GEN.model_dump(),
                                                        "pretrain": {"rounds": 0}})  # fmt: skip
    Coordinator(run, BankTransport(_site2_without_flair(), tamper)).run()
    with RunStore(run) as store:
        srs = {(s.round, s.site): s for s in store.site_rounds()}
        log = [e[2] for e in store.events()]
    bad = srs[(1, "site2")]
    assert bad.status == SiteRoundStatus.REJECTED and bad.error == line
    assert f"round 1: site site2 update rejected: {line}" in log
    assert srs[(1, "site1")].status == srs[(1, "site3")].status == SiteRoundStatus.OK
    w0, w1 = (load_generator(model_path(run, r)).weights for r in (0, 1))
    k = "bank.t1.enc0a.gamma"  # site2's t1 bank did not count either
    np.testing.assert_allclose(w1[k], w0[k] + _mean(["site1", "site3"]), rtol=1e-5, atol=1e-6)


def test_pretraining_changes_to_other_banks_are_rejected(tmp_path: Path) -> None:
    def tamper(site: str, w: Weights) -> Weights:
        return {**w, "bank.t2.head.beta": w["bank.t2.head.beta"] + np.float32(1)}

    run = synthesis_plan(tmp_path, rounds=1, min_sites=1)
    with pytest.raises(FedsegError, match="only 0 site"):
        Coordinator(run, BankTransport(_site2_without_flair(), tamper)).run()
    with RunStore(run) as store:
        errors = {s.error for s in store.site_rounds() if s.round == 1}
        status = store.rounds()[0]["status"]
    assert errors == {"bank.t2.*: changed in pre-training, which trains only kernel.* and "
                      "bank.t1.*"}  # fmt: skip
    assert status == "failed"  # no site delivered a usable update


def test_float16_transfer_honest_sites_pass(tmp_path: Path) -> None:
    """With float16 on the wire, the frozen arrays are compared with the global model's
    round trip, not the aggregator's float32 copy: honest sites are never rejected."""
    run = synthesis_plan(tmp_path, transfer={"weights": "float16"})
    Coordinator(run, BankTransport(_site2_without_flair())).run()
    with RunStore(run) as store:
        assert {s.status for s in store.site_rounds()} == {SiteRoundStatus.OK}


def test_reference_modality_and_pretraining_tasks(tmp_path: Path) -> None:
    """auto: the modality most sites declared, ties to t1; a site without it only
    validates in pre-training."""
    assert reference_modality("auto", ALL, [["t2", "flair"], ["t2"], None]) == "t2"
    assert reference_modality("auto", ALL, [["t1ce", "flair"], ["t1", "t2"]]) == "t1"
    assert reference_modality("flair", ALL, [["t1"]]) == "flair"
    mods = {"site1": ["t2", "flair"], "site2": ["t1", "t2"], "site3": ["t1", "t2"]}
    run = synthesis_plan(tmp_path, rounds=1, synthesis={
        "generator": GEN.model_dump(), "pretrain": {"rounds": 1, "modality": "flair"}})  # fmt: skip
    t = BankTransport(mods)
    Coordinator(run, t).run()
    assert {s: r.epochs for s, r in t.requests[0].items()} == {"site1": 1, "site2": 0,
                                                                "site3": 0}  # fmt: skip
    with RunStore(run) as store:
        log = [e[2] for e in store.events()]
    assert any("t1ce: no site has it; its bank stays at its initial value" in e for e in log)


def test_strategy_weights_per_group() -> None:
    s = make_strategy(StrategyConfig(name="modality-fedavg"), 1)
    assert isinstance(s, ModalityFedAvg) and s.streams
    s.set_federation(2, "t1", ALL, {"a": NO_FLAIR, "b": None})
    assert s.phase(2) == "pretrain" and s.phase(3) == "bank"
    assert s.group_weights("a", 4, 1) == {"kernel": 4, "bank:t1": 4}
    assert s.group_weights("a", 4, 3) == {"bank:t1": 4, "bank:t1ce": 4, "bank:t2": 4,
                                          "shared": 4}  # fmt: skip
    assert "bank:flair" in s.group_weights("b", 4, 3)
    assert s.frozen_groups("a", 3) == ["kernel", "bank:flair"]


class DyingBankTransport(Dies, BankTransport):
    """``BankTransport`` whose aggregator "is killed" when round ``dies_in`` starts."""

    def __init__(self, dies_in: int | None, modalities: dict[str, list[str]]) -> None:
        super().__init__(modalities)
        self.dies_in = dies_in


def test_a_resume_continues_in_the_round_s_phase(tmp_path: Path) -> None:
    """Killed in pre-training round 2 of 2: the resume redoes round 2 as pre-training (the
    phase follows the round number), resets the banks after it, then the bank round."""
    run = synthesis_plan(tmp_path, rounds=1, synthesis={
        "generator": GEN.model_dump(), "pretrain": {"rounds": 2}})  # fmt: skip
    with pytest.raises(RuntimeError, match="killed"):
        Coordinator(run, DyingBankTransport(2, _site2_without_flair())).run()
    t = DyingBankTransport(None, _site2_without_flair())
    Coordinator(run, t).run()
    assert [next(iter(r.values())).round for r in t.requests] == [2, 3, 4]
    assert t.requests[0]["site1"].synth_step.phase == "pretrain"  # type: ignore[union-attr]
    assert t.requests[1]["site1"].synth_step.phase == "bank"  # type: ignore[union-attr]
    w2 = load_generator(model_path(run, 2))
    ident = identity_banks(GEN, w2.weights)
    assert all(v.tobytes() == ident[k].tobytes() for k, v in w2.weights.items())
    assert load_generator(model_path(run, 3)).trained == ALL


def test_an_initial_generator_skips_pretraining(tmp_path: Path) -> None:
    """``synthesis.initial_generator``: round 0 is that file's generator (kernel and banks),
    its ``trained`` carried on; no pre-training round; a different generator is refused."""
    from fedseg.model.generator_file import GeneratorFile, save_generator

    w = new_generator_weights(GEN, 5)
    path = save_generator(tmp_path / "G0.pt", GeneratorFile(GEN, w, trained=["t2"]))
    run = synthesis_plan(tmp_path, rounds=1, synthesis={
        "generator": GEN.model_dump(), "pretrain": {"rounds": 2},
        "initial_generator": str(path)})  # fmt: skip
    t = BankTransport(_site2_without_flair())
    Coordinator(run, t).run()
    w0 = load_generator(model_path(run, 0))
    assert all(v.tobytes() == w[k].tobytes() for k, v in w0.weights.items())
    assert w0.trained == ["t2"]
    assert [next(iter(r.values())).synth_step.phase for r in t.requests[:1]] == ["bank"]  # type: ignore[union-attr]
    with RunStore(run) as store:
        assert store.meta.planned_rounds() == 1
    other = GeneratorConfig(base_filters=3, depth=2)
    path2 = save_generator(
        tmp_path / "G1.pt", GeneratorFile(other, new_generator_weights(other, 0), [])
    )
    run2 = synthesis_plan(tmp_path / "b", rounds=1, synthesis={
        "generator": GEN.model_dump(), "initial_generator": str(path2)})  # fmt: skip
    with pytest.raises(FedsegError, match=r"initial_generator .* has generator"):
        Coordinator(run2, BankTransport(_site2_without_flair())).run()
