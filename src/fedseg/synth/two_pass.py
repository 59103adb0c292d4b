"""Segmentation of a case that lacks a modality, with a generator (``fedseg segment
--generator``). Outside the paper: the generator draws from a label map, which a case to be
segmented does not have, so segmentation runs twice:

1. segment with the absent channels zero (the model sees what a site missing it trains on);
2. complete each absent modality from that predicted label map and the brain mask;
3. segment again on the completed image; the second label map is the result.

The completed images exist only in memory here (``fedseg complete`` writes them, for
labelled cases).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedseg.data.cases import MODALITIES, Case, CaseVolumes, as_absent, load_case
from fedseg.model.generator_file import GeneratorFile
from fedseg.model.segmenter import ModelSet, Segmentation, TileCallback, segment_volumes
from fedseg.synth.complete import case_brain, check_trained


@dataclass
class TwoPassResult:
    """The final segmentation, the first pass's, and the modalities completed between."""

    segmentation: Segmentation
    first_pass: Segmentation
    completed: tuple[str, ...]


def segment_completing(
    case: Case,
    models: ModelSet,
    gf: GeneratorFile,
    *,
    overlap: float = 0.5,
    batch_size: int = 1,
    on_tiles: TileCallback | None = None,
) -> TwoPassResult:
    """Segment ``case`` (absent modalities allowed) in two passes (module docstring)."""
    from fedseg.synth.render import render_volume

    loaded = load_case(as_absent(case), with_label=False)  # the absent channels zero
    absent = tuple(m for m in MODALITIES if m not in loaded.present)
    check_trained(gf, absent)
    volumes = CaseVolumes(case.case_id, loaded.image, None, loaded.affine)
    first = segment_volumes(
        volumes, models, overlap=overlap, batch_size=batch_size, on_tiles=on_tiles
    )
    if not absent:
        return TwoPassResult(first, first, ())
    label = first.labels.astype(np.uint8)
    brain = case_brain(loaded.image, loaded.present, label)
    image = loaded.image.copy()
    for m in absent:
        image[MODALITIES.index(m)] = render_volume(gf, label, brain, m)
    second = segment_volumes(
        CaseVolumes(case.case_id, image, None, loaded.affine), models,
        overlap=overlap, batch_size=batch_size, on_tiles=on_tiles,
    )  # fmt: skip
    return TwoPassResult(second, first, absent)
