"""The generator's training unit (``synth.train.train_bank``): seconds per step and peak
memory for the pre-training and bank phases, and what a round of steps buys in
brain-masked SSIM on the training cases (``synth.validate.validate_bank``).

Data: ``fedseg data synth`` cases (one site, ``--spacing`` mm, written to a temp folder).
Recipe: ``SynthesisConfig()`` (the CPU default: 2D 64 x 64 slices, G base 16 depth 3,
D 2 layers 16 channels, batch 8), or ``--spatial-dims 3`` (G base 8, 64 x 64 x 40 patches,
batch 1); ``--base-filters``/``--size``/``--batch`` override. A step is one batch through
G and, in the bank phase, one discriminator per modality (G step + D step, every present
modality). Each phase runs ``--steps`` steps twice, once for ``--warm`` (first-step costs:
MONAI imports, allocator) and once timed; ``s/step`` = timed wall / steps (data loading of
the cases included, as a site's round pays it). Peak RSS is the process's (``ru_maxrss``).

    python benchmarks/bank_step.py                        # CPU recipe, 20 steps per phase
    python benchmarks/bank_step.py --steps 2 --cases 1 --base-filters 4 --size 32  # smoke
    python benchmarks/bank_step.py --spatial-dims 3 --steps 5
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fedseg.data.cases import MODALITIES, discover_cases
from fedseg.data.synth import SynthConfig, generate_dataset
from fedseg.model.generator import GeneratorConfig, new_generator_weights
from fedseg.synth.config import SynthDataConfig, SynthesisConfig
from fedseg.synth.train import train_bank
from fedseg.synth.validate import validate_bank


def recipe(args: argparse.Namespace) -> SynthesisConfig:
    base = SynthesisConfig()
    dims = args.spatial_dims
    gen = GeneratorConfig(
        spatial_dims=dims,
        base_filters=args.base_filters or (16 if dims == 2 else 8),
        depth=args.depth,
    )
    data: dict = {"batch_size": args.batch or (8 if dims == 2 else 1)}
    if args.size:
        key = "slice_size" if dims == 2 else "patch_size"
        data[key] = (args.size,) * 2 if dims == 2 else (args.size, args.size, 40)
    return base.model_copy(update={"generator": gen, "data": SynthDataConfig(**data)})


def mean_ssim(cfg: SynthesisConfig, weights: dict, cases: list) -> float:
    results = validate_bank(cfg, weights, cases, MODALITIES)
    return float(np.mean([r.metrics[m]["ssim"] for r in results for m in MODALITIES]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spatial-dims", type=int, choices=(2, 3), default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warm", type=int, default=1, help="untimed steps first, per phase")
    p.add_argument("--cases", type=int, default=4)
    p.add_argument("--spacing", type=float, default=4.0)
    p.add_argument("--base-filters", type=int, default=0, help="0: the recipe's")
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--size", type=int, default=0, help="slice (2D) / patch x, y (3D); 0: recipe")
    p.add_argument("--batch", type=int, default=0, help="0: the recipe's")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = recipe(args)
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        generate_dataset(
            Path(tmp), SynthConfig(sites=1, cases_per_site=args.cases, seed=5, spacing=args.spacing)
        )
        cases = discover_cases(Path(tmp) / "site1")
        w0 = new_generator_weights(cfg.generator, 0)
        table = Table(title=f"train_bank, {args.spatial_dims}D, {len(cases)} cases")
        for col in ("phase", "steps", "s/step", "G loss first->last", "SSIM before->after"):
            table.add_column(col)
        before = mean_ssim(cfg, w0, cases)
        for phase, modality in (("pretrain", "t1"), ("bank", None)):

            def run(steps: int, phase: str = phase, modality: str | None = modality):
                return train_bank(cfg, w0, cases, MODALITIES, phase=phase, modality=modality,
                                  steps=steps, seed=0, workspace=None, rnd=1)  # fmt: skip

            run(args.warm)
            t0 = time.perf_counter()
            res = run(args.steps)
            per_step = (time.perf_counter() - t0) / args.steps
            after = mean_ssim(cfg, res.weights, cases)
            table.add_row(
                phase,
                str(args.steps),
                f"{per_step:.3f}",
                f"{res.losses[0]:.3f} -> {res.losses[-1]:.3f}",
                f"{before:.3f} -> {after:.3f}",
            )
        console.print(table)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        console.print(f"peak RSS {rss:.0f} MB, torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
