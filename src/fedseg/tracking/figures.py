"""Report figures as PNG bytes (matplotlib, Agg canvas, no pyplot state).

Colours: sites take the tab10 cycle in name order; the federation is black.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from fedseg.model.summary import Summary
from fedseg.tracking.contributions import ContributionEstimate, SiteContribution, estimate_kind
from fedseg.tracking.cross_matrix import CrossCell, cross_matrix
from fedseg.tracking.curves import ALL_REGIONS, METRIC_LABELS, Curves, ci95
from fedseg.tracking.paired_test import CaseTable, paired_test, values

TAB10 = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
DPI = 100


def site_colours(sites: list[str]) -> dict[str, str]:
    """Stable colour per site (tab10 by sorted name)."""
    return {s: TAB10[i % len(TAB10)] for i, s in enumerate(sorted(sites))}


def to_png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _band(ax, curve: dict[int, Summary], colour: str, label: str, lw: float = 1.5) -> float:
    """Mean line and 95% CI band; returns the highest value drawn."""
    x = np.array(sorted(curve))
    m = np.array([curve[k].mean for k in x])
    lo_hi = np.array([ci95(curve[k]) for k in x])
    ax.plot(x, m, color=colour, lw=lw, label=label, marker="o", ms=2.5)
    ax.fill_between(x, lo_hi[:, 0], lo_hi[:, 1], color=colour, alpha=0.18, lw=0)
    return float(np.nanmax(np.concatenate([m, lo_hi[:, 1]])))


def curves_figure(
    by_region: dict[str, Curves],
    federation: dict[str, dict[int, Summary]],
    flagged: dict[str, int] | None = None,
    metric: str = "dice",
    groups: tuple[str, ...] = ALL_REGIONS,
) -> bytes:
    """Per-site and pooled validation curves with 95% CI bands, one panel per group
    (ET/TC/WT/mean; a synthesis run's modalities and mean: 2 x 3 panels).

    ``flagged`` maps a site to the first round an alarm held; drawn as a dashed line.
    """
    sites = sorted({s for c in by_region.values() for s in c})
    colours = site_colours(sites)
    ncols = 2 if len(groups) <= 4 else 3
    nrows = -(-len(groups) // ncols)
    fig = Figure(figsize=(11 if ncols == 2 else 14, 3.75 * nrows))
    axes = fig.subplots(nrows, ncols, sharex=True).ravel()
    for i, ax in enumerate(axes[len(groups) :], start=len(groups)):
        ax.set_visible(False)
        axes[i - ncols].tick_params(labelbottom=True)  # the panel above shows the rounds
    label = METRIC_LABELS.get(metric, metric)
    for ax, region in zip(axes, groups, strict=False):
        top = 0.0
        for s in sites:
            if by_region.get(region, {}).get(s):
                top = max(top, _band(ax, by_region[region][s], colours[s], s))
        if federation.get(region):
            top = max(top, _band(ax, federation[region], "black", "federation (pooled)", lw=2.2))
        for s, rnd in (flagged or {}).items():
            ax.axvline(rnd, color=colours.get(s, "red"), ls="--", lw=1)
        ax.set_title(f"{region} {label}")
        ax.set_xlabel("model round")
        ax.set_ylabel(f"validation {label}")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if metric in ("dice", "jaccard", "sensitivity", "specificity", "ssim"):
            # Full [0, 1] once the curves are up there; zoomed in on an early, low run.
            ax.set_ylim(-0.02, min(1.02, max(0.25, top + 0.05)))
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(
            handles,
            labels,
            loc="lower center",
            ncol=min(len(labels), 6),
            frameon=False,
            bbox_to_anchor=(0.5, -0.02),
        )
    fig.suptitle("Validation of the global model at each site (mean and 95% CI)")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return to_png(fig)


def violin_figure(tables: dict[str, CaseTable], metric: str = "dice") -> bytes:
    """Violins of per-case ``metric`` per region for each model; p vs the first model."""
    names = list(tables)
    fig = Figure(figsize=(11, 7.5))
    axes = fig.subplots(2, 2).ravel()
    colours = [TAB10[i % len(TAB10)] for i in range(len(names))]
    for ax, region in zip(axes, ALL_REGIONS, strict=True):
        data = [values(tables[n], region, metric) for n in names]
        arrays = [np.array(list(d.values())) for d in data]
        pos = [i + 1 for i, a in enumerate(arrays) if a.size > 0]
        if pos:
            parts = ax.violinplot(
                [arrays[p - 1] for p in pos], positions=pos, showmedians=True, showextrema=False
            )
            for body, p in zip(parts["bodies"], pos, strict=True):
                body.set_facecolor(colours[p - 1])
                body.set_edgecolor("black")
                body.set_alpha(0.7)
            for p in pos:
                ax.scatter(
                    np.full(arrays[p - 1].size, p),
                    arrays[p - 1],
                    s=6,
                    color="black",
                    alpha=0.5,
                    zorder=3,
                )
        ticks = list(names)
        for j in range(1, len(names)):
            keys = sorted(set(data[0]) & set(data[j]))
            if keys:
                _, p = paired_test(
                    np.array([data[0][k] for k in keys]), np.array([data[j][k] for k in keys])
                )
                ticks[j] = f"{names[j]}\np={p:.3g} (n={len(keys)})"
        ax.set_xticks(range(1, len(names) + 1), ticks)
        ax.set_title(f"{region} {metric} per case")
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Per-case comparison (paired Wilcoxon signed-rank p vs the first model)", y=1.02)
    fig.tight_layout()
    return to_png(fig)


def contributions_figure(contribs: list[SiteContribution], label: str = "Dice") -> bytes:
    """Bars per site: attributed gain of the ``label`` score (all sites, others only) and
    share vs weight."""
    sites = [c.site for c in contribs]
    colours = site_colours(sites)
    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(len(sites))
    ax1.bar(
        x - 0.2,
        [c.dice_gain for c in contribs],
        0.4,
        color=[colours[s] for s in sites],
        label="federation",
    )
    ax1.bar(
        x + 0.2,
        [c.dice_gain_others for c in contribs],
        0.4,
        color=[colours[s] for s in sites],
        alpha=0.5,
        hatch="//",
        label="other sites",
    )
    ax1.axhline(0, color="black", lw=0.8)
    ax1.set_xticks(x, sites)
    ax1.set_ylabel(f"attributed {label} gain (sum over rounds)")
    ax1.set_title(f"{label} gain attributed to each site")
    ax1.legend(frameon=False)
    ax2.bar(x - 0.2, [c.mean_weight for c in contribs], 0.4, color="#bbbbbb", label="weight")
    ax2.bar(
        x + 0.2,
        [c.mean_share for c in contribs],
        0.4,
        color=[colours[s] for s in sites],
        label="share of step",
    )
    ax2.axhline(0, color="black", lw=0.8)
    ax2.set_xticks(x, sites)
    ax2.set_title("Aggregation weight vs share of the aggregate step")
    ax2.legend(frameon=False)
    fig.tight_layout()
    return to_png(fig)


def cross_matrix_figure(cells: dict[str, list[CrossCell]], label: str = "Dice") -> bytes:
    """Heatmaps of the cross-site matrix, one panel per region: row = whose local models,
    column = whose validation cases, colour = the local model minus the global model
    (rounds collapsed; red: worse), the value written in each cell; the home diagonal (a
    site's own cases) is framed in black, cells without evidence are grey."""
    regions = [g for g in cells if cells[g]]
    models = sorted({c.model_site for g in regions for c in cells[g]})
    evaluators = sorted({c.eval_site for g in regions for c in cells[g]} | set(models))
    ncols = 2 if len(regions) > 1 else 1
    nrows = -(-len(regions) // ncols)
    size = max(3.2, 0.55 * len(evaluators) + 1.6)
    fig = Figure(
        figsize=(size * ncols + 1.2, 0.55 * len(models) * nrows + 1.6 * nrows), layout="constrained"
    )
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
    vmax = max([abs(c.mean) for g in regions for c in cells[g]] + [0.05])
    im = None
    for ax, region in zip(axes, regions, strict=False):
        rows, cols, m = cross_matrix(cells[region])
        full = np.full((len(models), len(evaluators)), np.nan)
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                full[models.index(r), evaluators.index(c)] = m[i, j]
        ax.set_facecolor("#dddddd")
        im = ax.imshow(np.ma.masked_invalid(full), cmap="RdBu", vmin=-vmax, vmax=vmax,
                       aspect="auto")  # fmt: skip
        for i in range(len(models)):
            for j in range(len(evaluators)):
                if np.isfinite(full[i, j]):
                    ax.text(j, i, f"{full[i, j]:+.2f}", ha="center", va="center", fontsize=7,
                            color="white" if abs(full[i, j]) > 0.6 * vmax else "black")  # fmt: skip
                if models[i] == evaluators[j]:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2,
                                           edgecolor="black"))  # fmt: skip
        ax.set_xticks(range(len(evaluators)), evaluators, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(models)), models, fontsize=8)
        ax.set_xlabel("validation cases of")
        ax.set_ylabel("local models of")
        ax.set_title(f"{region}: local - global {label}")
    for ax in axes[len(regions) :]:
        ax.set_visible(False)
    if im is not None:
        fig.colorbar(im, ax=list(axes[: len(regions)]), shrink=0.8, label=f"{label} difference")
    fig.suptitle("Cross-site validation: each site's local models on each site's cases "
                 "(framed: its own cases)")  # fmt: skip
    return to_png(fig)


def estimates_figure(estimates: list[ContributionEstimate], label: str = "Dice") -> bytes:
    """Each site's contribution to the other sites in the region that ranks it, with its
    95 % interval (red: harmful, green: helps, grey: neutral)."""
    colour = {"harmful": "#d62728", "helps": "#2ca02c", "neutral": "#7f7f7f"}
    fig = Figure(figsize=(8, 0.45 * len(estimates) + 1.4))
    ax = fig.subplots()
    y = np.arange(len(estimates))[::-1]
    for yi, e in zip(y, estimates, strict=True):
        ax.errorbar(e.effect, yi, xerr=[[e.effect - e.low], [e.high - e.effect]], fmt="o",
                    color=colour.get(e.verdict, "black"), capsize=3)  # fmt: skip
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, [f"{e.site} ({e.region})" for e in estimates])
    ax.set_xlabel(f"{label} the other sites gain from the site (sum over rounds)")
    ax.set_title(f"Site contributions ({estimate_kind(estimates)}, 95% interval)", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return to_png(fig)


def updates_figure(dist: dict[str, dict[int, float]], label: str) -> bytes:
    """Per-site update size (distance to the aggregate) over rounds."""
    colours = site_colours(list(dist))
    fig = Figure(figsize=(11, 3.5))
    ax = fig.subplots()
    for s in sorted(dist):
        x = sorted(dist[s])
        ax.plot(x, [dist[s][k] for k in x], marker="o", ms=3, color=colours[s], label=s)
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(label)
    ax.set_title(f"Site updates: {label}")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, ncol=min(len(dist), 6))
    fig.tight_layout()
    return to_png(fig)


def privacy_figure(spent: dict[str, dict[int, float]], budget: float | None, delta: float) -> bytes:
    """ε spent so far per site (``*``: every site, site-level DP) after each round, and the
    budget."""
    colours = site_colours(list(spent))
    fig = Figure(figsize=(11, 3.5))
    ax = fig.subplots()
    for s in sorted(spent):
        x = sorted(spent[s])
        label = "every site (site-level DP)" if s == "*" else s
        ax.plot(x, [spent[s][k] for k in x], marker="o", ms=3, color=colours[s], label=label)
    if budget is not None:
        ax.axhline(budget, color="black", ls="--", lw=1, label=f"budget ε={budget:g}")
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("ε spent")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Privacy: ε spent so far at δ={delta:g}")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, ncol=min(len(spent) + 1, 6))
    fig.tight_layout()
    return to_png(fig)


#: label map colours: NCR (1), ED (2), ET (4) (BraTS 2021 values); the brain is grey
LABEL_COLOURS = {1: "#d62728", 2: "#2ca02c", 4: "#ffdd00"}


def sample_grid_figure(
    rows: list[tuple[np.ndarray, np.ndarray, list[np.ndarray]]], titles: list[str]
) -> bytes:
    """One row per sample: its label map (2D, BraTS 2021 values) in colour over its brain
    mask (2D) in grey, then one grey image per entry of ``titles`` (2D, [0, 1]); axial
    slices shown with anterior up."""
    ncols = 1 + len(titles)
    fig = Figure(figsize=(2.0 * ncols, 2.0 * len(rows) + 0.3))
    axes = np.atleast_2d(fig.subplots(len(rows), ncols, squeeze=False))
    for i, (label, brain, images) in enumerate(rows):
        rgb = np.zeros((*label.shape, 3), dtype=np.float32)
        rgb[brain.astype(bool)] = 0.35
        for v, colour in LABEL_COLOURS.items():
            rgb[label == v] = [int(colour[k : k + 2], 16) / 255 for k in (1, 3, 5)]
        axes[i, 0].imshow(np.rot90(rgb))
        for j, im in enumerate(images):
            axes[i, j + 1].imshow(np.rot90(im), cmap="gray", vmin=0.0, vmax=1.0)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, title in zip(axes[0], ["label map", *titles], strict=True):
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return to_png(fig)
