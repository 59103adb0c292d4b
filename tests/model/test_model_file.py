"""The released-model file: round trip and clear refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from modelkit import TINY, TINY_ROI

from fedseg.errors import FedsegError
from fedseg.model.model_file import ModelFile, load_model, save_model, weights_hash
from fedseg.model.registry import build_network
from fedseg.model.weights import get_weights


def _tiny_file(seed: int = 0) -> ModelFile:
    torch.manual_seed(seed)
    return ModelFile(TINY, get_weights(build_network(TINY)), TINY_ROI, meta={"round": 3})


def test_round_trip(tmp_path: Path) -> None:
    mf = _tiny_file()
    loaded = load_model(save_model(tmp_path / "m.pt", mf))
    assert loaded.network == TINY and loaded.roi == TINY_ROI and loaded.meta == {"round": 3}
    assert list(loaded.weights) == list(mf.weights)
    assert weights_hash(loaded.weights) == weights_hash(mf.weights)
    assert weights_hash(_tiny_file(seed=1).weights) != weights_hash(mf.weights)
    x = torch.randn(1, 4, 16, 16, 16)
    with torch.no_grad():
        a = build_network(TINY)
        a.load_state_dict({k: torch.from_numpy(v) for k, v in mf.weights.items()})
        np.testing.assert_allclose(loaded.build()(x).numpy(), a.eval()(x).numpy(), atol=1e-6)


def test_refuses_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(FedsegError, match="model file not found"):
        load_model(tmp_path / "absent.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file at all")
    with pytest.raises(FedsegError, match="not a fedseg model file"):
        load_model(junk)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": get_weights(build_network(TINY))}, other)  # a bare checkpoint
    with pytest.raises(FedsegError, match="not a fedseg model file"):
        load_model(other)


def test_refuses_wrong_regions_and_damaged_payload(tmp_path: Path) -> None:
    mf = _tiny_file()
    mf.regions = ("WT", "TC", "ET")
    with pytest.raises(FedsegError, match=r"regions \('WT', 'TC', 'ET'\), fedseg expects"):
        load_model(save_model(tmp_path / "swapped.pt", mf))
    path = save_model(tmp_path / "ok.pt", _tiny_file())
    payload = torch.load(path, weights_only=True)
    payload["network"]["depth"] = 99
    torch.save(payload, path)
    with pytest.raises(FedsegError, match="damaged fedseg model file"):
        load_model(path)
