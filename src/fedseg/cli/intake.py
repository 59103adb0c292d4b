"""`fedseg intake ...`: DICOM to de-identified NIfTI, harmonized preprocessing, DICOM SEG, PACS."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedseg.intake import require_intake

if TYPE_CHECKING:  # the intake modules need the `intake` extra: import them lazily
    from fedseg.intake.pacs import StudyQuery
    from fedseg.intake.preprocess import CaseResult

app = typer.Typer(no_args_is_help=True)
pacs_app = typer.Typer(no_args_is_help=True)
app.add_typer(
    pacs_app, name="pacs", help="Talk to a PACS: echo, find and retrieve studies, store results."
)
console = Console()


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _convert(dicom_dir: Path, out: Path, mapping: Path | None) -> None:
    require_intake()
    from fedseg.intake.config import load_mapping
    from fedseg.intake.dicom_to_nifti import convert_dicom

    cfg = load_mapping(mapping)
    with _progress() as progress:
        task = progress.add_task("converting studies", total=None)
        report = convert_dicom(
            dicom_dir,
            out,
            cfg,
            on_start=lambda n: progress.update(task, total=n),
            on_study=lambda o: progress.advance(task),
        )
    for line in report.lines():
        console.print(line, highlight=False, markup=False)
    console.print(
        f"{len(report.converted)} case(s) written to {out}; log in {out / 'intake_dicom.log'}"
        + (f"; linkage (site-private) in {cfg.linkage}" if cfg.linkage else ""),
        highlight=False,
    )


@app.command("dicom")
def dicom(
    dicom_dir: Path = typer.Argument(..., help="Folder with DICOM files (searched recursively)."),
    out: Path = typer.Option(..., "--out", help="Folder for the BraTS-2021 case folders."),
    mapping: Path | None = typer.Option(
        None, "--mapping", help="YAML with series rules and the pseudonym salt."
    ),
) -> None:
    """Convert each MR study to one de-identified case (<case>/<case>_{t1,t1ce,t2,flair})."""
    _convert(dicom_dir, out, mapping)


@app.command("classify")
def classify(
    dicom_dir: Path = typer.Argument(..., help="Folder with DICOM files (searched recursively)."),
    mapping: Path | None = typer.Option(
        None, "--mapping", help="YAML with series rules, parameter thresholds and the salt."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the verdicts as JSON."),
) -> None:
    """Dry run of `intake dicom`: what each series is taken as and why; writes nothing."""
    require_intake()
    import json

    from fedseg.intake.config import load_mapping
    from fedseg.intake.series_classifier import classify_folder

    report = classify_folder(dicom_dir, load_mapping(mapping))
    data = report.to_dict()
    if json_out:
        typer.echo(json.dumps(data, indent=2))
        return
    for study in data["studies"]:
        title = f"{study['study']}: {study['status']}"
        table = Table("series", "description", "taken as", "used", title=title)
        table.add_column("by", no_wrap=True)
        table.add_column("why")
        for s in study["series"]:
            table.add_row(
                str(s["number"] if s["number"] is not None else "?"),
                escape(s["description"]),
                s["taken_as"] or "-",
                s["used_as"] or "",
                s["source"],
                escape(s["reason"]),
            )
        console.print(table)
        for note in study["notes"]:
            console.print(f"  {note}", highlight=False, markup=False)
    complete = sum(s["status"] == "complete" for s in data["studies"])
    console.print(
        f"{complete} of {len(data['studies'])} stud{'y' if len(data['studies']) == 1 else 'ies'}"
        " complete (would be converted by `fedseg intake dicom`); nothing written"
        + (f"; {report.not_dicom} file(s) not DICOM instances" if report.not_dicom else ""),
        highlight=False,
    )
    if not report.pseudonyms:
        console.print(
            "studies are numbered: set the salt (--mapping or $FEDSEG_INTAKE_SALT) to see the"
            " case ids `intake dicom` will give them",
            highlight=False,
        )


@app.command("preprocess")
def preprocess(
    cases: Path = typer.Argument(..., help="Folder of NIfTI cases (BraTS layout)."),
    out: Path = typer.Option(..., "--out", help="Folder for the harmonized cases."),
    spacing: float | None = typer.Option(
        None, "--spacing", help="Isotropic output spacing in mm (default: the 1 mm BraTS grid)."
    ),
    brain_extractor: str = typer.Option(
        "atlas",
        "--brain-extractor",
        help="atlas (default: SRI24 brain mask), none, or a plug-in registered under the "
        "entry point group fedseg.brain_extractors (see fedseg.intake.brain_extraction).",
    ),
) -> None:
    """Co-register to T1Gd and SRI24, resample to the atlas grid, skull-strip; resumable."""
    require_intake()
    from fedseg.intake.config import PreprocessConfig
    from fedseg.intake.preprocess import preprocess_cases

    cfg = PreprocessConfig(spacing=spacing, brain_extractor=brain_extractor)
    with _progress() as progress:
        task = progress.add_task("harmonizing cases", total=None)

        def on_case(result: CaseResult) -> None:
            note = f" ({result.note})" if result.note else ""
            secs = f" {result.seconds:.1f} s" if result.seconds else ""
            progress.console.print(
                f"{result.case_id}: {result.status}{secs}{note}", highlight=False, markup=False
            )
            progress.advance(task)

        report = preprocess_cases(
            cases, out, cfg, on_start=lambda n: progress.update(task, total=n), on_case=on_case
        )
    console.print(
        f"{report.count('done')} done, {report.count('exists')} already there, "
        f"{report.count('skipped')} skipped, {report.count('failed')} failed; QC pictures in "
        f"{out}/<case>/intake/qc.png",
        highlight=False,
    )
    if report.count("failed"):
        raise typer.Exit(1)


@app.command("seg")
def seg(
    labels: Path = typer.Argument(..., help="Label map from `fedseg segment` (.nii.gz)."),
    case: Path = typer.Option(
        ..., "--case", help="The case folder it was segmented from (intake dicom or preprocess)."
    ),
    mapping: Path = typer.Option(
        ..., "--mapping", help="Mapping YAML of the intake (salt and `linkage:` folder)."
    ),
    model: list[Path] = typer.Option(
        ..., "--model", "-m", help="The model(s) `segment` used (ids recorded in the SEG)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="DICOM SEG file to write (.dcm)."),
) -> None:
    """Write a label map as a DICOM SEG on the source T1Gd series (for `intake pacs store`).

    The SEG references the series the case came from, on its grid, and carries the real
    patient's identifiers: it is for the site's own PACS only."""
    require_intake()
    from fedseg.intake.dicom_seg import seg_for_case, seg_written_line

    written, linkage = seg_for_case(labels, case, mapping, model, out)
    console.print(seg_written_line(written, linkage), highlight=False, markup=False)


def _query(
    patient_id: str, study_date: str, modality: str, series_description: str, study_uid: str
) -> StudyQuery:
    from pydantic import ValidationError

    from fedseg.errors import FedsegError
    from fedseg.intake.pacs import StudyQuery

    try:
        return StudyQuery(
            patient_id=patient_id,
            study_date=study_date,
            modality=modality,
            series_description=series_description,
            study_uid=study_uid,
        )
    except ValidationError as exc:
        raise FedsegError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None


_CONFIG = typer.Option(..., "--config", help="PACS YAML: calling_ae, peer host/port/ae_title.")
_PID = typer.Option("", "--patient-id", help="Patient ID (wildcards * ? allowed).")
_DATE = typer.Option("", "--date", help="Study date or range: YYYYMMDD[-YYYYMMDD].")
_MOD = typer.Option("", "--modality", help="Modality in study, e.g. MR.")
_DESC = typer.Option("", "--series-description", help="Series description, e.g. '*FLAIR*'.")
_UID = typer.Option("", "--study-uid", help="One StudyInstanceUID.")


@pacs_app.command("echo")
def pacs_echo(config: Path = _CONFIG) -> None:
    """C-ECHO: check that the PACS accepts us."""
    require_intake()
    from fedseg.intake.config import load_pacs_config
    from fedseg.intake.pacs import echo

    cfg = load_pacs_config(config)
    ms = echo(cfg)
    console.print(
        f"C-ECHO ok: {cfg.peer.ae_title}@{cfg.peer.host}:{cfg.peer.port} in {ms:.0f} ms",
        highlight=False,
    )


@pacs_app.command("find")
def pacs_find(
    config: Path = _CONFIG,
    patient_id: str = _PID,
    date: str = _DATE,
    modality: str = _MOD,
    series_description: str = _DESC,
    study_uid: str = _UID,
) -> None:
    """C-FIND: list the studies (and matching series) that fit the query."""
    require_intake()
    from fedseg.intake.config import load_pacs_config
    from fedseg.intake.pacs import find

    cfg = load_pacs_config(config)
    studies = find(cfg, _query(patient_id, date, modality, series_description, study_uid))
    table = Table("study date", "patient id", "modalities", "description", "series", "study uid")
    for s in studies:
        series = "; ".join(f"{x.number} {x.description}" for x in s.series)
        table.add_row(s.study_date, s.patient_id, s.modalities, s.description, series, s.study_uid)
    console.print(table)
    console.print(f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'} found")


@pacs_app.command("retrieve")
def pacs_retrieve(
    config: Path = _CONFIG,
    out: Path = typer.Option(..., "--out", help="Local DICOM folder (stays at the site)."),
    patient_id: str = _PID,
    date: str = _DATE,
    modality: str = _MOD,
    series_description: str = _DESC,
    study_uid: str = _UID,
    convert: Path | None = typer.Option(
        None, "--convert", help="Then run `intake dicom` on what came in, into this folder."
    ),
    mapping: Path | None = typer.Option(None, "--mapping", help="Mapping YAML for --convert."),
) -> None:
    """C-GET or C-MOVE the matching studies into a local DICOM folder (then convert)."""
    require_intake()
    from fedseg.errors import FedsegError
    from fedseg.intake.config import load_pacs_config
    from fedseg.intake.pacs import find, retrieve

    cfg = load_pacs_config(config)
    query = _query(patient_id, date, modality, series_description, study_uid)
    if query == type(query)():
        raise FedsegError("retrieve needs a query: give --patient-id, --date, --study-uid, ...")
    studies = find(cfg, query)
    if not studies:
        raise FedsegError("no study matches the query; try `fedseg intake pacs find` first")
    with console.status(f"retrieving {len(studies)} study(ies) by C-{cfg.retrieve.upper()}"):
        result = retrieve(cfg, studies, out)
    console.print(
        f"{result.received} instance(s) received into {out}"
        + (f"; {result.failed} failed at the PACS" if result.failed else ""),
        highlight=False,
    )
    if convert is not None:
        # The whole folder: studies converted on an earlier run are reported as "exists".
        _convert(out, convert, mapping)


@pacs_app.command("store")
def pacs_store(
    files: list[Path] = typer.Argument(..., help="DICOM files to send, e.g. a SEG."),
    config: Path = _CONFIG,
) -> None:
    """C-STORE files to the PACS (same AE titles and TLS as retrieve)."""
    require_intake()
    from fedseg.intake.config import load_pacs_config
    from fedseg.intake.pacs import store

    cfg = load_pacs_config(config)
    result = store(cfg, files)
    console.print(
        f"C-STORE ok: {result.stored} of {result.sent} file(s) stored at "
        f"{cfg.peer.ae_title}@{cfg.peer.host}:{cfg.peer.port}",
        highlight=False,
    )
