"""The report's sections of a synthesis run (plan ``task: synthesis``, meta ``task``).

- ``what_left_section``: what left each site: its modality set, the bytes it sent per
  round (``site_rounds.bytes_received``: site -> aggregator), the kinds of values that
  travel, and the disclosure note that a trained generator was fit to site images.
- ``samples_section``: the best generator (``best.pt``) rendered on phantom label maps
  that belong to no patient (``phantom_label_maps``: ``fedseg data synth``'s simulator
  with plan ``synthesis.samples.label_seed`` and ``.n``, 4 mm), one row per phantom:
  its label map, then each modality, the axial slice with the most tumour
  (``figures.sample_grid_figure``).
  The aggregator has no real image to draw; figures with real images are made where the
  images are (the benchmark, ``fedseg complete`` at a site).
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from fedseg.errors import FedsegError
from fedseg.plan import PlanConfig
from fedseg.run_folder import BEST_MODEL, SiteRoundStatus
from fedseg.tracking import figures
from fedseg.tracking.report.markup import img, section, table
from fedseg.tracking.status import StatusView, modality_text
from fedseg.tracking.store import RunStore

#: voxel size of the phantom label maps the report renders (the CPU recipe's grid)
PHANTOM_SPACING_MM = 4.0

DISCLOSURE_NOTE = (
    "A trained generator was fit to the sites' images: like a segmentation model's weights, "
    "it is a disclosure channel (a label-conditioned generator trained with an L1 loss can "
    "reproduce a small site's cases from their label maps). Share the round models, "
    "<code>best.pt</code> and images sampled from it with the care due to what they were "
    "trained on, not as public data."
)


def what_left_section(store: RunStore, status: StatusView, plan: PlanConfig | None) -> str:
    """Per site: the modality set it declared, the rounds it answered, the bytes it sent
    per round (mean, largest, total) and received; what kinds of values travel."""
    mods = status.synthesis.modalities if status.synthesis is not None else {}
    sent: dict[str, list[int]] = {}
    got: dict[str, list[int]] = {}
    for r in store.site_rounds():
        if r.status != SiteRoundStatus.OK:
            continue
        if r.bytes_received is not None:
            sent.setdefault(r.site, []).append(int(r.bytes_received))
        if r.bytes_sent is not None:
            got.setdefault(r.site, []).append(int(r.bytes_sent))
    rows: list[list[object]] = []
    for s in status.sites:
        b = sent.get(s.site, [])
        rows.append([
            s.site, modality_text(mods.get(s.site)), len(b),
            _size(np.mean(b)) if b else "-", _size(max(b)) if b else "-",
            _size(sum(b)) if b else "-", _size(np.mean(got[s.site])) if got.get(s.site) else "-",
        ])  # fmt: skip
    floor = plan.privacy.min_summary_cases if plan is not None else None
    central = plan is not None and plan.synthesis.mode == "central"
    body = [
        "<p>Only parameters leave a site: the generator's arrays (the bank of each modality "
        "it has trained; the other banks and the frozen kernel as it received them), its "
        "case counts, its training loss and validation summaries (SSIM, PSNR, MAE means "
        f"over at least {floor if floor is not None else 'the plan&#x27;s'} cases). Images, "
        "label maps, brain masks, per-case values and the site's discriminators never "
        "leave it.</p>",
    ]
    if central:
        body.append("<p class='alarm'>label maps leave the sites (synthesis.mode: central)</p>")
    best = store.meta.best()
    if best is not None:
        body.append(f"<p>Best generator: model round {best.model_round}.</p>")
    head = ["site", "modalities", "rounds", "site → aggregator / round", "largest round",
            "total", "aggregator → site / round"]  # fmt: skip
    body.append(table(head, rows))
    body.append(
        "<p class='note'>Bytes of the messages as the aggregator counted them (the "
        "generator's arrays with their framing, the counts and summaries).</p>"
    )
    body.append(f"<p class='note'>{DISCLOSURE_NOTE}</p>")
    return section("what-left", "What left the sites", *body)


def phantom_label_maps(seed: int, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (label, brain mask) pairs, (X, Y, Z) at 4 mm: the label maps and brain masks
    that ``fedseg data synth --labels-only --sites 1 --cases-per-site N --seed SEED
    --spacing 4`` writes (atlas anatomy, a drawn tumour; no patient's data)."""
    from fedseg.data.synth import SynthConfig, synth_case

    cfg = SynthConfig(sites=1, cases_per_site=max(n, 1), seed=seed, spacing=PHANTOM_SPACING_MM)
    profiles = cfg.site_profiles()
    out = []
    for i in range(n):
        case = synth_case(cfg, profiles, 0, i)
        out.append((case.label, np.asarray(case.anatomy.brain).astype(bool)))
    return out


def sample_grid(
    run: Path, plan: PlanConfig | None, model_round: int | None = None
) -> tuple[bytes, str]:
    """The PNG of the best generator on phantom label maps and a caption; raises
    ``FedsegError`` (one line) when it cannot be drawn."""
    from fedseg.model.generator_file import load_generator
    from fedseg.synth.render import render_volume

    path = Path(run) / BEST_MODEL
    if not path.is_file():
        raise FedsegError(f"no {BEST_MODEL} in the run folder yet (no validated round)")
    if plan is None:
        raise FedsegError("the run folder has no plan (synthesis.samples)")
    samples = plan.synthesis.samples
    if samples.n == 0:
        raise FedsegError("synthesis.samples.n is 0 in the plan")
    gf = load_generator(path)
    mods = list(gf.config.modalities)
    maps = phantom_label_maps(samples.label_seed, samples.n)
    zs = [int(np.argmax((lab > 0).sum(axis=(0, 1)))) for lab, _ in maps]  # most tumour
    labels = np.stack([lab[:, :, z] for (lab, _), z in zip(maps, zs, strict=True)], axis=2)
    brains = np.stack([b[:, :, z] for (_, b), z in zip(maps, zs, strict=True)], axis=2)
    if gf.config.spatial_dims == 2:  # slice by slice: the chosen slices as one volume
        images = {m: render_volume(gf, labels, brains, m) for m in mods}
    else:  # whole volumes, then their chosen slices
        images = {m: np.stack([render_volume(gf, lab, b, m)[:, :, z]
                               for (lab, b), z in zip(maps, zs, strict=True)], axis=2)
                  for m in mods}  # fmt: skip
    rows = [
        (labels[:, :, i], brains[:, :, i], [images[m][:, :, i] for m in mods])
        for i in range(len(maps))
    ]
    titles = [m if m in gf.trained else f"{m} (not trained)" for m in mods]
    png = figures.sample_grid_figure(rows, titles)
    mr = "?" if model_round is None else model_round
    caption = (
        f"{BEST_MODEL} (model round {mr}) on {samples.n} phantom label maps (seed "
        f"{samples.label_seed}, {PHANTOM_SPACING_MM:g} mm, the simulator of <code>fedseg "
        "data synth</code>: nobody's anatomy or tumour), the axial slice with the most "
        "tumour; first column the label map (brain grey, NCR red, ED green, ET yellow), then "
        "each modality."
    )
    return png, caption


def samples_section(run: Path, store: RunStore, plan: PlanConfig | None) -> str:
    """The sample grid, or one line saying why there is none."""
    best = store.meta.best()
    try:
        png, caption = sample_grid(run, plan, best.model_round if best is not None else None)
    except FedsegError as exc:
        return section(
            "samples",
            "Samples of the generator",
            f"<p>No sample grid: {html.escape(str(exc))}.</p>",
        )
    return section("samples", "Samples of the generator", f"<p>{caption}</p>",
                   img(png, "generator samples on phantom label maps"))  # fmt: skip


def _size(n: float) -> str:
    """``2.3 MB``, ``812 kB``, ``64 B`` (decimal units)."""
    for unit, k in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{int(n)} B"
