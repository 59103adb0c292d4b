"""What the round loop trains (plan ``task``), behind one seam: the round-0 weights, the
recipe a site receives, and the model file a round writes and a resume reads.

- ``segmentation`` (``SegmentationKind``): the plan's ``network`` from ``initial_model`` or
  a seeded init, ``models/round_XXXX.pt`` a ``ModelFile`` (today's code, moved here);
- ``synthesis`` (``SynthesisKind``): the ModalityBank generator (``synthesis.generator``),
  seeded, or the weights of ``synthesis.initial_generator`` (its kernel, and its banks to
  continue from; pre-training is then skipped); round models are ``GeneratorFile``s whose
  ``trained`` lists the modalities some site trained so far (the pre-training's reference
  modality from round 1 on: identity banks keep its output).

A site tells the task from its request's recipe (``tasks.recipe_synthesis``); its work is
``site.run_task``'s, which dispatches on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from fedseg.errors import FedsegError
from fedseg.federation.rounds.tasks import recipe_json
from fedseg.model.weights import Weights
from fedseg.plan import PlanConfig
from fedseg.run_folder import Task


class TaskKind(Protocol):
    task: Task

    def initial_weights(self) -> Weights:
        """The round-0 model."""
        ...

    def recipe(self) -> str:
        """The recipe JSON every request carries (``tasks.recipe_json``)."""
        ...

    def save_model(self, path: Path, weights: Weights, meta: dict[str, str | int]) -> None:
        """Write a round model (``models/round_XXXX.pt``)."""
        ...

    def load_weights(self, path: Path) -> Weights:
        """The weights of a round model this kind wrote (a resume's start)."""
        ...

    def groups(self) -> tuple[str, ...]:
        """The validation groups (``region`` of the validation rows): ET/TC/WT, or the
        generator's modalities."""
        ...


class SegmentationKind:
    task = Task.SEGMENTATION

    def __init__(self, plan: PlanConfig) -> None:
        self.plan = plan

    def initial_weights(self) -> Weights:
        """A model file's weights (same network required) or a seeded init."""
        from fedseg.model.model_file import load_model
        from fedseg.model.registry import new_network
        from fedseg.model.weights import get_weights

        plan, init = self.plan, self.plan.initial_model
        if init.path is not None:
            mf = load_model(init.path)
            if mf.network != plan.network:
                raise FedsegError(
                    f"initial model {init.path} has network {mf.network.model_dump()}, the "
                    f"plan says {plan.network.model_dump()}; make them match"
                )
            return mf.weights
        seed = plan.seed if init.seed is None else init.seed
        return get_weights(new_network(plan.network, None, seed))

    def recipe(self) -> str:
        return recipe_json(self.plan.network, self.plan.train)

    def save_model(self, path: Path, weights: Weights, meta: dict[str, str | int]) -> None:
        from fedseg.model.model_file import ModelFile, save_model

        roi = tuple(self.plan.train.val_roi)
        save_model(path, ModelFile(network=self.plan.network, weights=weights, roi=roi,  # type: ignore[arg-type]
                                   meta=dict(meta)))  # fmt: skip

    def load_weights(self, path: Path) -> Weights:
        from fedseg.model.model_file import load_model

        return load_model(path).weights

    def groups(self) -> tuple[str, ...]:
        from fedseg.data.labels import REGIONS

        return tuple(REGIONS)


class SynthesisKind:
    task = Task.SYNTHESIS

    def __init__(self, plan: PlanConfig) -> None:
        self.plan = plan
        self.synthesis = plan.synthesis
        #: modalities whose bank some site trained so far (the round files' ``trained``)
        self.trained: list[str] = []

    def initial_weights(self) -> Weights:
        from fedseg.model.generator import new_generator_weights
        from fedseg.model.generator_file import load_generator

        s = self.synthesis
        if s.initial_generator is not None:
            gf = load_generator(Path(s.initial_generator))
            if gf.config != s.generator:
                raise FedsegError(
                    f"synthesis.initial_generator {s.initial_generator} has generator "
                    f"{gf.config.model_dump()}, the plan says {s.generator.model_dump()}; make "
                    "them match"
                )
            self.trained = list(gf.trained)
            return gf.weights
        return new_generator_weights(s.generator, s.seed)

    def recipe(self) -> str:
        return recipe_json(self.plan.network, self.plan.train, self.synthesis)

    def add_trained(self, modalities: Iterable[str]) -> None:
        have = set(self.trained) | set(modalities)
        self.trained = [m for m in self.synthesis.generator.modalities if m in have]

    def save_model(self, path: Path, weights: Weights, meta: dict[str, str | int]) -> None:
        from fedseg.model.generator_file import GeneratorFile, save_generator

        gf = GeneratorFile(
            config=self.synthesis.generator, weights=weights, trained=list(self.trained),
            intensity_percentile=self.synthesis.data.intensity_percentile,
            meta={k: str(v) for k, v in meta.items()},
        )  # fmt: skip
        save_generator(path, gf)

    def load_weights(self, path: Path) -> Weights:
        from fedseg.model.generator_file import load_generator

        gf = load_generator(path)
        self.trained = list(gf.trained)
        return gf.weights

    def groups(self) -> tuple[str, ...]:
        return tuple(self.synthesis.generator.modalities)


def task_kind(plan: PlanConfig) -> SegmentationKind | SynthesisKind:
    """The kind of ``plan.task``."""
    return SynthesisKind(plan) if plan.task == Task.SYNTHESIS else SegmentationKind(plan)
