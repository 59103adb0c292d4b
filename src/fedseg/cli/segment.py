"""`fedseg segment`: segment one whole case with a released model (or an ensemble)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedseg.cli.compute_options import (
    CHANNELS_LAST,
    COMPILE,
    DEVICE,
    PRECISION,
    compute_overrides,
)
from fedseg.data.cases import MODALITIES, Case, load_case
from fedseg.data.labels import Layout
from fedseg.errors import FedsegError
from fedseg.model.compute import ComputeConfig, check_device
from fedseg.model.segmenter import (
    Combine,
    ModelSet,
    Segmentation,
    check_output,
    output_labels,
    resolve_case,
    segment_volumes,
    write_segmentation,
)
from fedseg.output_paths import check_output_folder
from fedseg.tracking.selection import expand_selection

console = Console(stderr=True)


def segment(
    inputs: list[Path] = typer.Argument(
        ..., help="One case folder (BraTS 2021/2023 or MSD layout) or four files T1 T1Gd T2 FLAIR."
    ),
    model: list[Path] = typer.Option(
        ...,
        "--model",
        "-m",
        help="Model file (.pt), exported model (folder or .xml) or a `fedseg select` folder; "
        "repeat for an ensemble. An exported model runs on the CPU in its own precision "
        "(--device/--precision/--channels-last/--compile apply to .pt models).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Label map to write (.nii.gz)."),
    probabilities: Path | None = typer.Option(
        None, "--probabilities", help="Folder for the ET/TC/WT probability maps (float32)."
    ),
    overlap: float = typer.Option(0.5, min=0.0, max=0.95, help="Sliding-window tile overlap."),
    combine: str = typer.Option(
        "mean", help="mean: average the models; triplet: ET, TC, WT from models 1, 2, 3."
    ),
    batch_size: int = typer.Option(1, min=1, help="Tiles per forward pass."),
    generator: Path | None = typer.Option(
        None,
        "--generator",
        help="Generator file (fedseg-generator): a case lacking a modality is segmented in "
        "two passes (absent channel zero, complete it from that label map, segment again); "
        "outside the ModalityBank paper.",
    ),
    labels: str = typer.Option(
        "brats2021",
        "--labels",
        help="Label values written: brats2021 (NCR 1, ED 2, ET 4) or brats2023 (ET 3).",
    ),
    dicom_seg: Path | None = typer.Option(
        None,
        "--dicom-seg",
        help="Also write the result as a DICOM SEG on the source series (a case from `fedseg "
        "intake`; needs --mapping). It carries the patient's identifiers: for the site's PACS.",
    ),
    mapping: Path | None = typer.Option(
        None, "--mapping", help="The intake's mapping YAML (salt, `linkage:`), for --dicom-seg."
    ),
    device: str | None = DEVICE,
    precision: str | None = PRECISION,
    channels_last: bool | None = CHANNELS_LAST,
    compile_: bool | None = COMPILE,
) -> None:
    """Segment a case into BraTS 2021 labels (ET 4, NCR 1, ED 2; --labels brats2023: ET 3) on
    the input's own grid.

    Runs on CUDA when present, else the CPU, in fp32 unless --device/--precision say
    otherwise (a model file carries no compute choices)."""
    compute = compute_overrides(device, precision, channels_last, compile_).apply(ComputeConfig())
    check_device(compute.device)  # a missing GPU is refused before any work
    if combine not in ("mean", "triplet"):
        raise typer.BadParameter("use 'mean' or 'triplet'", param_hint="--combine")
    mode: Combine = "triplet" if combine == "triplet" else "mean"
    convention = output_labels(labels)
    check_output(out)
    if probabilities is not None:
        check_output_folder(probabilities, "--probabilities folder")
    if (dicom_seg is None) != (mapping is None):
        raise FedsegError("--dicom-seg and --mapping go together: give both (or neither)")
    case = resolve_case(inputs, allow_lacking=generator is not None)
    if dicom_seg is not None:
        from fedseg.intake import require_intake

        require_intake()
        if case.folder is None:
            raise FedsegError("--dicom-seg needs the case folder as input, not four files")
        from fedseg.intake.dicom_seg import case_linkage

        case_linkage(case.folder, mapping, dicom_seg)  # the way back exists: before any work
    files, mode = expand_selection(model, mode)  # a `fedseg select` folder -> its models
    models = ModelSet.from_files(files, mode, compute=compute)
    lacking = tuple(m for m in MODALITIES if m not in case.images)
    if lacking:
        assert generator is not None  # resolve_case refused the case otherwise
        seg = _segment_two_pass(case, models, generator, lacking, overlap, batch_size)
    else:
        seg = _segment(case, models, overlap, batch_size)
    _write(seg, out, probabilities, convention)
    if dicom_seg is not None and mapping is not None and case.folder is not None:
        from fedseg.intake.dicom_seg import seg_for_case, seg_written_line

        written, linkage = seg_for_case(out, case.folder, mapping, list(model), dicom_seg)
        console.print(seg_written_line(written, linkage), highlight=False, markup=False)


def _segment(case: Case, models: ModelSet, overlap: float, batch_size: int) -> Segmentation:
    """One pass over the case's tiles, with a progress bar."""
    with Progress(
        TextColumn(f"segmenting {case.case_id}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console, transient=True,
    ) as progress:  # fmt: skip
        volumes = load_case(case, with_label=False)
        task = progress.add_task("tiles", total=models.tile_count(volumes.image, overlap))

        def advance(n: int) -> None:
            progress.advance(task, n)

        return segment_volumes(
            volumes, models, overlap=overlap, batch_size=batch_size, on_tiles=advance
        )


def _segment_two_pass(
    case: Case,
    models: ModelSet,
    generator: Path,
    lacking: tuple[str, ...],
    overlap: float,
    batch_size: int,
) -> Segmentation:
    from fedseg.model.generator_file import load_generator
    from fedseg.synth.complete import check_trained
    from fedseg.synth.two_pass import segment_completing

    gf = load_generator(generator)
    check_trained(gf, lacking)  # before any work
    with Progress(
        TextColumn(f"segmenting {case.case_id} (two passes, completing {', '.join(lacking)})"),
        BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("tiles", total=None)

        def advance(n: int) -> None:
            progress.advance(task, n)

        result = segment_completing(
            case, models, gf, overlap=overlap, batch_size=batch_size, on_tiles=advance
        )
    console.print(
        f"{case.case_id}: {', '.join(result.completed)} completed by generator "
        f"{gf.weights_hash[:16]} from the first pass's label map (two-pass segmentation, "
        "outside the ModalityBank paper)"
    )
    return result.segmentation


def _write(seg: Segmentation, out: Path, probabilities: Path | None, labels: Layout) -> None:
    written = write_segmentation(seg, out, probabilities, labels=labels)
    counts = {v: int((seg.labels == v).sum()) for v in (1, 2, 4)}  # BraTS 2021 values
    console.print(
        f"wrote {written[0]} ({labels.value} labels: NCR {counts[1]}, ED {counts[2]}, "
        f"ET {counts[4]} voxels)"
        + (f" and {len(written) - 1} probability maps in {probabilities}" if probabilities else "")
    )
