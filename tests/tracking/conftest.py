"""Run stores built by hand with RunStore: known curves, update sizes and checkpoints."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from fedseg.data.labels import REGIONS
from fedseg.model.summary import Summary
from fedseg.run_folder import PLAN_FILE
from fedseg.tracking.store import RunStore, SiteRound

#: Per-region offsets from a site's mean Dice (they average to 0 so "mean" is the series).
OFFSETS = {"ET": -0.06, "TC": 0.0, "WT": 0.06}

RunBuilder = Callable[..., Path]


def build_run(
    run: Path,
    mean_dice: dict[str, Sequence[float]],
    *,
    region_dice: dict[str, dict[str, Sequence[float]]] | None = None,
    std: float = 0.1,
    n_val: dict[str, int] | None = None,
    n_train: dict[str, int] | None = None,
    update_distance: dict[str, Sequence[float]] | None = None,
    checkpoints: bool = False,
) -> Path:
    """A finished run: model rounds 0..L-1 validated at every site (L = series length).

    Round r (1..L-1) validates model r-1 (as the federation does) and the last model is
    validated after the last round. ``region_dice[site][region]`` overrides the offsets.
    """
    run.mkdir(parents=True, exist_ok=True)
    sites = sorted(mean_dice)
    length = len(next(iter(mean_dice.values())))
    with RunStore(run) as store:
        store.meta.set_planned_rounds(length - 1)
        for mr in range(length):
            rnd = mr + 1
            if rnd <= length - 1:
                store.start_round(rnd)
            for site in sites:
                nv = (n_val or {}).get(site, 10)
                summaries = {}
                for g in REGIONS:
                    if region_dice and site in region_dice and g in region_dice[site]:
                        v = region_dice[site][g][mr]
                    else:
                        v = mean_dice[site][mr] + OFFSETS[g]
                    summaries[g] = {
                        "dice": Summary(float(v), std, nv),
                        "hd95": Summary(20.0 * (1 - v), 5.0, nv),
                    }
                store.record_validation(mr, site, summaries)
                if rnd <= length - 1:
                    dist = update_distance[site][rnd - 1] if update_distance else 1.0
                    store.record_site_round(
                        SiteRound(
                            rnd,
                            site,
                            "ok",
                            n_train=(n_train or {}).get(site, 40),
                            n_val=nv,
                            train_loss=0.5 - 0.01 * rnd,
                            wall_s=3.0,
                            update_norm=1.5,
                            update_distance=float(dist),
                        )
                    )
            if rnd <= length - 1:
                store.finish_round(rnd, n_sites=len(sites))
        if checkpoints:
            from fedseg.model.config import NetworkConfig
            from fedseg.model.model_file import ModelFile, save_model
            from fedseg.model.registry import build_network
            from fedseg.model.weights import get_weights

            cfg = NetworkConfig(base_filters=2, depth=1)
            for mr in range(length):
                net = build_network(cfg)
                path = save_model(
                    run / "checkpoints" / f"round_{mr:04d}.pt",
                    ModelFile(
                        network=cfg,
                        weights=get_weights(net),
                        roi=(16, 16, 16),
                        meta={"model_round": mr},
                    ),
                )
                # relative paths are allowed in the store; use both forms
                store.record_checkpoint(mr, path if mr % 2 else path.relative_to(run))
    return run


def write_plan(run: Path, sites: Sequence[str], more: str = "") -> Path:
    """``<run>/plan.yaml`` naming ``sites`` (no data folders, as in a deployment) plus the
    YAML text ``more`` (other plan keys)."""
    lines = ["sites:", *(f"  {s}: {{}}" for s in sites), more]
    path = run / PLAN_FILE
    path.write_text("\n".join(lines))
    return path


def noisy(base: Sequence[float], sigma: float, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return [float(b + rng.normal(0, sigma)) for b in base]


def rising(length: int, start: float = 0.2, end: float = 0.8) -> list[float]:
    """A saturating learning curve from ``start`` to about ``end``."""
    x = np.arange(length)
    return [float(start + (end - start) * (1 - np.exp(-v / 4))) for v in x]


@pytest.fixture
def make_run(tmp_path: Path) -> RunBuilder:
    counter = iter(range(1000))

    def _make(mean_dice: dict[str, Sequence[float]], **kw: object) -> Path:
        return build_run(tmp_path / f"run{next(counter)}", mean_dice, **kw)  # type: ignore[arg-type]

    return _make


CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip


def chromium_binary() -> str:
    import shutil

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium not installed (apt-get install -y chromium; CI installs it)")
    return exe


def chromium(page: Path, tmp: Path, *args: str) -> str:
    """Run headless Chromium on a local file; returns stdout (the DOM for --dump-dom)."""
    import subprocess

    tmp.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}", *args,
         page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout
