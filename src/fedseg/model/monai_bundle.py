"""``fedseg release``: a model file as a MONAI bundle a clinic runs without fedseg.

The bundle (a folder; ``python -m monai.bundle run --config_file B/configs/inference.json
--bundle_root B --case_dir CASE --output_dir OUT`` segments one BraTS case folder into
``OUT/<case>_seg.nii.gz``, the label map `fedseg segment` writes with that model)::

    configs/metadata.json    MONAI bundle metadata (the specification's mandatory keys,
                             network_data_format, plus a ``fedseg`` provenance block)
    configs/inference.json   the inference workflow: MONAI transforms for reading the four
                             modalities (channel order T1, T1Gd, T2, FLAIR), mapping label
                             values and writing NIfTI; fedseg's inference and label rule
    models/model.pt2         the network with its weights as a ``torch.export`` program
    models/model.pt          the fedseg model file itself (`fedseg segment -m` reads it)
    scripts/fedseg_runtime/  verbatim copies of the fedseg modules the workflow runs
                             (``VENDORED``), imports pointed at ``scripts.fedseg_runtime``
    docs/README.md           what the model does and how to run it

Why a ``torch.export`` program: fedseg's residual U-Net is not one of MONAI's network
classes (MONAI's SegResNet adds skips instead of concatenating them and has no norm before
its strided convolutions), so the config cannot rebuild it from MONAI; TorchScript is
deprecated in this torch. The program is exported with the tile's sides dynamic (multiples
of 2**depth up to the inference tile) and gives the eager network's output bit for bit.

Why carried code for the inference: MONAI's ``SlidingWindowInferer`` places tiles on a
fixed stride with the last clamped, pads symmetrically and blends with a different
Gaussian; fedseg spaces its tiles evenly, shrinks them to fit the brain's box, pads at the
far end, and z-scores with float64 statistics. A different tile or statistic changes
probabilities near 0.5 and so labels, so the bundle runs fedseg's own functions
(``model.inference.predict_cropped``, ``probabilities_to_labels``), copied verbatim.
Everything else is MONAI's: ``LoadImaged`` (nibabel, float32, the file's voxel order, as
fedseg reads), ``EnsureChannelFirstd``, ``ConcatItemsd``, ``MapLabelValued`` (BraTS 2021 ->
the ``labels`` convention) and ``SaveImage`` (uint8, the first modality's affine).
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import nibabel
import numpy as np
import torch

from fedseg import __version__
from fedseg.data.cases import FILE_KEYS, MODALITIES
from fedseg.data.labels import ED, ET, NCR, REGIONS, TO_BRATS2021, Layout
from fedseg.errors import FedsegError
from fedseg.model.model_file import ModelFile, load_model, weights_hash
from fedseg.model.segmenter import OUTPUT_LABELS, check_roi, output_labels
from fedseg.output_paths import check_output_folder

#: fedseg modules copied into the bundle (dotted, under ``fedseg.``): the runtime and
#: everything it imports from fedseg. ``write_monai_bundle`` refuses a copy that imports
#: a fedseg module not in this list.
VENDORED: tuple[str, ...] = (
    "errors",
    "data.labels",
    "data.preprocess",
    "model.inference",
    "model.bundle_runtime",
)
#: Where the copies live inside the bundle (the bundle root is on ``sys.path`` when MONAI
#: runs a workflow).
RUNTIME_PACKAGE = "scripts.fedseg_runtime"
#: Where the copies' classes are named in the config.
RUNTIME = f"{RUNTIME_PACKAGE}.model.bundle_runtime"
#: The MONAI metadata schema the metadata follows (the model zoo's).
METADATA_SCHEMA = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
    "meta_schema_20220324.json"
)
#: Keys the MONAI bundle specification makes mandatory in ``metadata.json`` (MONAI 1.6
#: renamed ``optional_packages_version`` to ``required_packages_version``).
MANDATORY_METADATA = (
    "version",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
    "task",
    "description",
    "authors",
    "copyright",
    "network_data_format",
)
MODALITY_NAMES = {"t1": "T1", "t1ce": "T1Gd", "t2": "T2", "flair": "FLAIR"}
REGION_NAMES = {"ET": "enhancing tumour", "TC": "tumour core", "WT": "whole tumour"}


def write_monai_bundle(
    model: Path, out: Path, *, labels: str = Layout.BRATS2021.value, version: str = "1.0.0"
) -> Path:
    """Write the model file ``model`` as a MONAI bundle folder ``out`` (made; it must not
    exist or be empty) whose workflow writes ``labels`` values by default. Returns ``out``."""
    convention = output_labels(labels)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FedsegError(f"{out} exists and is not an empty folder; give a new folder")
    check_output_folder(out, "bundle folder")
    mf = load_model(Path(model))
    roi = check_roi(mf.roi, mf.network.divisor, str(model))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (staging / "models").mkdir()
        shutil.copyfile(model, staging / "models" / "model.pt")
        export_network(mf, staging / "models" / "model.pt2")
        write_runtime(staging / "scripts")
        _write_json(staging / "configs" / "metadata.json", metadata(mf, version, Path(model)))
        _write_json(staging / "configs" / "inference.json", inference_config(mf, convention))
        (staging / "docs").mkdir()
        (staging / "docs" / "README.md").write_text(readme(mf, convention, roi))
        if out.exists():
            out.rmdir()
        staging.replace(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def export_network(mf: ModelFile, path: Path) -> Path:
    """The network of ``mf`` as a ``torch.export`` program at ``path`` (.pt2): batch and
    tile sides dynamic (each side a multiple of 2**depth, at most the inference tile's)."""
    from torch.export import Dim

    net = mf.build()
    div = mf.network.divisor
    batch = Dim("batch", min=1, max=1024)
    sides = [Dim(f"side{i}", min=1, max=max(2, r // div)) for i, r in enumerate(mf.roi)]
    shapes = ({0: batch, 2: div * sides[0], 3: div * sides[1], 4: div * sides[2]},)
    # examples of 2 (not 1) per dynamic size: export would otherwise fix them at 1
    example = torch.zeros(2, mf.network.in_channels, 2 * div, 2 * div, 2 * div)
    import torch.fx.experimental._config as fx_config

    # size-oblivious: a tile side of one 2**depth stays allowed (export would refuse it)
    with fx_config.patch(backed_size_oblivious=True), torch.no_grad():
        program = torch.export.export(net, (example,), dynamic_shapes=shapes)
    torch.export.save(program, str(path))
    return path


def write_runtime(scripts: Path) -> list[Path]:
    """Copy the ``VENDORED`` fedseg modules into ``scripts/fedseg_runtime/`` (packages made,
    ``fedseg.`` imports rewritten). Refuses a module importing fedseg code not copied."""
    root = scripts / "fedseg_runtime"
    written = []
    for init in (scripts, root, root / "data", root / "model"):
        init.mkdir(parents=True, exist_ok=True)
        (init / "__init__.py").write_text('"""Copied by `fedseg release`."""\n')
    for name in VENDORED:
        source = Path(importlib.import_module(f"fedseg.{name}").__file__ or "").read_text()
        text = vendored_source(source, name)
        target = root.joinpath(*name.split(".")).with_suffix(".py")
        target.write_text(text)
        written.append(target)
    return written


_FEDSEG_IMPORT = re.compile(r"^(\s*)(from|import) fedseg(\.[\w.]+)?\b", re.MULTILINE)


def vendored_source(source: str, name: str) -> str:
    """``source`` of ``fedseg.<name>`` with its fedseg imports pointed at the bundle's copy."""

    def point(match: re.Match[str]) -> str:
        dotted = (match.group(3) or "").lstrip(".")
        if dotted not in VENDORED:
            raise FedsegError(
                f"fedseg.{name} imports fedseg.{dotted or ''}, which a bundle does not carry; "
                "add it to VENDORED in fedseg.model.monai_bundle"
            )
        if match.group(2) == "import":
            raise FedsegError(f"fedseg.{name}: write `from fedseg.{dotted} import ...`")
        return f"{match.group(1)}from {RUNTIME_PACKAGE}.{dotted}"

    return _FEDSEG_IMPORT.sub(point, source)


def inference_config(mf: ModelFile, labels: Layout) -> dict[str, Any]:
    """The bundle's ``configs/inference.json`` (MONAI config syntax)."""
    modalities = list(MODALITIES)
    file_keys = {
        layout.value: {m: FILE_KEYS[layout][m] for m in modalities}
        for layout in (Layout.BRATS2021, Layout.BRATS2023)
    }
    # label values for NCR, ED, ET in each convention, from fedseg's own table
    values = {
        layout.value: [_value_in(layout, v) for v in (NCR, ED, ET)] for layout in OUTPUT_LABELS
    }
    return {
        "imports": ["$import numpy", "$import torch", "$import pathlib"],
        "bundle_root": ".",
        "case_dir": "",
        "output_dir": "$@bundle_root + '/eval'",
        "labels": labels.value,
        "overlap": 0.5,
        "batch_size": 1,
        "threshold": 0.5,
        "roi": list(mf.roi),
        "divisor": mf.network.divisor,
        "modalities": modalities,
        "file_keys": file_keys,
        "label_values": values,
        "case_id": "$pathlib.Path(@case_dir).resolve().name",
        "device": "$torch.device('cpu')",
        "network": "$torch.export.load(@bundle_root + '/models/model.pt2').module()",
        "target_labels": {
            "_target_": f"{RUNTIME}.label_values",
            "labels": "@labels",
            "conventions": "@label_values",
        },
        "image_files": {
            "_target_": f"{RUNTIME}.case_files",
            "case_dir": "@case_dir",
            "file_keys": "@file_keys",
        },
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {
                    "_target_": "LoadImaged",
                    "keys": "@modalities",
                    "reader": "NibabelReader",
                    "image_only": True,
                    "dtype": "$numpy.float32",
                },
                {
                    "_target_": "EnsureChannelFirstd",
                    "keys": "@modalities",
                    "channel_dim": "no_channel",
                },
                {"_target_": "ConcatItemsd", "keys": "@modalities", "name": "image", "dim": 0},
            ],
        },
        "inferer": {
            "_target_": f"{RUNTIME}.WholeCaseInferer",
            "roi": "@roi",
            "divisor": "@divisor",
            "overlap": "@overlap",
            "batch_size": "@batch_size",
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {
                    "_target_": f"{RUNTIME}.RegionsToLabelsd",
                    "keys": "pred",
                    "threshold": "@threshold",
                },
                {
                    "_target_": "MapLabelValued",
                    "keys": "pred",
                    "orig_labels": f"@label_values#{Layout.BRATS2021.value}",
                    "target_labels": "@target_labels",
                    "dtype": "$numpy.uint8",
                },
            ],
        },
        "saver": {
            "_target_": "SaveImage",
            "output_dir": "@output_dir",
            "output_dtype": "$numpy.uint8",
            "resample": False,
            "separate_folder": False,
            "output_ext": ".nii.gz",
            "writer": "NibabelWriter",
        },
        "data": "$@preprocessing(@image_files)",
        "prediction": "$@postprocessing({'pred': @inferer(@data['image'], @network)})['pred']",
        "run": [
            "$pathlib.Path(@output_dir).mkdir(parents=True, exist_ok=True)",
            "$@saver(@prediction, filename=@output_dir + '/' + @case_id + '_seg')",
        ],
    }


def _value_in(layout: Layout, brats2021_value: int) -> int:
    """The label value of ``layout`` that stands for ``brats2021_value``."""
    return next(k for k, v in TO_BRATS2021[layout].items() if v == brats2021_value)


def metadata(mf: ModelFile, version: str, source: Path) -> dict[str, Any]:
    """The bundle's ``configs/metadata.json``."""
    div = mf.network.divisor
    side = f"{div}*n"
    provenance = {
        "fedseg_version": mf.fedseg_version,
        "released_by": __version__,
        "model_file": source.name,
        "weights_hash": weights_hash(mf.weights),
        "network": mf.network.model_dump(),
        "roi": list(mf.roi),
        "regions": list(mf.regions),
        "meta": mf.meta,
    }
    return {
        "schema": METADATA_SCHEMA,
        "version": version,
        "changelog": {version: f"released by fedseg {__version__} from {source.name}"},
        "monai_version": _version("monai"),
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {"nibabel": nibabel.__version__},
        "name": "fedseg brain tumour segmentation",
        "task": "Brain tumour sub-region segmentation (ET, TC, WT) from T1, T1Gd, T2, FLAIR MRI",
        "description": (
            "A 3D residual U-Net trained by fedseg (federated learning across sites), run as "
            "`fedseg segment` runs it: all-zero planes cropped, non-zero voxels z-scored per "
            "modality, Gaussian-blended tiles, regions thresholded at 0.5 and turned into "
            "BraTS labels."
        ),
        "authors": "fedseg consortium",
        "copyright": "the fedseg consortium's sites",
        "data_source": "the consortium's sites (data never left them)",
        "data_type": "nibabel",
        "image_classes": "four co-registered, skull-stripped MRI volumes: "
        + ", ".join(f"{i} {MODALITY_NAMES[m]}" for i, m in enumerate(MODALITIES)),
        "label_classes": "BraTS 2021: 1 NCR, 2 ED, 4 ET (BraTS 2023+: ET 3)",
        "pred_classes": "3 overlapping sigmoid channels: 0 ET, 1 TC, 2 WT",
        "eval_metrics": _metrics(mf.meta),
        "intended_use": "research; not a medical device, not for diagnostic use",
        "references": [
            "Pati S. et al. Federated learning enables big data for rare cancer boundary "
            "detection. Nat Commun 13, 7346 (2022)"
        ],
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "MR",
                    "num_channels": mf.network.in_channels,
                    "spatial_shape": [side, side, side],
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": {str(i): MODALITY_NAMES[m] for i, m in enumerate(MODALITIES)},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "classes",
                    "num_channels": mf.network.out_channels,
                    "spatial_shape": [side, side, side],
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": {
                        str(i): f"{REGION_NAMES[r]} ({r}) logit" for i, r in enumerate(REGIONS)
                    },
                }
            },
        },
        "fedseg": provenance,
    }


def _metrics(meta: dict[str, Any]) -> dict[str, float]:
    """Numeric metrics a model file's provenance names (``meta["metrics"]``), if any."""
    raw = meta.get("metrics")
    if not isinstance(raw, dict):
        return {}
    return {str(k): float(v) for k, v in raw.items() if isinstance(v, int | float)}


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def readme(mf: ModelFile, labels: Layout, roi: tuple[int, int, int]) -> str:
    """The bundle's ``docs/README.md``."""
    return f"""# fedseg brain tumour segmentation (MONAI bundle)

Segments a skull-stripped, co-registered BraTS case (T1, T1Gd, T2, FLAIR) into
NCR 1, ED 2 and ET {_value_in(labels, ET)} ({labels.value} labels), on the case's own grid.
Research use only; not a medical device.

Needs Python with `monai`, `torch` and `nibabel`; fedseg is not needed. On a CPU:

    python -m monai.bundle run --config_file BUNDLE/configs/inference.json \\
        --bundle_root BUNDLE --case_dir CASE_FOLDER --output_dir OUT

writes `OUT/<case>_seg.nii.gz`. CASE_FOLDER holds `<case>_t1.nii.gz, <case>_t1ce.nii.gz,
<case>_t2.nii.gz, <case>_flair.nii.gz` (BraTS 2017-2021 names) or `<case>-t1n, -t1c, -t2w,
-t2f` (BraTS 2023 names). Options (`--name value`): `labels` (brats2021: ET 4, brats2023:
ET 3), `overlap` (tile overlap, 0.5), `batch_size` (tiles per forward pass, 1).

The label map is the one `fedseg segment -m models/model.pt` writes: the bundle runs
fedseg's own inference code (`scripts/fedseg_runtime/`): all-zero planes cropped, the
non-zero voxels of each modality z-scored, tiles of at most {roi} voxels (multiples of
{mf.network.divisor}) blended with Gaussian weights, a region where its sigmoid exceeds 0.5.
`models/model.pt2` is the network ({mf.network.name}, {mf.network.base_filters} base filters,
depth {mf.network.depth}) as a `torch.export` program; `configs/metadata.json` records where
the weights come from (`fedseg` block).
"""


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
