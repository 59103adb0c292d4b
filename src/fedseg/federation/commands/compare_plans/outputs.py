"""The results of ``fedseg compare``: one row per run, written as csv and markdown, shown
as a console table, and the validation curves plotted."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from fedseg.data.labels import REGIONS
from fedseg.federation.commands.compare_plans.arguments import CompareConfig

#: Result columns per model and case set: the regions and their mean.
COLUMNS = ("ET", "TC", "WT", "mean")


@dataclass
class RunOutcome:
    """One compared run: its kind (plan/central/single), local epochs per site, the
    validation curve ``[(epochs, mean Dice)]`` and its final and best model files."""

    label: str
    kind: str
    run_dir: Path
    epochs: float
    curve: list[tuple[float, float]]
    final: Path
    best: Path | None
    wall_s: float  #: its finished rounds' (epochs') walls summed, over every session
    scores: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    per_site: list[dict[str, Any]] = field(default_factory=list)


def result_rows(outcomes: Sequence[RunOutcome]) -> list[dict[str, Any]]:
    """One flat row per run: final/best Dice per region on the sites' validation cases and
    on the held-out sites, and the final mean Dice as a share of the centralized model's."""
    central = next((o for o in outcomes if o.kind == "central"), None)
    ref = central.scores.get("final", {}).get("val", {}).get("mean") if central else None
    singles = [o.scores["final"]["val"]["mean"] for o in outcomes if o.kind == "single"]
    rows = []
    for o in outcomes:
        row: dict[str, Any] = {"run": o.label, "kind": o.kind, "epochs_per_site": o.epochs}
        for which in ("final", "best"):
            for part in ("val", "holdout"):
                for r in COLUMNS:
                    v = o.scores.get(which, {}).get(part, {}).get(r)
                    row[f"{which}_{part}_{r}"] = v
        mean = row["final_val_mean"]
        row["share_of_central"] = mean / ref if ref and mean is not None else None
        # None: no single-site model to beat (--no-single-sites, --no-baselines)
        row["beats_all_single"] = (
            None if not singles else mean is not None and all(mean > s for s in singles)
        )
        row["wall_s"] = round(o.wall_s, 1)
        rows.append(row)
    return rows


def write_results(out: Path, outcomes: Sequence[RunOutcome], cfg: CompareConfig) -> None:
    rows = result_rows(outcomes)
    with (out / "results.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with (out / "per_site.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["run", "model", "site", "region", "dice"])
        w.writeheader()
        for o in outcomes:
            w.writerows(o.per_site)
    (out / "results.md").write_text(markdown_table(rows, cfg))
    plot_curves(out / "curves.png", outcomes)


def _f(v: Any, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


def markdown_table(rows: Sequence[dict[str, Any]], cfg: CompareConfig) -> str:
    held = bool(cfg.holdout)
    head = ["run", "kind", "epochs/site", "final ET", "final TC", "final WT", "final mean",
            "best mean"]  # fmt: skip
    if held:
        head += ["held-out ET", "held-out TC", "held-out WT", "held-out mean", "held-out best"]
    head += ["vs central", "beats every single site", "wall s"]
    lines = [
        f"Dice on the {len(cfg.sites)} sites' validation cases"
        + (f" and on held-out {', '.join(cfg.holdout)}" if held else "")
        + f"; budget {cfg.budget} local epochs per site"
        + (
            f" at most, each run stopped once its validation Dice gained no more than "
            f"{cfg.train.plateau.min_delta:g} in {cfg.train.plateau.rounds} rounds (epochs)"
            if cfg.train.plateau.rounds
            else ""
        )
        + f", seed {cfg.seed}"
        + (f", poisoned: {cfg.poison.site} ({cfg.poison.kind})" if cfg.poison else "")
        + ".",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for r in rows:
        cells = [r["run"], r["kind"], f"{r['epochs_per_site']:g}",
                 *(_f(r[f"final_val_{c}"]) for c in COLUMNS), _f(r["best_val_mean"])]  # fmt: skip
        if held:
            cells += [*(_f(r[f"final_holdout_{c}"]) for c in COLUMNS), _f(r["best_holdout_mean"])]
        beats = {True: "yes", False: "no", None: "-"}[r["beats_all_single"]]
        cells += [_f(r["share_of_central"], pct=True), beats, f"{r['wall_s']:g}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def results_table(outcomes: Sequence[RunOutcome], cfg: CompareConfig) -> Table:
    rows = result_rows(outcomes)
    table = Table(title="fedseg compare: mean Dice (final model; best in brackets)",
                  title_justify="left")  # fmt: skip
    for col in ("run", "kind", "ET", "TC", "WT", "mean", "held-out mean", "vs central"):
        table.add_column(col, justify="left" if col in ("run", "kind") else "right")
    for r in rows:
        table.add_row(
            r["run"], r["kind"], *(_f(r[f"final_val_{c}"]) for c in REGIONS),
            f"{_f(r['final_val_mean'])} ({_f(r['best_val_mean'])})",
            _f(r["final_holdout_mean"]), _f(r["share_of_central"], pct=True),
        )  # fmt: skip
    return table


def plot_curves(path: Path, outcomes: Sequence[RunOutcome]) -> Path:
    """Mean validation Dice against local epochs per site: plans solid, the centralized
    model dashed, single-site models dotted (validated on their own site)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5), dpi=120)
    style = {"plan": "-", "central": "--", "single": ":"}
    for o in outcomes:
        if not o.curve:
            continue
        xs, ys = zip(*o.curve, strict=True)
        label = o.label + (" (own site)" if o.kind == "single" else "")
        ax.plot(xs, ys, style[o.kind], marker="o" if o.kind == "plan" else None, ms=3,
                label=label, color="black" if o.kind == "central" else None)  # fmt: skip
    ax.set_xlabel("local epochs per site")
    ax.set_ylabel("mean validation Dice (ET, TC, WT)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
