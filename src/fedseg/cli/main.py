"""The ``fedseg`` command. Each area registers its verbs here; errors print as one line."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from fedseg import __version__
from fedseg.errors import FedsegError
from fedseg.output_paths import reason

app = typer.Typer(
    name="fedseg",
    help="Federated learning for brain-tumor segmentation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True, emoji=False)  # "site4:x:" is a message, not an emoji


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()


def _register() -> None:
    # Imported here so that `fedseg --help` stays fast and each area owns its own verbs.
    from fedseg.cli import compare_plans as compare_plans_cli
    from fedseg.cli import dashboard as dashboard_cli
    from fedseg.cli import data as data_cli
    from fedseg.cli import demo as demo_cli
    from fedseg.cli import deploy as deploy_cli
    from fedseg.cli import evaluate as evaluate_cli
    from fedseg.cli import export as export_cli
    from fedseg.cli import federate as federate_cli
    from fedseg.cli import intake as intake_cli
    from fedseg.cli import offline_bundle as offline_bundle_cli
    from fedseg.cli import pki as pki_cli
    from fedseg.cli import release as release_cli
    from fedseg.cli import runs as runs_cli
    from fedseg.cli import segment as segment_cli
    from fedseg.cli import synthesis as synthesis_cli
    from fedseg.cli import train as train_cli

    demo_cli.register(app)
    app.add_typer(data_cli.app, name="data", help="Check, split, show and synthesize site data.")
    app.command(name="train")(train_cli.train)
    app.command("segment")(segment_cli.segment)
    synthesis_cli.register(app)  # complete, sample (a trained generator)
    app.command("evaluate")(evaluate_cli.evaluate)
    app.command("export")(export_cli.export)
    app.command("offline-bundle")(offline_bundle_cli.offline_bundle)
    app.command("release")(release_cli.release)
    federate_cli.register(app)
    compare_plans_cli.register(app)
    app.add_typer(pki_cli.app, name="pki", help="Consortium CA, server certificate, site keys.")
    app.add_typer(deploy_cli.server_app, name="server", help="Run the aggregator (SuperLink).")
    app.add_typer(deploy_cli.site_app, name="site", help="Run a site (SuperNode).")
    app.add_typer(runs_cli.app)  # status, alarms, select, contributions, report, ...
    dashboard_cli.register(app)
    app.add_typer(
        intake_cli.app,
        name="intake",
        help="DICOM/PACS intake, preprocessing, DICOM SEG back to the PACS.",
    )


def main() -> None:
    _register()
    try:
        app()
    except FedsegError as exc:
        # escape: messages such as "pip install 'fedseg[openvino]'" are not rich markup
        err_console.print(
            f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        sys.exit(2)
    except OSError as exc:  # the file system said no where no check foresaw it: one line
        where = f"{exc.filename}: " if exc.filename else ""
        err_console.print(
            f"[bold red]error:[/] {escape(where + reason(exc))}", highlight=False, soft_wrap=True
        )
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]; the run folder keeps what was done so far")
        sys.exit(130)
