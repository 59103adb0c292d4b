"""`fedseg data ...`: synthesize, check, split and show site data."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)
