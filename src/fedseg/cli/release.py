"""`fedseg release`: a model file as a MONAI bundle a clinic runs without fedseg."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from fedseg.errors import FedsegError

console = Console(stderr=True)


def release(
    model: Path = typer.Argument(
        ..., help="Model file (.pt), or a `fedseg select` folder holding one model."
    ),
    out: Path = typer.Argument(..., help="Bundle folder to write (new, or empty)."),
    labels: str = typer.Option(
        "brats2021",
        "--labels",
        help="Label values the bundle writes by default: brats2021 (ET 4) or brats2023 (ET 3).",
    ),
    version: str = typer.Option("1.0.0", "--version", help="The bundle's version (metadata)."),
) -> None:
    """Write MODEL as a MONAI bundle: `python -m monai.bundle run` then segments a case on a
    CPU into the label map `fedseg segment` writes with MODEL (MONAI, torch, nibabel needed)."""
    from fedseg.model.monai_bundle import write_monai_bundle
    from fedseg.tracking.selection import expand_selection

    files, _ = expand_selection([model], "mean")
    if len(files) != 1:
        raise FedsegError(
            f"{model} holds {len(files)} models; a bundle holds one model: release a model "
            "file, or segment the ensemble with `fedseg segment -m`"
        )
    written = write_monai_bundle(files[0], out, labels=labels, version=version)
    console.print(
        f"wrote MONAI bundle {written}; run it with: python -m monai.bundle run --config_file "
        f"{written}/configs/inference.json --bundle_root {written} --case_dir CASE --output_dir OUT"
    )
