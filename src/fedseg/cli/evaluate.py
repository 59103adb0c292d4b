"""`fedseg evaluate`: per-case BraTS metrics of a model on a site's labelled cases."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedseg.cli.compute_options import (
    CHANNELS_LAST,
    COMPILE,
    DEVICE,
    PRECISION,
    compute_overrides,
)
from fedseg.data.labels import REGIONS
from fedseg.model.compute import ComputeConfig, check_device
from fedseg.model.evaluate import (
    CaseResult,
    evaluate_cases,
    select_cases,
    summarize_cases,
    write_metrics_csv,
)
from fedseg.model.metrics import METRICS
from fedseg.model.segmenter import ModelSet
from fedseg.output_paths import check_output_file

console = Console()


def evaluate(
    model: list[Path] = typer.Option(
        ...,
        "--model",
        "-m",
        help="Model file (.pt) or exported model (runs on the CPU in "
        "its own precision); repeat for an ensemble.",
    ),
    data: Path = typer.Option(..., "--data", "-d", help="The site's data folder."),
    split: str = typer.Option("val", help="val, train (the site's persistent split) or all."),
    out: Path = typer.Option(..., "--out", "-o", help="CSV of per-case metrics to write."),
    overlap: float = typer.Option(0.5, min=0.0, max=0.95, help="Sliding-window tile overlap."),
    device: str | None = DEVICE,
    precision: str | None = PRECISION,
    channels_last: bool | None = CHANNELS_LAST,
    compile_: bool | None = COMPILE,
) -> None:
    """Segment each case, score Dice/Jaccard/HD95/sensitivity/specificity per region.

    Runs on CUDA when present, else the CPU, in fp32 unless --device/--precision say
    otherwise; metrics are computed in float32 either way."""
    compute = compute_overrides(device, precision, channels_last, compile_).apply(ComputeConfig())
    check_device(compute.device)  # a missing GPU is refused before any work
    check_output_file(out, "metrics CSV")
    models = ModelSet.from_files(model, compute=compute)
    cases = select_cases(data, split)
    with Progress(
        TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.description}"), console=console, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("", total=len(cases))

        def done(result: CaseResult) -> None:
            progress.update(task, advance=1, description=result.case_id)

        results = evaluate_cases(cases, models, overlap=overlap, on_case=done)
    write_metrics_csv(results, out)
    summaries = summarize_cases(results)
    table = Table(title=f"mean over {len(results)} cases ({split}); HD95 in mm")
    table.add_column("region")
    for m in METRICS:
        table.add_column(m, justify="right")
    for r in REGIONS:
        table.add_row(r, *(f"{summaries[r][m].mean:.4f}" for m in METRICS))
    console.print(table)
    console.print(f"wrote {out}")
