"""`fedseg data ...`: synthesize, check, split and show site data."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from fedseg.data.checks import DatasetReport
    from fedseg.data.labels import Layout

app = typer.Typer(no_args_is_help=True)

#: Above this many sites `fedseg data synth` prints one summary line, not one per site.
MANY_SITES = 12


# --- fedseg data check / fedseg data split ---------------------------------------------------
# Imports are local to each command so that `fedseg --help` stays fast.


@app.command("check")
def check_cmd(
    root: Path = typer.Argument(
        ..., help="Site folder: BraTS case folders or an MSD Task01 folder."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print a machine-readable JSON report."),
    layout: str | None = typer.Option(
        None, "--layout", help="brats2021, brats2023 or msd (default: detected from file names)."
    ),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Cases checked in parallel."),
) -> None:
    """Check every case (files, grids, values, labels).

    A modality the site declares absent in ROOT/fedseg_site.yaml (absent_modalities) is one
    note, not an error; a generator-made <case>_<m>.syn.nii.gz counts as the image.
    Exit status: 0 when no case has an error (warnings allowed), 1 when some case has one,
    2 when the folder cannot be read.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from fedseg.data.cases import discover_cases
    from fedseg.data.checks import DatasetReport, iter_checks, site_notes

    cases = discover_cases(root, _parse_layout(layout))
    reports = []
    progress = Progress(
        TextColumn("checking"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[case]}"),
        console=Console(stderr=True),
        transient=True,
    )
    with progress:
        task = progress.add_task("check", total=len(cases), case="")
        for report in iter_checks(cases, jobs):
            reports.append(report)
            progress.update(task, advance=1, case=report.case_id)
    result = DatasetReport.from_cases(root, cases[0].layout, reports, site_notes(root, cases))
    if json_out:
        typer.echo(result.model_dump_json(indent=2))
    else:
        _print_check_report(result, Console(highlight=False))
    raise typer.Exit(0 if result.passed else 1)


@app.command("split")
def split_cmd(
    root: Path = typer.Argument(..., help="Site folder holding the cases."),
    seed: int | None = typer.Option(None, "--seed", help="Hash seed of a new split (default 0)."),
    val_fraction: float | None = typer.Option(
        None, "--val-fraction", help="Fraction of cases in validation (default 0.2)."
    ),
    split_file: Path | None = typer.Option(
        None, "--file", help="Where the split file lives (default ROOT/fedseg_split.json)."
    ),
) -> None:
    """Write or update the site's persistent train/validation split; existing cases never move."""
    from rich.console import Console

    from fedseg.data.splits import make_split

    split, changes = make_split(root, seed=seed, val_fraction=val_fraction, split_file=split_file)
    console = Console(highlight=False)
    verb = "created" if changes.created else ("updated" if changes.changed else "unchanged")
    console.print(
        f"{split.path}: {verb}; {len(split.train)} train, {len(split.val)} validation "
        f"(seed {split.seed}, val-fraction {split.val_fraction})",
        soft_wrap=True,
    )
    if not changes.created:
        for label, ids in (
            ("added to train", changes.added_train),
            ("added to validation", changes.added_val),
            ("back from gone (old side kept)", changes.returned),
            ("not on disk anymore (kept as gone)", changes.removed),
        ):
            if ids:
                console.print(f"  {label}: {', '.join(ids)}")
    if changes.skipped:
        console.print(
            f"  [yellow]skipped[/] (incomplete or unlabelled): {', '.join(changes.skipped)}"
        )


@app.command("cache-clear")
def cache_clear_cmd(
    root: Path = typer.Argument(..., help="Site folder whose case cache to remove."),
) -> None:
    """Remove the site's cache of prepared training cases (ROOT/.fedseg/cache).

    Training fills it again (one decompression and normalisation per case); run this to
    free the disk space, e.g. after cases were removed. Run workspaces are left alone.
    """
    from fedseg.errors import FedsegError
    from fedseg.train.case_cache import cache_folder, clear_cache

    if not root.is_dir():
        raise FedsegError(f"{root}: not a folder; give the site's data folder")
    entries, size = clear_cache(root)
    typer.echo(f"{cache_folder(root)}: removed {entries} cached case(s), {size / 2**20:.1f} MB")


def _parse_layout(value: str | None) -> Layout | None:
    from fedseg.data.labels import Layout
    from fedseg.errors import FedsegError

    if value is None:
        return None
    try:
        return Layout(value.lower())
    except ValueError:
        raise FedsegError(
            f"unknown layout {value!r}; use one of {', '.join(x.value for x in Layout)}"
        ) from None


def _print_check_report(report: DatasetReport, console: Console) -> None:
    """Problems per case (errors first), then one summary line."""
    from rich.table import Table

    bad = [r for r in report.cases if r.problems]
    if bad:
        table = Table(show_header=True, header_style="bold")
        for col in ("case", "severity", "code", "message"):
            table.add_column(col, overflow="fold")
        for r in sorted(bad, key=lambda r: (r.status != "error", r.case_id)):
            for p in r.problems:
                style = {"error": "red", "warning": "yellow"}.get(p.severity, "cyan")
                table.add_row(p.case_id, f"[{style}]{p.severity}[/]", p.code, p.message)
        console.print(table)
    for note in report.notes:
        console.print(f"[cyan]info[/] {note}", soft_wrap=True)
    total = len(report.cases)
    console.print(
        f"{report.root} ({report.layout.value}): {total} cases: "
        f"[green]{report.ok} ok[/], [yellow]{report.with_warnings} with warnings[/], "
        f"[red]{report.with_errors} with errors[/]",
        soft_wrap=True,
    )


@app.command("synth")
def synth(
    out: Path = typer.Argument(
        ..., help="Folder to write site1/, site2/, ... and synth.yaml into."
    ),
    sites: int | None = typer.Option(None, "--sites", min=1, help="Number of sites (default 3)."),
    cases_per_site: int | None = typer.Option(
        None, "--cases-per-site", min=1, help="Cases at every site (default 8)."
    ),
    cases: int | None = typer.Option(
        None, "--cases", min=1, help="Total cases, drawn over the sites by --sizes."
    ),
    sizes: str | None = typer.Option(
        None,
        "--sizes",
        help="How --cases is shared: equal (default), lognormal:SIGMA (e.g. lognormal:1.2: a "
        "few large sites, many with a handful), zipf:S; or a FILE of one count per line.",
    ),
    partition: Path | None = typer.Option(
        None,
        "--partition",
        help="FeTS challenge partition CSV (Partition_ID,Subject_ID): its institutions "
        "become sites inst<ID> with its subject ids as case names.",
    ),
    held_out: int = typer.Option(
        0, "--held-out", min=0, help="Sites drawn by the seed to hold out (synth.yaml held_out)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives identical files."),
    spacing: float = typer.Option(
        2.0, "--spacing", help="Voxel size in mm: 2 -> 120x120x78, 1 -> 240x240x155 (BraTS)."
    ),
    bad_site: list[int] = typer.Option(
        [], "--bad-site", help="Site number (1-based) with systematically wrong labels; repeatable."
    ),
    bad_kind: str = typer.Option(
        "eroded",
        "--bad-kind",
        help="How a bad site's labels are wrong: eroded, shifted, swapped, scramble.",
    ),
    hard_site: list[int] = typer.Option(
        [],
        "--hard-site",
        help="Site number with harder cases (smaller tumours, noisier and "
        "blurrier scanner), labels clean; repeatable.",
    ),
    scanner_site: list[int] = typer.Option(
        [],
        "--scanner-site",
        help="Site number on another scanner (3x intensity, 8 mm slices, "
        "strong bias, larger tumours), labels clean; repeatable.",
    ),
    profile: list[str] = typer.Option(
        [],
        "--profile",
        help="SITE:KEY=VALUE sets a field of the site's profile (see "
        "synth.yaml; VALUE may be 2x: twice the drawn value), e.g. site2:tumor_radius_mm=8; "
        "repeatable, applied after --hard-site/--scanner-site.",
    ),
    val_cases: list[str] = typer.Option(
        [],
        "--val-cases",
        help="SITE:N writes the site's split with exactly N validation "
        "cases (e.g. site4:2); repeatable.",
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="Processes generating cases."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing site folders."),
    missing: list[str] = typer.Option(
        [],
        "--missing",
        help="SITE:MODALITY (e.g. site2:flair) the site lacks: its files go to "
        "OUT/heldback/SITE/ and the site declares it absent (fedseg_site.yaml); repeatable.",
    ),
    labels_only: bool = typer.Option(
        False,
        "--labels-only",
        help="Write only label maps and brain masks (<case>_seg, <case>_brain): phantoms that "
        "belong to no patient, for `fedseg sample`.",
    ),
) -> None:
    """Write a synthetic multi-site BraTS data set (real anatomy, per-site scanners).

    OUT receives site1/, site2/, ... (one BraTS 2021 case folder per case) and synth.yaml
    (the config and every site's scanner profile, enough to repeat the data set).
    A heterogeneous federation for monitoring: e.g. --sites 5 --hard-site 2
    --scanner-site 3 --val-cases site4:2 --bad-site 5 --bad-kind shifted.
    The study's scale: --sites 71 --cases 600 --sizes lognormal:1.2 --held-out 6.
    """
    from pydantic import ValidationError
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from fedseg.data.synth import BadKind, SynthConfig, generate_dataset
    from fedseg.data.synth.generate import HELDBACK, prepare_output
    from fedseg.data.synth.presets import customized
    from fedseg.data.synth.sizes import few_validation_sites, synth_counts
    from fedseg.errors import FedsegError
    from fedseg.model.summary import MIN_SUMMARY_CASES

    kinds = [k.value for k in BadKind]
    if bad_kind not in kinds:
        raise FedsegError(f"--bad-kind {bad_kind}: choose one of {', '.join(kinds)}")
    lacking: dict[str, list[str]] = {}
    for item in missing:
        site, sep, modality = item.partition(":")
        if not sep or not site or not modality:
            raise FedsegError(f"--missing {item}: give SITE:MODALITY, e.g. site2:flair")
        lacking.setdefault(site, []).append(modality.lower())
    n_val: dict[str, int] = {}
    for item in val_cases:
        site, sep, count = item.partition(":")
        if not sep or not site or not count.strip().isdigit():
            raise FedsegError(f"--val-cases {item}: give SITE:N, e.g. site4:2")
        n_val[site] = int(count)
    counts = synth_counts(
        sites=sites,
        cases_per_site=cases_per_site,
        cases=cases,
        sizes=sizes,
        partition=partition,
        seed=seed,
    )
    try:
        config = SynthConfig(
            sites=counts.sites,
            cases_per_site=counts.cases_per_site,
            partition=counts.partition,
            held_out=held_out,
            seed=seed,
            spacing=spacing,
            bad_sites=bad_site,
            bad_kind=BadKind(bad_kind),
            missing=lacking,
            labels_only=labels_only,
            val_cases=n_val,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "options"
        raise FedsegError(f"invalid {where}: {err['msg'].removeprefix('Value error, ')}") from None
    config = customized(config, hard=hard_site, scanner=scanner_site, edits=profile)
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
    held = config.held_out_sites()
    what = "label-only cases" if labels_only else "cases"
    if len(result) > MANY_SITES:
        n = sorted(len(f) for f in result.values())
        typer.echo(
            f"{len(result)} sites, {sum(n)} {what} in {Path(out)}/{{{config.names_hint()}}}: "
            f"{n[0]}..{n[-1]} per site, median {n[len(n) // 2]}"
        )
    else:
        for site, folders in result.items():
            lacks = f" (lacks {', '.join(config.missing[site])})" if site in config.missing else ""
            tag = " (held out)" if site in held else ""
            typer.echo(f"{site}: {len(folders)} {what} in {Path(out) / site}{lacks}{tag}")
    few = [] if labels_only else few_validation_sites(config)
    if few:
        typer.echo(
            f"{len(few)} of {config.sites} sites have fewer than {MIN_SUMMARY_CASES} "
            f"validation cases: they train but send no validation summary"
        )
    if held:
        typer.echo(f"held-out sites (synth.yaml held_out): {', '.join(held)}")
    if config.missing:
        typer.echo(f"held-back images: {Path(out) / HELDBACK}")
    typer.echo(f"config and site profiles: {Path(out) / 'synth.yaml'}")


@app.command("partition")
def partition_cmd(
    csv_file: Path = typer.Argument(
        ..., help="FeTS challenge partition CSV (Partition_ID,Subject_ID)."
    ),
    cases: Path = typer.Option(
        ..., "--cases", help="Folder holding one case folder per subject id (real data)."
    ),
    out: Path = typer.Option(..., "--out", help="New or empty folder for the site folders."),
) -> None:
    """Lay out real cases into one site folder per institution of a partition file.

    OUT/inst<ID>/<subject> are symlinks to CASES/<subject> (nothing is copied); each
    OUT/inst<ID> is a site folder for `fedseg data check` and a site's data_dir.
    """
    from fedseg.data.partition import link_partition

    result = link_partition(csv_file, cases, out)
    n = sorted(len(v) for v in result.values())
    typer.echo(
        f"{out}: {len(result)} institution folders, {sum(n)} cases linked from {cases} "
        f"({n[0]}..{n[-1]} per site)"
    )


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
