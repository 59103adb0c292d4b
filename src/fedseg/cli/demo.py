"""`fedseg demo --out DIR`: synthetic sites, a short federation, report, one segmented case."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(
        Path("demo"), "--out", help="New folder for everything the demo makes."
    ),
    rounds: int = typer.Option(6, "--rounds", min=1, help="Federated rounds."),
    no_live: bool = typer.Option(False, "--no-live", help="No live table (logs only)."),
) -> None:
    """Make three synthetic sites (one non-IID), federate them, report, segment a case."""
    from rich.console import Console

    from fedseg.federation.commands.demo import run_demo

    res = run_demo(out, rounds=rounds, live=not no_live)
    c = Console()
    c.print(
        f"run folder:     {res.run.run_dir} ({res.run.rounds_done} rounds, {res.run.wall_s:.0f} s)"
    )
    if res.run.best_model is not None:
        c.print(
            f"best model:     {res.run.best_model} ({res.run.score_label} {res.run.best_score:.3f})"
        )
    if res.report is not None:
        c.print(f"report:         {res.report}")
    if res.segmented is not None:
        c.print(f"segmented case: {res.segmented} ({res.case})")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
