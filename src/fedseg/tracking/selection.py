"""Final-model selection from the per-round checkpoints by the validation summaries.

- singlet: the one model round with the best score (``curves.ScoreSpec``: a segmentation
  run's mean Dice of ET/TC/WT, a synthesis run's mean brain-masked SSIM over the modalities
  each site validates) over sites;
- triplet: for each region the model round with the best Dice in that region. A synthesis
  run's ``choose`` gives each modality's best round (the report shows them), but its
  ``select --triplet`` is refused: one generator is one model, and banks of different
  rounds are not one model in the pre-training rounds (their kernels differ); its singlet
  exports the best generator file (``fedseg complete``/``sample`` take it).

Rounds are scored by the one rule of ``tracking.curves`` (``round_scores``): sites weighted
by their validation cases, only model rounds validated by every site that ever validated
are candidates (a round missing a site would be scored on a different population), the
earliest round wins ties; here also only rounds with a checkpoint, i.e. whose model file
is still in the run folder. The coordinator's ``best.pt`` is ``best_round(store)``, so it
always equals ``fedseg select --singlet``.

Model retention (plan ``retention``, ``federation.rounds.retention``) deletes round models
after each round and their ``checkpoints`` rows with them; it never deletes the current
best. So the one rule for every user of per-round models (``best.pt``, ``select``, the
report's selection) is: the best round among the rounds whose model is kept. When a late
validation would make a deleted round the best again, the best kept round is chosen; the
deleted round's scores stay in the store and curves (``deleted_model_rounds`` names them).

The selection folder holds the exported model files and ``selection.json``::

    {"format": "fedseg-selection", "version": 1, "task": "segmentation", "kind": "triplet",
     "metric": "dice",
     "run": "/abs/run", "sites": [...],
     "regions": {"ET": {"file": "model_ET_round0007.pt", "model_round": 7, "score": 0.81},
                 "TC": {...}, "WT": {...}},
     "files": ["model_ET_round0007.pt", ...]}

``regions`` always names one file per region (a singlet names the same file three
times): a segmenter takes channel ``REGIONS.index(region)`` from that file's model.
``load_selection`` reads it back with paths resolved (and refuses a synthesis run's: task
``synthesis``, one region ``mean`` naming ``generator_roundXXXX.pt``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from fedseg.data.labels import REGIONS
from fedseg.errors import FedsegError
from fedseg.model.segmenter import Combine
from fedseg.model.summary import Summary
from fedseg.run_folder import Task
from fedseg.tracking.curves import round_scores, store_score_spec
from fedseg.tracking.store import RunStore

SELECTION_FILE = "selection.json"
SELECTION_FORMAT = "fedseg-selection"
Kind = Literal["singlet", "triplet"]


class RegionChoice(BaseModel):
    """The model file used for one region, the round it came from and its score."""

    model_config = ConfigDict(extra="forbid")

    file: str
    model_round: int
    score: float


class Selection(BaseModel):
    """Contents of ``selection.json`` (file names relative to the json's folder)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["fedseg-selection"] = SELECTION_FORMAT
    version: int = 1
    task: Task = Task.SEGMENTATION
    kind: Kind
    metric: str = "dice"
    run: str = ""
    sites: list[str] = []
    regions: dict[str, RegionChoice]
    files: list[str]


@dataclass(frozen=True)
class LoadedSelection:
    """A selection read from disk: region -> absolute model file path."""

    kind: Kind
    region_files: dict[str, Path]
    selection: Selection


def best_round(
    store: RunStore,
    region: str = "mean",
    metric: str | None = None,
    *,
    require_checkpoint: bool = True,
) -> tuple[int, Summary] | None:
    """The candidate model round with the highest score in ``region`` (the earliest on
    ties) and its score; None when no round is a candidate. ``metric``: default the run's
    task's (``curves.store_score_spec``: Dice or SSIM). With ``require_checkpoint`` only
    model rounds with a stored checkpoint compete."""
    scores = round_scores(store, region, metric)
    if require_checkpoint:
        ckpts = store.checkpoints()
        scores = {m: v for m, v in scores.items() if m in ckpts}
    if not scores:
        return None
    m = max(scores, key=lambda k: (scores[k].mean, -k))
    return m, scores[m]


def deleted_model_rounds(store: RunStore) -> list[int]:
    """Validated model rounds whose model file the run no longer has (deleted by the plan's
    ``retention``): they have scores but cannot be chosen. Empty for a run that stored no
    checkpoints at all."""
    listed = store.checkpoints()
    if not listed:
        return []
    return sorted({r.model_round for r in store.validation()} - set(listed))


def choose(
    store: RunStore,
    kind: Kind,
    metric: str | None = None,
    *,
    require_checkpoint: bool = True,
) -> dict[str, tuple[int, float]]:
    """``group -> (model_round, score)`` for a singlet (every group: the best round in
    ``mean``) or triplet (each group: its best round) selection; the groups are the run's
    (``ScoreSpec.groups``: ET/TC/WT, or the modalities), ``metric`` default the run's."""
    spec = store_score_spec(store)
    metric = metric or spec.metric
    if not store.validation(metric=metric):
        raise FedsegError(
            f"{store.path}: no validation results for metric {metric!r}; nothing to select from"
        )
    picks: dict[str, tuple[int, float]] = {}
    groups = spec.groups
    if kind == "triplet" and spec.task == Task.SYNTHESIS:  # only the modalities validated
        validated = {r.region for r in store.validation(metric=metric)}
        groups = tuple(g for g in groups if g in validated)
    for region in ["mean"] if kind == "singlet" else groups:
        best = best_round(store, region, metric, require_checkpoint=require_checkpoint)
        if best is None:
            raise FedsegError(
                "no model round has both validation results from every site and a "
                "checkpoint; let the run finish at least one validated round"
            )
        picks[region] = (best[0], best[1].mean)
    return dict.fromkeys(spec.groups, picks["mean"]) if kind == "singlet" else picks


def export_selection(
    run: Path, store: RunStore, kind: Kind, out: Path, metric: str | None = None
) -> Selection:
    """Choose, copy the chosen model files into ``out`` (provenance in their meta), write
    json. A synthesis run: its best generator (singlet only, ``export_generator``)."""
    from fedseg.model.model_file import load_model, save_model  # torch only when exporting

    spec = store_score_spec(store)
    metric = metric or spec.metric
    if spec.task == Task.SYNTHESIS:
        return export_generator(run, store, kind, out, metric)
    picks = choose(store, kind, metric)
    ckpts = store.checkpoints()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[int, str] = {}
    regions: dict[str, RegionChoice] = {}
    for region in REGIONS:
        mr, score = picks[region]
        if mr not in files:
            src = _resolve(run, ckpts[mr])
            used_for = [g for g in REGIONS if picks[g][0] == mr]
            tag = "" if kind == "singlet" else "-".join(used_for) + "_"
            name = f"model_{tag}round{mr:04d}.pt"
            model = load_model(src)
            model.meta = {
                **model.meta,
                "selection": {
                    "kind": kind,
                    "metric": metric,
                    "model_round": mr,
                    "regions": used_for,
                    "run": str(Path(run).resolve()),
                    "source": str(src),
                },
            }
            save_model(out / name, model)
            files[mr] = name
        regions[region] = RegionChoice(file=files[mr], model_round=mr, score=score)
    sel = Selection(
        kind=kind,
        metric=metric,
        run=str(Path(run).resolve()),
        sites=store.sites(),
        regions=regions,
        files=sorted(set(files.values())),
    )
    (out / SELECTION_FILE).write_text(sel.model_dump_json(indent=2) + "\n")
    return sel


def export_generator(run: Path, store: RunStore, kind: Kind, out: Path, metric: str) -> Selection:
    """A synthesis run's selection: the best round's generator file (``mean`` over the
    modalities) copied into ``out`` with its provenance, and ``selection.json`` (task
    synthesis, one region ``mean``). ``triplet`` is refused (this module's docstring)."""
    from fedseg.model.generator_file import load_generator, save_generator

    if kind != "singlet":
        raise FedsegError(
            "--triplet picks a segmentation model per region; a synthesis run trains one "
            "generator: use --singlet (each modality's best round is in `fedseg report`)"
        )
    mr, score = choose(store, kind, metric)[store_score_spec(store).groups[0]]
    src = _resolve(run, store.checkpoints()[mr])
    gf = load_generator(src)
    gf.meta = {
        **gf.meta,
        "selection": f"{kind} {metric} model_round {mr} of {Path(run).resolve()}",
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"generator_round{mr:04d}.pt"
    save_generator(out / name, gf)
    sel = Selection(
        task=Task.SYNTHESIS,
        kind=kind,
        metric=metric,
        run=str(Path(run).resolve()),
        sites=store.sites(),
        regions={"mean": RegionChoice(file=name, model_round=mr, score=score)},
        files=[name],
    )
    (out / SELECTION_FILE).write_text(sel.model_dump_json(indent=2) + "\n")
    return sel


def load_selection(path: Path) -> LoadedSelection:
    """Read ``selection.json`` (or the folder holding it); model paths made absolute."""
    path = Path(path)
    if path.is_dir():
        path = path / SELECTION_FILE
    if not path.is_file():
        raise FedsegError(f"{path}: selection file not found (write one with `fedseg select`)")
    try:
        sel = Selection.model_validate(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValidationError) as exc:
        first = str(exc).splitlines()[0]
        raise FedsegError(f"{path}: not a fedseg selection file ({first})") from None
    if sel.task != Task.SEGMENTATION:
        raise FedsegError(
            f"{path}: a generator selection (task {sel.task}); segmentation needs a "
            "selection of a segmentation run"
        )
    missing = [r for r in REGIONS if r not in sel.regions]
    if missing:
        raise FedsegError(f"{path}: selection names no model for regions {missing}")
    files = {r: (path.parent / sel.regions[r].file).resolve() for r in REGIONS}
    for r, f in files.items():
        if not f.is_file():
            raise FedsegError(f"{path}: model file for {r} missing: {f}")
    return LoadedSelection(kind=sel.kind, region_files=files, selection=sel)


def selection_model_files(path: Path) -> tuple[list[Path], Kind]:
    """Model files for a segmenter from a selection: ``([file], "singlet")`` or
    ``([ET file, TC file, WT file], "triplet")`` (use the latter with combine="triplet")."""
    sel = load_selection(path)
    if sel.kind == "singlet":
        return [sel.region_files[REGIONS[0]]], "singlet"
    return [sel.region_files[r] for r in REGIONS], "triplet"


def expand_selection(paths: Sequence[Path], combine: Combine) -> tuple[list[Path], Combine]:
    """``fedseg segment -m DIR``: a ``fedseg select`` folder given as the only model becomes
    its model files and combine mode (a triplet: each region from its model); other model
    lists are returned as they are."""
    if len(paths) == 1 and (Path(paths[0]) / SELECTION_FILE).is_file():
        files, kind = selection_model_files(Path(paths[0]))
        return files, "triplet" if kind == "triplet" else "mean"
    return list(paths), combine


def _resolve(run: Path, p: Path) -> Path:
    """Checkpoint paths may be stored relative to the run folder."""
    p = Path(p)
    if not p.is_absolute():
        p = Path(run) / p
    if not p.is_file():
        raise FedsegError(f"checkpoint {p} listed in the run store is missing; was it moved?")
    return p
