"""`fedseg complete` and `fedseg sample`: use a trained generator (``fedseg-generator`` file,
the ``best.pt`` of a ``task: synthesis`` run) at a site or on phantom label maps."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedseg.data.cases import MODALITIES, Case, discover_cases
from fedseg.data.site_config import SITE_CONFIG_FILE, read_site_config
from fedseg.errors import FedsegError

console = Console(stderr=True)

#: completions drawn by ``fedseg complete --figure`` (one row each)
FIGURE_ROWS = 4


def _progress(what: str) -> Progress:
    return Progress(
        TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    )  # fmt: skip


def _modalities(data: Path, modality: list[str] | None) -> list[str]:
    if modality:
        bad = [m for m in modality if m not in MODALITIES]
        if bad:
            raise typer.BadParameter(f"{bad[0]}: use one of {', '.join(MODALITIES)}")
        return list(dict.fromkeys(modality))
    declared = read_site_config(data).absent_modalities
    if not declared:
        raise FedsegError(
            f"{data} declares no absent modality ({SITE_CONFIG_FILE}: absent_modalities); "
            "give --modality M to complete one anyway"
        )
    return declared


def _cases(data: Path, case_id: str | None) -> tuple[list[Case], int]:
    """The cases to complete and how many unlabelled ones were left out."""
    cases = discover_cases(data)
    if case_id is not None:
        chosen = [c for c in cases if c.case_id == case_id]
        if not chosen:
            raise FedsegError(f"no case {case_id} in {data}; `fedseg data check {data}` lists them")
        return chosen, 0
    labelled = [c for c in cases if c.label is not None]
    if not labelled:
        raise FedsegError(
            f"no labelled case in {data}: completion draws each image from the case's label map"
        )
    return labelled, len(cases) - len(labelled)


def complete(
    data: Path = typer.Argument(..., help="The site's data folder (BraTS 2021/2023 layout)."),
    generator: Path = typer.Option(..., "--generator", "-g", help="Generator file (.pt)."),
    case: str | None = typer.Option(None, "--case", help="Complete this case only."),
    modality: list[str] = typer.Option(
        None,
        "--modality",
        help="Modality to complete (repeatable; default: the site's "
        "absent_modalities in fedseg_site.yaml).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace earlier completions."),
    figure: Path | None = typer.Option(
        None, "--figure", help="PNG of label map and completed image for a few cases."
    ),
) -> None:
    """Write the modalities a site lacks as <case>_<m>.syn.nii.gz next to its real files,
    drawn by the generator from each case's label map (header-marked as synthetic)."""
    from fedseg.model.generator_file import load_generator
    from fedseg.synth.complete import check_trained, complete_case

    modalities = _modalities(data, modality)
    gf = load_generator(generator)
    check_trained(gf, modalities)  # before any case is touched
    cases, unlabelled = _cases(data, case)
    if figure is not None and not figure.name.endswith(".png"):
        raise typer.BadParameter("give a .png file name", param_hint="--figure")
    done: list[tuple[Case, dict[str, Path]]] = []
    skipped: dict[str, int] = {}
    with _progress(f"completing {', '.join(modalities)}") as progress:
        task = progress.add_task("cases", total=len(cases))
        for c in cases:
            result = complete_case(gf, c, modalities, overwrite=overwrite)
            if result.written:
                done.append((c, result.written))
            for m in result.skipped:
                skipped[m] = skipped.get(m, 0) + 1
            progress.advance(task)
    n_files = sum(len(w) for _, w in done)
    console.print(
        f"wrote {n_files} synthetic image(s) for {len(done)} case(s) of {data} "
        f"(generator {gf.weights_hash[:16]}; <case>_<m>.syn.nii.gz beside the real files)"
    )
    for m, n in skipped.items():
        console.print(f"{m}: {n} case(s) have a real image; left as they are")
    if unlabelled:
        console.print(f"{unlabelled} unlabelled case(s) left out: completion needs a label map")
    if figure is not None and done:
        out = _figure(figure, done[:FIGURE_ROWS])
        console.print(f"figure: {out}")


def _figure(out: Path, done: list[tuple[Case, dict[str, Path]]]) -> Path:
    import numpy as np

    from fedseg.data import nifti
    from fedseg.data.labels import to_brats2021
    from fedseg.synth.figures import CompletionRow, completion_figure

    rows = []
    for c, written in done:
        assert c.label is not None
        label = to_brats2021(nifti.load_array(c.label, dtype=np.int32), c.layout)
        for m, path in written.items():
            completed = nifti.load_array(path)
            rows.append(CompletionRow(c.case_id, m, label, completed, None, completed > 0))
    return completion_figure(rows[:FIGURE_ROWS], out)


def sample(
    generator: Path = typer.Option(..., "--generator", "-g", help="Generator file (.pt)."),
    labels: Path = typer.Option(
        ..., "--labels", help="Phantom label maps (fedseg data synth OUT --labels-only)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="New folder for the synthetic set."),
    cases: int | None = typer.Option(
        None, "--cases", min=1, help="Cases to draw (default: one per label map)."
    ),
    seed: int = typer.Option(0, "--seed", help="Which label maps are drawn."),
) -> None:
    """Make a releasable synthetic data set: every image drawn by the generator from label
    maps that are nobody's, labels copied, provenance.yaml beside them."""
    from fedseg.model.generator_file import load_generator
    from fedseg.synth.sample import check_sample_output, sample_dataset

    check_sample_output(out)
    gf = load_generator(generator)
    with _progress("sampling") as progress:
        task = progress.add_task("cases", total=cases)

        def advance(_: str) -> None:
            progress.advance(task)

        result = sample_dataset(
            gf, labels, out, n=cases, seed=seed, generator=generator.resolve(), on_case=advance
        )
    console.print(
        f"wrote {len(result.cases)} synthetic case(s) to {result.out} (generator "
        f"{gf.weights_hash[:16]}); provenance: {result.provenance}"
    )


def register(app: typer.Typer) -> None:
    app.command("complete")(complete)
    app.command("sample")(sample)
