"""`fedseg data ...`: synthesize, check, split and show site data."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("synth")
def synth(
    out: Path = typer.Argument(
        ..., help="Folder to write site1/, site2/, ... and synth.yaml into."
    ),
    sites: int = typer.Option(3, "--sites", min=1, help="Number of sites."),
    cases_per_site: int = typer.Option(8, "--cases-per-site", min=1, help="Cases per site."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives identical files."),
    spacing: float = typer.Option(
        2.0, "--spacing", help="Voxel size in mm: 2 -> 120x120x78, 1 -> 240x240x155 (BraTS)."
    ),
    bad_site: list[int] = typer.Option(
        [], "--bad-site", help="Site number (1-based) with systematically wrong labels; repeatable."
    ),
    bad_kind: str = typer.Option(
        "eroded", "--bad-kind", help="How a bad site's labels are wrong: eroded, shifted, swapped."
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="Processes generating cases."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing site folders."),
) -> None:
    """Write a synthetic multi-site BraTS data set (real anatomy, per-site scanners).

    OUT receives site1/, site2/, ... (one BraTS 2021 case folder per case) and synth.yaml
    (the config and every site's scanner profile, enough to repeat the data set).
    """
    from pydantic import ValidationError
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from fedseg.data.synth import BadKind, SynthConfig, generate_dataset
    from fedseg.data.synth.generate import prepare_output
    from fedseg.errors import FedsegError

    kinds = [k.value for k in BadKind]
    if bad_kind not in kinds:
        raise FedsegError(f"--bad-kind {bad_kind}: choose one of {', '.join(kinds)}")
    try:
        config = SynthConfig(
            sites=sites,
            cases_per_site=cases_per_site,
            seed=seed,
            spacing=spacing,
            bad_sites=bad_site,
            bad_kind=BadKind(bad_kind),
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "options"
        raise FedsegError(f"invalid {where}: {err['msg']}") from None
    config.site_profiles()  # reject bad site numbers before any work
    prepare_output(out, config, overwrite)
    total = sum(config.case_counts())
    shape = "x".join(str(n) for n in config.grid_shape())
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    ) as progress:
        task = progress.add_task(f"synth {shape} @ {spacing:g} mm", total=total)
        result = generate_dataset(
            out,
            config,
            lambda case: progress.update(task, advance=1, description=f"synth {case}"),
            workers=workers,
            overwrite=overwrite,
        )
    for site, folders in result.items():
        typer.echo(f"{site}: {len(folders)} cases in {Path(out) / site}")
    typer.echo(f"config and site profiles: {Path(out) / 'synth.yaml'}")


@app.command("show")
def show(
    case_dir: Path = typer.Argument(..., help="A case folder (or a site folder with --case)."),
    out: Path = typer.Option(Path("case.png"), "--out", "-o", help="PNG file to write."),
    case: str | None = typer.Option(None, "--case", help="Case id, when CASE_DIR holds several."),
) -> None:
    """Draw a case's four modalities and labels in three planes through the tumor (PNG).

    CASE_DIR is one case folder, or a folder of cases with --case naming one.
    """
    from fedseg.data.show import show_case

    typer.echo(f"wrote {show_case(case_dir, out, case)}")
