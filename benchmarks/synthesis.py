"""ModalityBank (issue 15): the paper's Tables I and II on fedseg's synthetic multi-site data.

Data (``fedseg data synth``, 4 mm): sites 1-3 train, site4 is held out and never trained on;
a second folder with the same seed where site1 lacks T1, site2 T1Gd, site3 FLAIR (the
held-back truth in ``heldback/``); phantom label maps that are nobody's
(``--labels-only --seed 99``) for the synthetic sets. Segmentation: the CPU recipe
(``RecipeConfig.cpu()``: ResUNet base 8, depth 3, 32^3 patches), every row the SAME number of
optimizer steps (``--steps``; a row on fewer cases gets more epochs; a FedAvg row counts the
steps of all its sites), centrally through ``fedseg train``'s runner and federated through
the real round loop (``--engine local``: compare's in-process transport; ``simulate``: the
Flower engine). The generator: a ``task: synthesis`` federation (strategy modality-fedavg,
``fedseg simulate``'s path by default, ``--bank-engine``) over the three sites, its
``best.pt``. Scores on site4 through ``model.evaluate`` (the one evaluation path).

Rows, Table I (all modalities present): Real-All (central, union of sites 1-3),
Real-site1/2/3, FedAvg, ModalityBank (segmentation trained only on ``fedseg sample``d cases:
as many phantom label maps as the union has training cases), ModalityBank x2N.
Table II (each site missing a different modality): Real-siteK-missing (zero channel),
FedAvg (the three incomplete sites), ModalityBank (the bank trained with the absences),
Completed-siteK (siteK completed by that generator, trained alone).
Image quality per modality: SSIM (brain-masked; whole-slice labelled apart) and PSNR
(brain) of the completions against ``heldback/`` and of site4 renders against site4's real
images, with a constant-intensity baseline. Figures: ``fig_samples.png`` (label, real,
synthetic x 4 modalities, 3 site4 cases), ``fig_completion.png`` (held-back real vs
completed, per site). Everything is written to ``--out``.

    python benchmarks/synthesis.py --out .bench/synthesis               # full, ~1.5 h on 2 cores
    python benchmarks/synthesis.py --out .bench/synthesis --seeds 3     # mean +- sd over seeds
    python benchmarks/synthesis.py --out .bench/synthesis-quick --quick # every row, < 20 min
    python benchmarks/synthesis.py --out /tmp/syn-tiny --tiny           # smoke test, tiny nets

Goals (PASS/FAIL lines; --quick and --tiny runs are not judged): the ModalityBank row above
every single-site row (Dice WT); every Completed-site row above its missing-modality row.
"""

from __future__ import annotations

import argparse
import csv
import math
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fedseg.data import nifti
from fedseg.data.cases import MODALITIES, Case, as_absent, discover_cases, load_case
from fedseg.data.splits import load_split, make_split
from fedseg.model.config import NetworkConfig
from fedseg.model.evaluate import summarize_cases
from fedseg.model.weights import Weights
from fedseg.plan import PlanConfig, SiteConfig, StrategyConfig, save_plan
from fedseg.privacy.config import PrivacyConfig
from fedseg.train.config import RecipeConfig, TrainConfig

TRAIN_SITES = ("site1", "site2", "site3")
HOLDOUT = "site4"
#: Table II: the modality each training site lacks
MISSING = {"site1": "t1", "site2": "t1ce", "site3": "flair"}
DATA_SEED = 11
PHANTOM_SEED = 99
VAL_FRACTION = 0.25
#: the Table columns: (label, region, metric)
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("Dice WT", "WT", "dice"), ("Dice TC", "TC", "dice"), ("Dice ET", "ET", "dice"),
    ("Sens WT", "WT", "sensitivity"), ("Spec WT", "WT", "specificity"),
    ("HD95 WT", "WT", "hd95"),
)  # fmt: skip
NAMES = {"t1": "T1", "t1ce": "T1Gd", "t2": "T2", "flair": "FLAIR"}


@dataclass(frozen=True)
class Settings:
    """Sizes of one benchmark run (full, --quick or --tiny)."""

    cases_per_site: int
    steps: int  # optimizer steps per segmentation row
    pretrain_rounds: int
    pretrain_steps: int
    bank_rounds: int
    bank_steps: int
    recipe: RecipeConfig
    judged: bool
    figure_cases: int = 3


def settings(args: argparse.Namespace) -> Settings:
    base = _sizes(args)
    if args.bank_rounds is not None:
        return replace(base, bank_rounds=args.bank_rounds)
    return base


def _sizes(args: argparse.Namespace) -> Settings:
    if args.tiny:
        train = TrainConfig.cpu(patch_size=(16, 16, 16), val_roi=(32, 32, 32), val_overlap=0.0,
                                val_batch_size=4, cache_mb=64)  # fmt: skip
        recipe = RecipeConfig(network=NetworkConfig(base_filters=4, depth=2), train=train)
        return Settings(4, args.steps or 4, 1, 2, 1, 2, recipe, judged=False, figure_cases=1)
    if args.quick:
        return Settings(6, args.steps or 48, 1, 20, 1, 10, RecipeConfig.cpu(), judged=False)
    # full: about 40 epochs of the union's training cases (3 sites x 9), converged rows
    return Settings(12, args.steps or 1080, 2, 40, 8, 20, RecipeConfig.cpu(), judged=True)


# ---------------------------------------------------------------------------- data


def fedseg(*args: str | Path) -> None:
    """The real CLI, as a user runs it (the data layer's flags live there)."""
    cmd = [sys.executable, "-m", "fedseg", *map(str, args)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


@dataclass(frozen=True)
class Data:
    full: Path  # all modalities, sites 1-4
    missing: Path  # sites 1-3 each lacking MISSING[site]; heldback/ the truth
    phantoms: Path  # label-only cases (seg + brain), nobody's

    @property
    def heldback(self) -> Path:
        return self.missing / "heldback"

    def site(self, name: str, missing: bool = False) -> Path:
        return (self.missing if missing else self.full) / name


def make_data(root: Path, s: Settings) -> Data:
    """The three data folders (kept when already there: a rerun reuses them)."""
    data = Data(root / "full", root / "missing", root / "phantoms")
    common = ["--sites", "4", "--cases-per-site", str(s.cases_per_site), "--spacing", "4",
              "--seed", str(DATA_SEED)]  # fmt: skip
    if not (data.full / HOLDOUT).is_dir():
        fedseg("data", "synth", data.full, *common)
    if not (data.missing / HOLDOUT).is_dir():
        lacks = [a for site, m in MISSING.items() for a in ("--missing", f"{site}:{m}")]
        fedseg("data", "synth", data.missing, *common, *lacks)
    n_union = len(TRAIN_SITES) * s.cases_per_site
    if not data.phantoms.is_dir():
        n = str(2 * n_union)  # enough label maps for the x2N row
        fedseg("data", "synth", data.phantoms, "--sites", "1", "--cases-per-site", n,
               "--spacing", "4", "--seed", str(PHANTOM_SEED), "--labels-only")  # fmt: skip
    for site in TRAIN_SITES:
        for folder in (data.site(site), data.site(site, missing=True)):
            make_split(folder, val_fraction=VAL_FRACTION, seed=DATA_SEED)
    return data


# ------------------------------------------------------------------ segmentation


def steps_per_epoch(n_cases: int, train: TrainConfig) -> int:
    return math.ceil(n_cases * train.patches_per_case / train.batch_size)


def recipe_for(s: Settings, seed: int) -> RecipeConfig:
    return s.recipe.model_copy(update={"train": s.recipe.train.model_copy(update={"seed": seed})})


def train_central(
    work: Path, cases: dict[str, list[Case]], s: Settings, seed: int
) -> tuple[Weights, int]:
    """``fedseg train``'s runner on the pooled ``cases`` for the row's step budget (epochs =
    steps / steps per epoch); no per-epoch validation (site4 scores the final model)."""
    from fedseg.federation.commands.central_training import SiteData, run_training
    from fedseg.model.model_file import load_model
    from fedseg.run_folder import LAST_MODEL

    recipe = recipe_for(s, seed)
    spe = steps_per_epoch(sum(len(c) for c in cases.values()), recipe.train)
    epochs = max(1, round(s.steps / spe))
    sites = [SiteData(name, list(cs), []) for name, cs in cases.items()]
    shutil.rmtree(work, ignore_errors=True)
    run_training(work, sites, epochs, recipe=recipe, progress=False, console=Console(quiet=True))
    return load_model(work / LAST_MODEL).weights, epochs * spe


def run_plan(work: Path, plan: PlanConfig, engine: str) -> Path:
    """One federation through the real round loop: in process (compare's transport) or
    ``fedseg simulate`` (Flower engine). Returns the run folder."""
    from fedseg.federation.commands.run_folder import check_plan_runs

    shutil.rmtree(work, ignore_errors=True)
    work.parent.mkdir(parents=True, exist_ok=True)
    if engine == "simulate":
        from fedseg.federation.commands.simulate import simulate

        plan_path = save_plan(work.parent / f"{work.name}.plan.yaml", plan)
        return simulate(plan_path, work, live=False, console=Console(quiet=True)).run_dir
    from fedseg.federation.commands.compare_plans.local_transport import LocalTransport
    from fedseg.federation.rounds.coordinator import Coordinator
    from fedseg.run_folder import PLAN_FILE

    check_plan_runs(plan, work)  # the refusals a real run gets
    work.mkdir(parents=True)
    save_plan(work / PLAN_FILE, plan)
    data = {name: Path(c.data) for name, c in plan.sites.items() if c.data is not None}
    Coordinator(work, LocalTransport(data, {n: work / "sites" / n for n in data})).run()
    return work


def train_fedavg(
    work: Path, sites: dict[str, Path], s: Settings, seed: int, engine: str
) -> tuple[Weights, int]:
    """FedAvg over ``sites`` (one local epoch per round), rounds = steps / (the sites'
    steps per epoch together); the final model."""
    from fedseg.model.model_file import load_model
    from fedseg.run_folder import model_path

    recipe = recipe_for(s, seed)
    per_round = sum(steps_per_epoch(len(load_split(p).train), recipe.train) for p in sites.values())
    rounds = max(1, round(s.steps / per_round))
    plan = PlanConfig(
        name=work.name, sites={n: SiteConfig(data=p) for n, p in sites.items()}, rounds=rounds,
        local_epochs=1, network=recipe.network, train=recipe.train, min_sites=1, seed=seed,
        strategy=StrategyConfig(name="fedavg"), privacy=PrivacyConfig(min_summary_cases=1),
    )  # fmt: skip
    run = run_plan(work, plan, engine)
    return load_model(model_path(run, rounds)).weights, rounds * per_round


def score(recipe: RecipeConfig, weights: Weights, cases: Sequence[Case]) -> dict[str, float]:
    """The table's columns on ``cases`` (site4) via ``model.evaluate``."""
    from fedseg.train.validate import validate_cases

    summaries = summarize_cases(validate_cases(recipe.network, recipe.train, weights, cases))
    return {label: float(summaries[r][m].mean) for label, r, m in COLUMNS}


# ----------------------------------------------------------------- the generator


def bank_federation(
    work: Path, sites: dict[str, Path], s: Settings, seed: int, engine: str
) -> Path:
    """A ``task: synthesis`` run (modality-fedavg) over ``sites``; its best generator file."""
    from fedseg.run_folder import BEST_MODEL
    from fedseg.synth.config import PretrainConfig, SynthesisConfig

    syn = SynthesisConfig(
        pretrain=PretrainConfig(rounds=s.pretrain_rounds, steps_per_round=s.pretrain_steps),
        steps_per_round=s.bank_steps, seed=seed,
    )  # fmt: skip
    plan = PlanConfig(
        name=work.name, task="synthesis", sites={n: SiteConfig(data=p) for n, p in sites.items()},
        rounds=s.bank_rounds, min_sites=1, seed=seed, synthesis=syn,
        strategy=StrategyConfig(name="modality-fedavg"), privacy=PrivacyConfig(min_summary_cases=1),
    )  # fmt: skip
    return run_plan(work, plan, engine) / BEST_MODEL


def sample_set(generator: Path, data: Data, out: Path, n: int, seed: int) -> list[Case]:
    """``fedseg sample``'s function: ``n`` synthetic cases from the phantom label maps."""
    from fedseg.model.generator_file import load_generator
    from fedseg.synth.sample import sample_dataset

    shutil.rmtree(out, ignore_errors=True)
    sample_dataset(load_generator(generator), data.phantoms, out, n=n, seed=seed,
                   generator=generator)  # fmt: skip
    return discover_cases(out)


def completed_site(generator: Path, site: Path, out: Path) -> Path:
    """A copy of ``site`` completed by ``fedseg complete``'s function (its declared
    absences, every labelled case)."""
    from fedseg.data.site_config import read_site_config
    from fedseg.model.generator_file import load_generator
    from fedseg.synth.complete import complete_case

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(site, out, ignore=shutil.ignore_patterns(".fedseg"))
    gf = load_generator(generator)
    absent = read_site_config(out).absent_modalities
    for case in discover_cases(out):
        if case.label is not None:
            complete_case(gf, case, absent)
    return out


# --------------------------------------------------------------- image quality


@dataclass
class Quality:
    """Per (row, modality): SSIM brain-masked, SSIM whole-slice, PSNR brain; per case."""

    values: dict[tuple[str, str], list[dict[str, float]]] = field(default_factory=dict)

    def add(self, row: str, modality: str, fake: np.ndarray, real: np.ndarray,
            brain: np.ndarray) -> None:  # fmt: skip
        from fedseg.synth.validate import image_metrics

        masked = image_metrics(fake, real, brain, spatial_dims=2)
        whole = np.zeros_like(brain)
        whole[..., brain.any(axis=(0, 1))] = True  # the slices with brain, background included
        slices = image_metrics(fake, real, whole, spatial_dims=2)
        self.values.setdefault((row, modality), []).append(
            {"ssim": masked["ssim"], "ssim_whole": slices["ssim"], "psnr": masked["psnr"]}
        )

    def rows(self) -> list[dict[str, str]]:
        """Per modality (MODALITIES order), its rows in the order they were added."""
        out = []
        order = sorted(self.values, key=lambda k: MODALITIES.index(k[1]))
        for row, m in order:
            vals = self.values[(row, m)]
            mean = {k: statistics.fmean(v[k] for v in vals) for k in vals[0]}
            out.append({"images": row, "modality": NAMES[m], "cases": str(len(vals)),
                        "SSIM brain": f"{mean['ssim']:.3f}",
                        "SSIM whole-slice": f"{mean['ssim_whole']:.3f}",
                        "PSNR brain dB": f"{mean['psnr']:.2f}"})  # fmt: skip
        return out


def scaled(image: np.ndarray, brain: np.ndarray, percentile: float) -> np.ndarray:
    """A real volume on the generator's [0, 1] scale (``synth.data.scale_intensity``)."""
    from fedseg.synth.data import scale_intensity

    return scale_intensity(image[None], brain, percentile)[0]


def case_label_brain(case: Case) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(label BraTS 2021, brain mask of the present images, their (4, ...) stack)."""
    from fedseg.synth.complete import case_brain

    loaded = load_case(as_absent(case))
    assert loaded.label is not None
    label = loaded.label.astype(np.uint8)
    return label, case_brain(loaded.image, loaded.present, label), loaded.image


def completion_quality(
    q: Quality, data: Data, completed: dict[str, Path], percentile: float
) -> list[tuple[str, Case, str, np.ndarray, np.ndarray, np.ndarray]]:
    """Completions vs ``heldback/``, the constant baseline beside; returns figure rows."""
    fig = []
    for site, folder in completed.items():
        m = MISSING[site]
        for case in discover_cases(folder):
            label, brain, _ = case_label_brain(case)
            truth = data.heldback / site / case.case_id / f"{case.case_id}_{m}.nii.gz"
            real = scaled(nifti.load_array(truth), brain, percentile)
            fake = nifti.load_array(case.images[m].path)
            q.add(f"completed {site} vs held-back", m, fake, real, brain)
            const = brain * float(real[brain].mean())
            q.add(f"constant baseline vs {site} held-back", m, const, real, brain)
            if len(fig) < len(completed) and all(r[0] != site for r in fig):
                fig.append((site, case, m, label, real, fake))
    return fig


def sample_quality(q: Quality, generator: Path, holdout: list[Case], n_figure: int) -> list[object]:
    """Renders from site4's label maps vs site4's real images (+ the constant baseline);
    the figure rows of the first ``n_figure`` cases."""
    from fedseg.model.generator_file import load_generator
    from fedseg.synth.figures import SampleRow
    from fedseg.synth.render import render_volume

    gf = load_generator(generator)
    rows = []
    for case in holdout:
        label, brain, image = case_label_brain(case)
        real, fake = {}, {}
        for i, m in enumerate(MODALITIES):
            real[m] = scaled(image[i], brain, gf.intensity_percentile)
            fake[m] = render_volume(gf, label, brain, m)
            q.add(f"rendered from {HOLDOUT} label maps", m, fake[m], real[m], brain)
            const = brain * float(real[m][brain].mean())
            q.add(f"constant baseline vs {HOLDOUT}", m, const, real[m], brain)
        if len(rows) < n_figure:
            rows.append(SampleRow(case.case_id, label, brain, real, fake))
    return rows


# ----------------------------------------------------------------------- tables


@dataclass
class Row:
    table: str
    name: str
    steps: list[int] = field(default_factory=list)
    scores: list[dict[str, float]] = field(default_factory=list)
    note: str = ""

    def mean(self, col: str) -> float:
        return statistics.fmean(s[col] for s in self.scores)

    def cell(self, col: str) -> str:
        vals = [s[col] for s in self.scores]
        digits = 1 if col.startswith("HD95") else 3
        if len(vals) > 1:
            return f"{statistics.fmean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"
        return f"{vals[0]:.{digits}f}"


def table_text(title: str, rows: Sequence[Row]) -> str:
    cols = ["row", *(c for c, _, _ in COLUMNS), "steps", "note"]
    body = [[r.name, *(r.cell(c) for c, _, _ in COLUMNS), str(r.steps[0]), r.note] for r in rows]
    return plain_table(title, cols, body)


def plain_table(title: str, cols: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(cols)]
    line = "  ".join("-" * w for w in widths)
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([title, fmt.format(*cols), line, *(fmt.format(*b) for b in body)]) + "\n"


def write_csv(path: Path, rows: Sequence[Row]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["table", "row", "seed_index", "steps", *(c for c, _, _ in COLUMNS)])
        for r in rows:
            for i, (st, sc) in enumerate(zip(r.steps, r.scores, strict=True)):
                w.writerow([r.table, r.name, i, st, *(f"{sc[c]:.4f}" for c, _, _ in COLUMNS)])


def goals(t1: dict[str, Row], t2: dict[str, Row], judged: bool) -> list[str]:
    """PASS/FAIL lines (Dice WT), with the reasons known for a failure."""
    lines = []
    tag = "" if judged else " (not judged: --quick/--tiny rows are not converged)"
    mb = t1["ModalityBank"].mean("Dice WT")
    for site in TRAIN_SITES:
        single = t1[f"Real-{site}"].mean("Dice WT")
        ok = mb > single
        why = "" if ok else (
            " — synthetic-only training learns the generator's idealised tumour (clean region "
            "boundaries, invented inner anatomy); see the ModalityBank x2N row for what more "
            "label maps buy"
        )  # fmt: skip
        lines.append(f"{'PASS' if ok else 'FAIL'} ModalityBank {mb:.4f} > Real-{site} "
                     f"{single:.4f} (Dice WT, Table I){why}{tag}")  # fmt: skip
    for site, m in MISSING.items():
        done, miss = (
            t2[f"Completed-{site}"].mean("Dice WT"),
            t2[f"Real-{site}-no-{m}"].mean("Dice WT"),
        )
        ok = done > miss
        why = "" if ok else (
            " — T1 carries little tumour contrast: completing it adds little over a zero channel"
            if m == "t1"
            else " — the completion draws the tumour from the label map but not the patient's "
            "anatomy; at this budget the zero channel may train as well"
        )  # fmt: skip
        lines.append(f"{'PASS' if ok else 'FAIL'} Completed-{site} {done:.4f} > Real-{site}-no-"
                     f"{m} {miss:.4f} (Dice WT, Table II){why}{tag}")  # fmt: skip
    return lines


# ------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    s = settings(args)
    console = Console()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    t_start = time.perf_counter()

    def step(what: str) -> None:
        console.print(f"[{time.perf_counter() - t_start:7.0f} s] {what}", highlight=False)

    lacks = ", ".join(f"{k} without {NAMES[m]}" for k, m in MISSING.items())
    step(f"data: 4 sites x {s.cases_per_site} cases at 4 mm (seed {DATA_SEED}), the same "
         f"with {lacks}, phantoms")  # fmt: skip
    data = make_data(out / "data", s)
    holdout = discover_cases(data.site(HOLDOUT))
    train = {site: list(load_split(data.site(site)).train) for site in TRAIN_SITES}
    train_missing = {site: list(load_split(data.site(site, True)).train) for site in TRAIN_SITES}
    n_union = sum(len(c) for c in train.values())
    t1: dict[str, Row] = {}
    t2: dict[str, Row] = {}
    quality = Quality()
    figure_rows: dict[str, list[object]] = {}

    def add(table: dict[str, Row], name: str, result: tuple[Weights, int], note: str = "") -> None:
        weights, steps = result
        row = table.setdefault(name, Row("I" if table is t1 else "II", name, note=note))
        row.steps.append(steps)
        row.scores.append(score(s.recipe, weights, holdout))
        step(f"  {name}: Dice WT {row.scores[-1]['Dice WT']:.3f} ({steps} steps)")

    for k, seed in enumerate(range(args.seeds)):
        w = work / f"seed{seed}"
        step(f"seed {seed} ({k + 1}/{args.seeds}): Table I")
        add(t1, "Real-All", train_central(w / "real-all", train, s, seed))
        for site in TRAIN_SITES:
            add(t1, f"Real-{site}", train_central(w / f"real-{site}", {site: train[site]}, s, seed))
        full_sites = {site: data.site(site) for site in TRAIN_SITES}
        add(t1, "FedAvg", train_fedavg(w / "fedavg", full_sites, s, seed, args.engine))
        step("  generator: bank federation, all modalities present")
        g1 = bank_federation(w / "bank-full", full_sites, s, seed, args.bank_engine)
        for name, n in (("ModalityBank", n_union), ("ModalityBank x2N", 2 * n_union)):
            cases = sample_set(g1, data, w / f"sampled-{n}", n, seed)
            add(t1, name, train_central(w / f"mb-{n}", {"synthetic": cases}, s, seed),
                f"{n} sampled cases")  # fmt: skip

        step(f"seed {seed}: Table II")
        for site, m in MISSING.items():
            result = train_central(w / f"missing-{site}", {site: train_missing[site]}, s, seed)
            add(t2, f"Real-{site}-no-{m}", result, f"{NAMES[m]} zero")
        miss_sites = {site: data.site(site, True) for site in TRAIN_SITES}
        add(t2, "FedAvg", train_fedavg(w / "fedavg-missing", miss_sites, s, seed, args.engine))
        step("  generator: bank federation with the absences")
        g2 = bank_federation(w / "bank-missing", miss_sites, s, seed, args.bank_engine)
        cases = sample_set(g2, data, w / "sampled-missing", n_union, seed)
        add(t2, "ModalityBank", train_central(w / "mb-missing", {"synthetic": cases}, s, seed),
            f"{n_union} sampled cases")  # fmt: skip
        completed: dict[str, Path] = {}
        for site, m in MISSING.items():
            folder = completed_site(g2, data.site(site, True), w / f"completed-{site}")
            make_split(folder, val_fraction=VAL_FRACTION, seed=DATA_SEED)
            completed[site] = folder
            add(t2, f"Completed-{site}", train_central(
                w / f"completed-run-{site}", {site: list(load_split(folder).train)}, s, seed),
                f"{NAMES[m]} completed")  # fmt: skip
        if k == 0:  # image quality and figures from the first seed's generators
            step("image quality: completions vs held-back, site4 renders vs real")
            from fedseg.model.generator_file import load_generator

            pct = load_generator(g2).intensity_percentile  # the generator's own scale
            figure_rows["completion"] = completion_quality(quality, data, completed, pct)
            figure_rows["samples"] = sample_quality(quality, g1, holdout, s.figure_cases)
            figures(out, figure_rows)

    report(out, s, args, t1, t2, quality)
    step(f"done; results in {out}")


def figures(out: Path, rows: dict[str, list[object]]) -> None:
    from fedseg.synth.figures import CompletionRow, SampleRow, completion_figure, samples_figure

    samples = [r for r in rows["samples"] if isinstance(r, SampleRow)]
    samples_figure(samples, out / "fig_samples.png")
    comp = [CompletionRow(f"{site} {case.case_id}", m, label, fake, real, fake > 0)
            for site, case, m, label, real, fake in rows["completion"]]  # type: ignore[misc]  # fmt: skip
    completion_figure(comp, out / "fig_completion.png")


def report(out: Path, s: Settings, args: argparse.Namespace,
           t1: dict[str, Row], t2: dict[str, Row], quality: Quality) -> None:  # fmt: skip
    size = "tiny" if args.tiny else "quick" if args.quick else "full"
    head = (f"{size} run, {args.seeds} seed(s), {s.cases_per_site} cases per site, "
            f"{s.steps} optimizer steps per segmentation row, scores on {HOLDOUT} (held out); "
            f"FedAvg engine {args.engine}, bank engine {args.bank_engine}; image quality and "
            "figures from the first seed's generators\n")  # fmt: skip
    q_rows = quality.rows()
    q_cols = list(q_rows[0]) if q_rows else []
    text = "\n".join([
        head,
        table_text("Table I: all modalities present", list(t1.values())),
        table_text("Table II: site1 without T1, site2 without T1Gd, site3 without FLAIR",
                   list(t2.values())),
        plain_table("Image quality (images on [0, 1]; SSIM brain-masked first, whole-slice "
                    "includes the zero background and reads high)", q_cols,
                    [list(r.values()) for r in q_rows]),
        "\n".join(goals(t1, t2, s.judged)),
        "",
        "Limits: the generator is label-driven, so a completed image has the case's tumour and "
        "a plausible, not the patient's, inner anatomy; on these atlas-based synthetic sites "
        "the anatomy is learnable as the mean brain, which flatters completion SSIM against "
        "real data. Phantom label maps come from the same simulator as the test site.",
    ])  # fmt: skip
    (out / "tables.txt").write_text(text + "\n")
    write_csv(out / "table1.csv", list(t1.values()))
    write_csv(out / "table2.csv", list(t2.values()))
    with (out / "quality.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=q_cols)
        writer.writeheader()
        writer.writerows(q_rows)
    print(text, flush=True)  # plain: tables wider than a terminal must not wrap


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="results folder (data and runs too)")
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="every row, smallest sizes (<20 min)")
    size.add_argument("--tiny", action="store_true", help="smoke test: tiny nets, seconds a row")
    ap.add_argument("--seeds", type=int, default=1, help="seeds per row (mean ± sd)")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per row")
    ap.add_argument("--bank-rounds", type=int, default=None,
                    help="bank rounds of the generator federations")  # fmt: skip
    ap.add_argument("--engine", choices=("local", "simulate"), default="local",
                    help="FedAvg rows: in-process round loop or fedseg simulate")  # fmt: skip
    ap.add_argument("--bank-engine", choices=("local", "simulate"), default="simulate",
                    help="the generator's federation (default: fedseg simulate)")  # fmt: skip
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    run(parse(argv))


if __name__ == "__main__":
    main()
