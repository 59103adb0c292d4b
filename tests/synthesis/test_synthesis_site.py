"""A site's side of a ``task: synthesis`` round (``site.run_task``): the recipe and the
request's ``synth_step`` reach the generator's training unit with the site's modalities;
what comes back is the generator and per-modality summaries, nothing else."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fedseg.data.site_config import SITE_CONFIG_FILE
from fedseg.federation.engine.messages import decode_request, encode_request
from fedseg.federation.rounds.site import run_task
from fedseg.federation.rounds.tasks import SynthStep, TaskRequest, recipe_json, recipe_synthesis
from fedseg.model.config import NetworkConfig
from fedseg.model.generator import GeneratorConfig, new_generator_weights, param_group
from fedseg.synth import train as synth_train
from fedseg.synth import validate as synth_validate
from fedseg.synth.config import SynthesisConfig
from fedseg.train.config import TrainConfig
from tests.synthesis import bank_stand_in

CFG = SynthesisConfig(generator=GeneratorConfig(base_filters=2, depth=2))


@pytest.fixture
def flairless_site(tmp_path: Path, tiny_sites: dict[str, Path]) -> Path:
    """A copy of tiny site1 that declares no flair (``fedseg_site.yaml``)."""
    site = tmp_path / "site"
    shutil.copytree(tiny_sites["site1"], site, ignore=shutil.ignore_patterns(".fedseg"))
    (site / SITE_CONFIG_FILE).write_text("absent_modalities: [flair]\n")
    return site


def _request(step: SynthStep | None, rnd: int = 2) -> TaskRequest:
    recipe = recipe_json(NetworkConfig(), TrainConfig.cpu(), CFG)
    return TaskRequest(rnd, rnd - 1, True, 1 if step else 0, 7, "run", recipe,
                       new_generator_weights(CFG.generator, 0), min_summary_cases=1,
                       synth_step=step)  # fmt: skip


def test_recipe_and_step_travel(monkeypatch: pytest.MonkeyPatch) -> None:
    req = _request(SynthStep("pretrain", "t2", 40))
    back = decode_request(encode_request(req))
    assert back.synth_step == SynthStep("pretrain", "t2", 40)
    assert recipe_synthesis(back.recipe) == CFG
    plain = decode_request(encode_request(_request(None)))
    assert plain.synth_step is None
    assert recipe_synthesis(recipe_json(NetworkConfig(), TrainConfig.cpu())) is None


def test_bank_round_at_a_site_without_flair(
    flairless_site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, object]] = []

    def train_bank(*args: object, **kwargs: object) -> synth_train.BankResult:
        calls.append({"present": list(args[3]), **kwargs})  # type: ignore[call-overload]
        return bank_stand_in.train_bank(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(synth_train, "train_bank", train_bank)
    monkeypatch.setattr(synth_validate, "validate_bank", bank_stand_in.validate_bank)
    ws = tmp_path / "ws"
    req = _request(SynthStep("bank", None, 5))
    reply = run_task("site1", flairless_site, req, workspace=ws, min_summary_cases=1)
    assert calls == [{"present": ["t1", "t1ce", "t2"], "phase": "bank", "modality": None,
                      "steps": 5, "seed": 7, "workspace": ws, "rnd": 2}]  # fmt: skip
    assert set(reply.validation) == {"t1", "t1ce", "t2"}
    assert {m for s in reply.validation.values() for m in s} == {"ssim", "psnr", "mae"}
    assert reply.weights is not None and list(reply.weights) == list(req.weights)
    changed = {param_group(k) for k, v in reply.weights.items()
               if not np.array_equal(v, req.weights[k])}  # fmt: skip
    assert changed == {"bank:t1", "bank:t1ce", "bank:t2"}
    assert reply.optimizer_state is None and reply.hidden is None
    assert list(ws.glob("discriminators_*.npz"))  # they stay in the workspace
