"""``fedseg demo``: a small federation from nothing, in about ten minutes on a laptop CPU.

1. three synthetic sites (``fedseg.data.synth``); site3 is non-IID: another scanner
   (intensity scale, thick slices, strong bias field) and larger tumors;
2. a plan with a tiny network, written to ``<out>/plan.yaml``;
3. ``fedseg simulate`` over the real engine processes into ``<out>/run``;
4. the run report (``fedseg report``) when that verb is installed;
5. the best model segments a validation case of site1 into ``<out>/segmented``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from fedseg.data.splits import load_split, make_split
from fedseg.data.synth.config import SiteProfile, SynthConfig, draw_profiles
from fedseg.data.synth.generate import generate_dataset
from fedseg.data.synth.presets import other_scanner
from fedseg.errors import FedsegError
from fedseg.federation.commands.engine_run import RunResult
from fedseg.federation.commands.simulate import simulate
from fedseg.model.config import NetworkConfig
from fedseg.plan import PlanConfig, SiteConfig, save_plan
from fedseg.run_folder import PLAN_FILE, REPORT_FILE
from fedseg.train.config import TrainConfig

SPACING_MM = 4.0
#: 8 cases split 5 training : 3 validation, so that every site's validation summary
#: covers the default ``privacy.min_summary_cases`` (3) and the report keeps its curves.
CASES_PER_SITE = 8
VAL_FRACTION = 0.4


@dataclass(frozen=True)
class DemoResult:
    run: RunResult
    report: Path | None
    segmented: Path | None
    case: str | None


def demo_plan(data: Path, rounds: int) -> PlanConfig:
    """The demo's plan: 3 sites, FedAvg, an 8-filter depth-2 U-Net on 16^3 patches, two
    local epochs of 6 patches per case at Adam lr 5e-3 (enough to learn in minutes)."""
    return PlanConfig(
        name="fedseg-demo",
        sites={s: SiteConfig(data=data / s) for s in ("site1", "site2", "site3")},
        rounds=rounds,
        local_epochs=2,
        min_sites=2,
        round_timeout_s=900,
        connect_timeout_s=300,
        network=NetworkConfig(base_filters=8, depth=2),
        train=TrainConfig.cpu(
            lr=5e-3,
            patch_size=(16, 16, 16),
            patches_per_case=6,
            val_roi=(32, 32, 32),
            val_overlap=0.0,
            val_batch_size=4,
            cache_mb=256,
        ),
    )


def demo_profiles(seed: int = 0) -> list[SiteProfile]:
    """The demo's three site profiles: drawn from the seed, site3 on another scanner."""
    profiles = draw_profiles(3, seed, SPACING_MM)
    profiles[2] = other_scanner(profiles[2])
    return profiles


def make_demo_data(data: Path, seed: int = 0) -> None:
    """Three sites of synthetic cases; site3 differs in scanner and tumor size."""
    profiles = demo_profiles(seed)
    cfg = SynthConfig(
        sites=3, cases_per_site=CASES_PER_SITE, seed=seed, spacing=SPACING_MM, profiles=profiles
    )
    generate_dataset(data, cfg)
    for site in sorted(p for p in data.iterdir() if p.is_dir()):
        make_split(site, val_fraction=VAL_FRACTION)


def run_demo(out: Path, rounds: int = 6, console: Console | None = None,
             live: bool = True) -> DemoResult:  # fmt: skip
    console = console or Console(stderr=True)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FedsegError(f"{out} exists and is not empty: pick a new --out")
    data = out / "data"
    with console.status("writing three synthetic sites (site3 non-IID)"):
        make_demo_data(data)
    plan_path = save_plan(out / PLAN_FILE, demo_plan(data.resolve(), rounds))
    console.print(f"plan: {plan_path}")
    res = simulate(plan_path, out / "run", live=live, console=console)
    report = _report(res.run_dir, console)
    segmented, case = _segment(res, data / "site1", out / "segmented", console)
    return DemoResult(res, report, segmented, case)


def _fedseg(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedseg", *args], capture_output=True, text=True, check=False
    )


def _has_verb(verb: str) -> bool:
    return _fedseg(verb, "--help").returncode == 0


def _report(run: Path, console: Console) -> Path | None:
    if importlib.util.find_spec("fedseg.tracking.report") is None or not _has_verb("report"):
        console.print("[yellow]`fedseg report` is not installed: no HTML report[/]")
        return None
    res = _fedseg("report", str(run))
    if res.returncode != 0:
        console.print(f"[yellow]report failed:[/] {(res.stderr or res.stdout).strip()[-300:]}")
        return None
    html = run / REPORT_FILE
    return html if html.is_file() else None


def _segment(res: RunResult, site: Path, out: Path,
             console: Console) -> tuple[Path | None, str | None]:  # fmt: skip
    """Segment the first validation case of ``site`` with the best model."""
    if res.best_model is None:
        return None, None
    case = load_split(site).val[0]
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{case.case_id}_seg.nii.gz"
    with console.status(f"segmenting {case.case_id} with the best model"):
        if _has_verb("segment"):
            folder = case.folder or next(iter(case.images.values())).path.parent
            r = _fedseg(
                "segment", str(folder), "--model", str(res.best_model), "--out", str(target)
            )
            if r.returncode != 0:
                raise FedsegError(f"segmentation failed: {(r.stderr or r.stdout).strip()[-300:]}")
        else:
            _segment_inline(res.best_model, case, target)
    return target, case.case_id


def _segment_inline(model: Path, case: object, target: Path) -> None:
    """Segmentation with the model layer's functions, for builds without `fedseg segment`."""
    from fedseg.data import nifti
    from fedseg.data.cases import Case, load_case
    from fedseg.model.inference import predict_cropped
    from fedseg.model.model_file import load_model
    from fedseg.model.torch_backend import torch_predictor

    assert isinstance(case, Case)
    mf = load_model(model)
    vol = load_case(case, with_label=False)
    probs = predict_cropped(vol.image, torch_predictor(mf.build()), mf.roi, overlap=0.25)
    nifti.save(target, probs.labels(), vol.affine, label=True)
