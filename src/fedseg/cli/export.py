"""`fedseg export`: a model file as an OpenVINO model for fast CPU inference (FP32 or INT8)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from fedseg.errors import FedsegError
from fedseg.output_paths import check_output_folder

console = Console(stderr=True)


def export(
    model: Path = typer.Argument(..., help="Model file (.pt) to export."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write model.xml/.bin into."),
    fmt: str = typer.Option("openvino", "--format", help="Export format (only openvino)."),
    int8: bool = typer.Option(False, "--int8", help="Quantize to INT8 with accuracy control."),
    calibration: Path | None = typer.Option(
        None, "--calibration", help="Site folder whose validation cases calibrate INT8."
    ),
    max_drop: float = typer.Option(
        0.005, "--max-drop", min=0.0, max=1.0, help="Largest allowed drop of mean Dice (INT8)."
    ),
    max_cases: int = typer.Option(4, "--max-cases", min=1, help="Calibration cases at most."),
    precision: str = typer.Option(
        "f32", "--precision", help="OpenVINO CPU float precision for the non-INT8 parts: f32/bf16."
    ),
    activations: str = typer.Option(
        "symmetric",
        "--activations",
        help="INT8 activation quantization: symmetric (fastest on CPU) or asymmetric (try it "
        "if a very small network misses --max-drop).",
    ),
) -> None:
    """Export a model for CPU inference; `fedseg segment --model DIR` then uses it."""
    if fmt != "openvino":
        raise FedsegError(f"--format {fmt}: only 'openvino' is supported")
    if precision not in ("f32", "bf16"):
        raise FedsegError(f"--precision {precision}: use f32 or bf16")
    if activations not in ("symmetric", "asymmetric"):
        raise FedsegError(f"--activations {activations}: use symmetric or asymmetric")
    check_output_folder(out, "export folder")
    # Heavy imports (torch, OpenVINO, NNCF) only once the arguments are known to be valid.
    from fedseg.model.export import (
        ExportConfig,
        export_openvino,
        refuse_generator,
        require_openvino,
    )

    refuse_generator(model)
    try:
        require_openvino()
    except FedsegError as exc:
        # Printed here, escaped: the shared error printer would take "[openvino]" for markup.
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    config = ExportConfig(
        int8=int8,
        max_drop=max_drop,
        max_cases=max_cases,
        inference_precision="bf16" if precision == "bf16" else "f32",
        activations="asymmetric" if activations == "asymmetric" else "symmetric",
    )
    with console.status("exporting") as status:

        def step(text: str) -> None:
            status.update(text)
            console.print(f"[dim]{text}[/]", highlight=False)

        meta = export_openvino(model, out, config, calibration, step)
    line = f"wrote {out} ({meta.precision.upper()}, tile {'x'.join(map(str, meta.roi))})"
    if meta.calibration is not None:
        c = meta.calibration
        line += (
            f"; mean Dice on {len(c.cases)} calibration cases: FP32 {c.dice_fp32:.4f}, "
            f"INT8 {c.dice_int8:.4f} ({c.reverted_layers} layers kept in float)"
        )
    console.print(line, highlight=False, soft_wrap=True)
