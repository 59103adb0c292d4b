"""The ``fedseg`` command. Each area registers its verbs here; errors print as one line."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from fedseg import __version__
from fedseg.errors import FedsegError

app = typer.Typer(
    name="fedseg",
    help="Federated learning for brain-tumor segmentation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()


def _register() -> None:
    # Imported here so that `fedseg --help` stays fast and each area owns its own verbs.
    from fedseg.cli import data as data_cli
    from fedseg.cli import evaluate as evaluate_cli
    from fedseg.cli import export as export_cli
    from fedseg.cli import segment as segment_cli

    app.add_typer(data_cli.app, name="data", help="Check, split, show and synthesize site data.")
    app.command("segment")(segment_cli.segment)
    app.command("evaluate")(evaluate_cli.evaluate)
    app.command("export")(export_cli.export)


def main() -> None:
    _register()
    try:
        app()
    except FedsegError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]; the run folder keeps what was done so far")
        sys.exit(130)
