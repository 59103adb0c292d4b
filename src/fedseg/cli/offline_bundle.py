"""`fedseg offline-bundle`: an installation folder (wheels, atlas, installer) for the roles."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console(stderr=True)


def offline_bundle(
    out: Path = typer.Argument(..., help="New (or empty) folder to write the bundle into."),
    roles: str = typer.Option(
        "site,coordinator,user",
        "--roles",
        help="Comma-separated roles the machines will play: site, coordinator, user.",
    ),
    torch_index: str | None = typer.Option(
        None,
        "--torch-index",
        help="Package index for torch (e.g. PyTorch's CUDA index for GPU sites); default: the "
        "CPU build from the configured index.",
    ),
) -> None:
    """Write every wheel the roles need, the SRI24 atlas and install.sh into OUT; copy OUT
    to a machine without a network and run `bash OUT/install.sh`."""
    from fedseg.offline_bundle import INSTALLER, build_bundle, bundle_size

    wanted = [r.strip() for r in roles.split(",") if r.strip()]
    with console.status("bundling") as status:

        def step(text: str) -> None:
            status.update(f"bundling: {text}")
            console.print(f"[dim]{text}[/]", highlight=False)

        manifest = build_bundle(out, wanted, torch_index=torch_index, step=step)
    extras = ",".join(manifest.extras) or "none"
    console.print(
        f"wrote {out}: {manifest.wheels} wheels ({bundle_size(out) / 2**20:.0f} MB; "
        f"{manifest.torch_wheel}; extras {extras}); on the offline machine: "
        f"bash {out / INSTALLER} [VENV_DIR]",
        highlight=False,
        soft_wrap=True,
    )
