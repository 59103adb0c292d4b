"""Attacks ``fedseg compare`` (and ``benchmarks/attacks.py``) can mount on one site: its
update scaled, its labels scrambled (a mislabeled site), or a lie in its report: a training
case count (``n_train``), or a validation Dice over many cases for the initial model
(``dice``: the untrained model 0 made to look best)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from fedseg.data.cases import discover_cases, load_case, write_case
from fedseg.data.site_config import SITE_CONFIG_FILE
from fedseg.data.splits import SPLIT_FILE, load_split
from fedseg.data.synth.annotation import scramble_labels
from fedseg.errors import FedsegError
from fedseg.federation.rounds.tasks import TaskReply, TaskRequest
from fedseg.model.summary import Summary
from fedseg.model.weights import Weights

#: How many validation cases a ``dice`` liar claims.
LIE_N_VAL = 10_000


class Poison(BaseModel):
    """A poisoned site: its update scaled (``w_global + scale * (w - w_global)``), its
    training labels scrambled (NCR->ED->ET->NCR, a mislabeled site), its reported training
    cases replaced by ``n_train``, or its validation of model 0 replaced by Dice ``dice``
    over ``LIE_N_VAL`` cases in every region."""

    model_config = ConfigDict(extra="forbid")

    site: str
    kind: Literal["scale", "scramble", "n_train", "dice"]
    scale: float = 50.0
    n_train: int = 10**9
    dice: float = 1.0


def poison_reply(p: Poison, req: TaskRequest, rep: TaskReply) -> None:
    """Apply the lie of ``p`` (not ``scramble``, which poisons the data) to ``rep``."""
    if p.kind == "scale" and rep.weights is not None:
        rep.weights = scale_update(req.weights, rep.weights, p.scale)
    elif p.kind == "n_train" and rep.weights is not None:
        rep.n_train = p.n_train
    elif p.kind == "dice" and req.model_round == 0 and rep.validation:
        lie = Summary(p.dice, 0.0, LIE_N_VAL)
        rep.validation = {g: {"dice": lie} for g in rep.validation}


def scale_update(global_weights: Weights, update: Weights, factor: float) -> Weights:
    """``g + factor * (w - g)`` on the floating arrays (dtypes kept)."""
    return {k: (g + factor * (update[k].astype(np.float64) - g)).astype(update[k].dtype)
            if update[k].dtype.kind == "f" else update[k]
            for k, g in ((k, global_weights[k].astype(np.float64)) for k in update)}  # fmt: skip


def scramble_site(src: Path, dst: Path) -> Path:
    """A copy of site folder ``src`` in ``dst`` with its labels scrambled
    (``data.synth.annotation.scramble_labels``, as the synthetic bad kind ``scramble``)
    and the same train/validation split."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    load_split(src)  # make sure the split file exists, then keep it
    for case in discover_cases(src):
        vol = load_case(case)
        if vol.label is None:
            raise FedsegError(f"case {case.case_id} in {src} has no label map to scramble")
        lab = scramble_labels(vol.label)
        write_case(dst, case.case_id, vol.image, lab, vol.affine, modalities=vol.present)
    if (src / SITE_CONFIG_FILE).is_file():  # the copy lacks what its source lacks
        shutil.copyfile(src / SITE_CONFIG_FILE, dst / SITE_CONFIG_FILE)
    shutil.copyfile(src / SPLIT_FILE, dst / SPLIT_FILE)  # last: a copy with it is whole
    return dst
