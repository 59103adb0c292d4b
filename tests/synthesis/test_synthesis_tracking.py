"""What the coordinator sees of a synthesis run (meta ``task: synthesis``): the one round-score
rule with SSIM over the modalities each site validates, select, alarms, status at 80
columns, the report's synthesis sections, ``plan init --task synthesis`` and ``export``'s
refusal of a generator file. Stores are written by hand (validation rows per modality)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel
from rich.console import Console
from typer.testing import CliRunner

from fedseg.cli.main import _register, app
from fedseg.data.cases import MODALITIES
from fedseg.errors import FedsegError
from fedseg.model.summary import Summary
from fedseg.plan import AlarmConfig, load_plan
from fedseg.run_folder import PLAN_FILE, DeclaredCases, Task
from fedseg.synth.config import SynthesisConfig
from fedseg.tracking.alarms import BELOW, evaluate_alarms
from fedseg.tracking.curves import (
    SEGMENTATION_SCORE,
    SYNTHESIS_SCORE,
    curves_from_rows,
    round_scores,
    site_curves,
)
from fedseg.tracking.report import build_report
from fedseg.tracking.selection import best_round, choose
from fedseg.tracking.status import read_status, render_status
from fedseg.tracking.store import RunStore, SiteRound, ValidationRow

_register()
runner = CliRunner()

#: modality offsets from a site's mean SSIM (average 0 over all four)
OFFSET = {"t1": -0.03, "t1ce": -0.01, "t2": 0.01, "flair": 0.03}


def synthesis_run(
    run: Path,
    ssim: Mapping[str, Sequence[float]],
    *,
    absent: Mapping[str, Sequence[str]] | None = None,
    n_val: Mapping[str, int] | None = None,
    by_modality: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
    pretrain: int = 1,
    checkpoints: bool = True,
) -> Path:
    """A finished synthesis run: model rounds 0..L-1 validated at every site on the
    modalities it has (SSIM = its series + ``OFFSET``, or ``by_modality``; PSNR and MAE
    alongside), site rows with bytes, the declared modality sets, a plan with
    ``pretrain`` pre-training rounds, and (with ``checkpoints``) a checkpoint row per
    model round."""
    run.mkdir(parents=True, exist_ok=True)
    absent = absent or {}
    sites = sorted(ssim)
    length = len(next(iter(ssim.values())))
    (run / PLAN_FILE).write_text(
        "task: synthesis\nsites:\n"
        + "".join(f"  {s}: {{}}\n" for s in sites)
        + f"rounds: {length - 1 - pretrain}\nsynthesis:\n  pretrain:\n    rounds: {pretrain}\n"
    )
    with RunStore(run) as store:
        store.meta.set_task(Task.SYNTHESIS)
        store.meta.set_planned_rounds(length - 1)
        store.meta.set_declared({
            s: DeclaredCases(n_train=20, n_val=(n_val or {}).get(s, 4),
                             modalities=[m for m in MODALITIES if m not in absent.get(s, ())]
                             if s in absent else None)
            for s in sites
        })  # fmt: skip
        for mr in range(length):
            rnd = mr + 1
            if rnd < length:
                store.start_round(rnd)
            for s in sites:
                nv = (n_val or {}).get(s, 4)
                rows = {}
                for m in MODALITIES:
                    if m in absent.get(s, ()):
                        continue
                    v = (by_modality or {}).get(s, {}).get(m)
                    val = v[mr] if v is not None else ssim[s][mr] + OFFSET[m]
                    rows[m] = {
                        "ssim": Summary(float(val), 0.05, nv),
                        "psnr": Summary(20.0 + 10 * float(val), 1.0, nv),
                        "mae": Summary(0.2 - 0.1 * float(val), 0.01, nv),
                    }
                store.record_validation(mr, s, rows)
                if rnd < length:
                    store.record_site_round(SiteRound(
                        rnd, s, "ok", n_train=20, n_val=nv, train_loss=0.9 - 0.05 * rnd,
                        bytes_sent=2_300_000, bytes_received=2_300_000 + 1000 * rnd,
                        update_norm=1.0, update_distance=0.5,
                        extra={"phase": "pretrain" if rnd <= pretrain else "bank"},
                    ))  # fmt: skip
            if rnd < length:
                store.finish_round(rnd, n_sites=len(sites))
            if checkpoints:
                store.record_checkpoint(mr, run / "models" / f"round_{mr:04d}.pt")
    return run


def _text(renderable: object, width: int) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


# -- the one score rule ------------------------------------------------------------------


def _row(mr: int, site: str, region: str, v: float, metric: str = "ssim") -> ValidationRow:
    return ValidationRow(mr, site, region, metric, v, 0.0, 2)


def test_mean_is_over_the_groups_a_site_validates() -> None:
    """One rule for both tasks: a site's mean is over the groups it validates, present in
    a model round only when it validated all of them there."""
    rows = [
        *(_row(0, "a", m, v) for m, v in zip(MODALITIES, (0.2, 0.4, 0.6, 0.8), strict=True)),
        *(_row(0, "b", m, v) for m, v in zip(MODALITIES[:3], (0.3, 0.3, 0.6), strict=True)),
        *(_row(1, "b", m, 0.5) for m in MODALITIES[:2]),  # t2 missing in round 1
    ]
    got = curves_from_rows(rows, "mean", spec=SYNTHESIS_SCORE)
    assert {(s, m): v.mean for s, c in got.items() for m, v in c.items()} == pytest.approx(
        {("a", 0): 0.5, ("b", 0): 0.4}
    )
    # the segmentation spec ignores modality rows; its own rule is unchanged
    assert curves_from_rows(rows, "mean", "ssim", spec=SEGMENTATION_SCORE) == {}
    seg = [
        _row(0, "a", g, v, "dice") for g, v in zip(("ET", "TC", "WT"), (0.1, 0.2, 0.6), strict=True)
    ]
    seg += [_row(1, "a", g, 0.5, "dice") for g in ("ET", "TC")]  # WT missing: no mean
    assert {m: v.mean for m, v in curves_from_rows(seg)["a"].items()} == pytest.approx({0: 0.3})


def test_synthesis_best_round_is_the_highest_mean_ssim(tmp_path: Path) -> None:
    """``best_round(store)`` (what the coordinator's best.pt uses) picks by the run's task:
    mean SSIM over each site's own modalities, case-weighted over sites; a site without
    FLAIR is scored on its three."""
    flair_less = {"t1": [0.3, 0.5, 0.6, 0.6], "t1ce": [0.3, 0.5, 0.6, 0.6],
                  "t2": [0.3, 0.5, 0.6, 0.6]}  # fmt: skip
    # site a's FLAIR peaks at round 3, so with every modality the best would be 3;
    # b (no FLAIR) is flat from round 2: mean over its three modalities
    a = {"t1": [0.3, 0.6, 0.7, 0.5], "t1ce": [0.3, 0.6, 0.7, 0.5], "t2": [0.3, 0.6, 0.7, 0.5],
         "flair": [0.3, 0.4, 0.5, 0.99]}  # fmt: skip
    run = synthesis_run(
        tmp_path / "run", {"a": [0] * 4, "b": [0] * 4}, absent={"b": ["flair"]},
        by_modality={"a": a, "b": flair_less}, n_val={"a": 3, "b": 1},
    )  # fmt: skip
    with RunStore(run) as store:
        best = best_round(store)
        assert best is not None
        # round 2: a = (0.7*3 + 0.5)/4 = 0.65, b = 0.6 -> (3*0.65 + 0.6)/4 = 0.6375
        # round 3: a = (0.5*3 + 0.99)/4 = 0.6225, b = 0.6 -> 0.616875
        assert best[0] == 2 and best[1].mean == pytest.approx(0.6375) and best[1].n == 4
        assert round_scores(store) == round_scores(store, "mean", "ssim")
        assert best_round(store, metric="dice") is None  # no Dice in a synthesis run
        # each modality's best round: FLAIR from site a alone
        picks = choose(store, "triplet")
        assert picks["flair"] == (3, pytest.approx(0.99)) and picks["t1"][0] == 2
        singlet = choose(store, "singlet")
        assert list(singlet) == list(MODALITIES) and singlet["t1"] == (2, pytest.approx(0.6375))
        assert len(set(singlet.values())) == 1
        assert set(site_curves(store)) == {"a", "b"}


def test_select_singlet_exports_the_best_generator(tmp_path: Path) -> None:
    from fedseg.model.generator_file import load_generator
    from fedseg.tracking.selection import load_selection

    run = synthesis_run(tmp_path / "run", {"a": [0.3, 0.6, 0.5], "b": [0.2, 0.5, 0.45]})
    for mr in range(3):
        _generator(run / "models" / f"round_{mr:04d}.pt")
    out = tmp_path / "sel"
    res = runner.invoke(app, ["select", str(run), "--singlet", "--out", str(out)],
                        env={"COLUMNS": "200"})  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "modality" in res.output and "SSIM" in res.output
    sel = yaml.safe_load((out / "selection.json").read_text())
    assert (sel["task"], sel["metric"], sel["files"]) == (
        "synthesis",
        "ssim",
        ["generator_round0001.pt"],
    )
    gf = load_generator(out / "generator_round0001.pt")
    assert "model_round 1" in gf.meta["selection"]
    with pytest.raises(FedsegError, match="a generator selection"):
        load_selection(out)


def test_select_triplet_is_refused_for_a_generator(tmp_path: Path) -> None:
    run = synthesis_run(tmp_path / "run", {"a": [0.3, 0.5, 0.6], "b": [0.2, 0.4, 0.5]})
    res = runner.invoke(app, ["select", str(run), "--triplet", "--out", str(tmp_path / "s")])
    assert isinstance(res.exception, FedsegError)
    assert "a synthesis run trains one generator: use --singlet" in str(res.exception)


# -- alarms --------------------------------------------------------------------------------


def test_alarm_metric_follows_the_task(tmp_path: Path) -> None:
    """dice (the default, spelled out in every recorded plan.yaml) reads as ssim in a
    synthesis run; psnr is kept; mae (lower is better) and a region are refused at load."""
    assert AlarmConfig().for_task("synthesis").metric == "ssim"
    assert AlarmConfig(metric="dice").for_task("synthesis").metric == "ssim"
    assert AlarmConfig(metric="psnr").for_task("synthesis").metric == "psnr"
    assert AlarmConfig().for_task("segmentation") == AlarmConfig()
    for bad, line in (("metric: mae", "alarms.metric mae: a synthesis run's alarms watch"),
                      ("region: ET", "alarms.region ET: a synthesis run validates")):  # fmt: skip
        p = tmp_path / f"{bad[:3]}.yaml"
        p.write_text(f"task: synthesis\nsites: {{a: {{}}}}\nalarms:\n  {bad}\n")
        with pytest.raises(FedsegError, match=line):
            load_plan(p)


def test_below_federation_fires_on_ssim(tmp_path: Path) -> None:
    good = [0.3, 0.45, 0.55, 0.6, 0.63, 0.65, 0.66, 0.67, 0.68]
    bad = [v - 0.15 for v in good]
    run = synthesis_run(
        tmp_path / "run", {"a": good, "b": [g + 0.01 for g in good], "c": bad},
        absent={"b": ["t1ce"]},
    )  # fmt: skip
    with RunStore(run) as store:
        alarms = evaluate_alarms(store, 8, AlarmConfig())
    below = [a for a in alarms if a.kind == BELOW]
    assert [a.site for a in below] == ["c"] and "mean ssim below" in below[0].message


# -- status -------------------------------------------------------------------------------


def test_status_of_a_synthesis_run_at_80_columns(tmp_path: Path) -> None:
    run = synthesis_run(
        tmp_path / "run", {"site1": [0.3, 0.5, 0.6], "site2": [0.2, 0.45, 0.55]},
        absent={"site2": ["flair"]}, pretrain=1,
    )  # fmt: skip
    st = read_status(run)
    assert st.score is SYNTHESIS_SCORE and st.synthesis is not None
    assert st.synthesis.phase == "bank" and st.synthesis.round == 2
    assert st.synthesis.modalities == {"site1": MODALITIES, "site2": ("t1", "t1ce", "t2")}
    assert st.sites[1].scores["mean"] == pytest.approx(0.55 + (-0.03 - 0.01 + 0.01) / 3)
    out = _text(render_status(st), 80)  # the compact layout: tables without vertical rules
    lines = out.splitlines()
    assert max(len(ln) for ln in lines) <= 80 and "…" not in out
    assert "synthesis phase: bank (round 2; pre-training round 1)" in out
    assert "federation SSIM of model 2: 0." in out and "Dice" not in out
    tables = lines[next(i for i, ln in enumerate(lines) if ln.startswith("sites")) :]
    assert next(ln for ln in tables if ln.startswith("federation ")).count("0.") == 5
    row = {s: next(ln for ln in tables if ln.startswith(f"{s} ")) for s in ("site1", "site2")}
    assert "all" in row["site1"] and "t1 t1ce t2" in row["site2"]
    assert f"{0.6:.3f}" in row["site1"]  # the mean SSIM, not cut
    per = [ln for ln in tables if ln.startswith("site2 ")]
    assert len(per) == 2 and "absent" in per[1]  # FLAIR of the FLAIR-less site


@pytest.mark.parametrize("width", [40, 200])
def test_status_of_a_synthesis_run_fits_any_width(tmp_path: Path, width: int) -> None:
    """The status layout rule (tracking.status_layout) for a synthesis run: its own tables
    from 120 columns, one line per site (and the federation) under 60; nothing cut."""
    run = synthesis_run(
        tmp_path / "run", {"clinic_with_a_long_name": [0.3, 0.5, 0.6], "b": [0.2, 0.45, 0.55]},
        absent={"b": ["flair"]}, pretrain=1,
    )  # fmt: skip
    out = _text(render_status(read_status(run)), width)
    flat = " ".join(out.split())
    assert "…" not in out and "clinic_with_a_long_name" in flat and "absent" in flat
    assert max(len(ln) for ln in out.splitlines()) <= width
    if width == 40:
        assert "│" not in out and "flair absent" in flat and "federation model 2 SSIM" in flat
    else:
        assert "SSIM per modality (each site's latest validated model)" in out


def test_phase_comes_from_the_round_number_without_site_rows(tmp_path: Path) -> None:
    run = synthesis_run(tmp_path / "run", {"a": [0.3, 0.5, 0.6, 0.7]}, pretrain=2)
    with RunStore(run) as store:
        for r in store.site_rounds():  # an aggregator that wrote no phase
            store.record_site_round(SiteRound(r.round, r.site, "ok", n_train=20))
        store.start_round(4)
    st = read_status(run)
    assert st.synthesis is not None and (st.synthesis.phase, st.synthesis.round) == ("bank", 4)
    with RunStore(run) as store:
        store.discard_after(2)
    st = read_status(run)
    assert st.synthesis is not None and (st.synthesis.phase, st.synthesis.round) == ("pretrain", 2)


# -- report -------------------------------------------------------------------------------


def test_report_of_a_synthesis_run(tmp_path: Path) -> None:
    run = synthesis_run(
        tmp_path / "run", {"site1": [0.3, 0.5, 0.6, 0.62], "site2": [0.2, 0.45, 0.55, 0.6]},
        absent={"site2": ["flair"]},
    )  # fmt: skip
    text = build_report(run)
    for sec in ("summary", "curves", "what-left", "samples", "selection", "alarms"):
        assert f"<section id='{sec}'>" in text
    assert 'alt="validation curves"' in text and 'alt="validation curves psnr"' in text
    assert "<th>SSIM flair</th>" in text and "Dice" not in text.split("id='plan'")[0]
    assert "A trained generator was fit to the sites&#x27; images" not in text  # not escaped
    assert "A trained generator was fit to the sites' images" in text
    assert "t1 t1ce t2" in text and "2.3 MB" in text  # modality set, bytes per round
    assert "No sample grid" in text  # no best.pt in a hand-written store
    assert '<td class="l">triplet</td><td class="l">flair</td>' in text


def test_report_sample_grid_of_the_best_generator(tmp_path: Path) -> None:
    """best.pt rendered on phantom label maps (plan synthesis.samples): one PNG whose grid
    has a row per phantom; a modality no site trained is marked in its column title."""
    import base64
    import io
    import re

    from matplotlib.image import imread

    from fedseg.run_folder import BEST_MODEL, BestModel

    run = synthesis_run(tmp_path / "run", {"a": [0.3, 0.5, 0.6], "b": [0.2, 0.4, 0.5]})
    with (run / PLAN_FILE).open("a") as f:
        f.write("  samples:\n    label_seed: 7\n    n: 2\n")
    _generator(run / BEST_MODEL, trained=["t1", "t1ce", "t2"])
    with RunStore(run) as store:
        store.meta.set_best(BestModel(model_round=2, score=0.55, n_val=8, time=0.0))
    text = build_report(run)
    assert "No sample grid" not in text
    found = re.search(r'alt="generator samples on phantom label maps" '
                      r'src="data:image/png;base64,([^"]+)"', text)  # fmt: skip
    assert found is not None
    png = imread(io.BytesIO(base64.b64decode(found.group(1))), format="png")
    assert png.shape[0] > 300 and png.shape[1] > 4 * png.shape[0] / 2 * 0.9  # 2 rows, 5 cols
    assert "best.pt (model round 2) on 2 phantom label maps (seed 7" in text


def test_live_table_shows_ssim_per_modality(tmp_path: Path) -> None:
    from fedseg.federation.commands.watch import live_table

    run = synthesis_run(tmp_path / "run", {"a": [0.3, 0.5, 0.6], "b": [0.2, 0.4, 0.5]},
                        absent={"b": ["flair"]})  # fmt: skip
    with RunStore(run) as store:
        out = _text(live_table(store, load_plan(run / PLAN_FILE)), 200)
    assert "SSIM t1" in out and "SSIM flair" in out and "Dice" not in out
    row_b = next(ln for ln in out.splitlines() if ln.startswith("│ b "))
    assert row_b.count("0.") == 4  # t1, t1ce, t2 and the loss; no FLAIR


def test_contributions_and_compare_do_not_crash(tmp_path: Path) -> None:
    run = synthesis_run(tmp_path / "run", {"a": [0.3, 0.5, 0.6], "b": [0.2, 0.4, 0.5]})
    res = runner.invoke(app, ["contributions", str(run)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "SSIM gain" in res.output
    plan = tmp_path / "synth.yaml"
    runner.invoke(app, ["plan", "init", str(plan), "--task", "synthesis"])
    from fedseg.federation.commands.compare_plans.arguments import parse_plan_arg

    with pytest.raises(FedsegError, match="compare needs segmentation plans"):
        parse_plan_arg(str(plan))


# -- plan init, export --------------------------------------------------------------------


def _key_tree(model: type[BaseModel]) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, field in model.model_fields.items():
        ann = field.annotation
        out[name] = _key_tree(ann) if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return out


def _yaml_tree(doc: object) -> object:
    if isinstance(doc, dict):
        return {k: _yaml_tree(v) for k, v in doc.items()}
    return None


def test_plan_init_task_synthesis(tmp_path: Path) -> None:
    """The example has every key of synth/config.py, at its default (the CPU recipe), and
    loads as a synthesis plan."""
    plan = tmp_path / "plan.yaml"
    res = runner.invoke(app, ["plan", "init", str(plan), "--task", "synthesis"])
    assert res.exit_code == 0, res.output
    p = load_plan(plan)
    assert p.task == "synthesis" and p.synthesis == SynthesisConfig()
    assert p.strategy.name == "modality-fedavg" and p.alarms.for_task(p.task).metric == "ssim"
    assert _yaml_tree(yaml.safe_load(plan.read_text())["synthesis"]) == _key_tree(SynthesisConfig)
    bad = runner.invoke(app, ["plan", "init", str(tmp_path / "x.yaml"), "--task", "gan"])
    assert isinstance(bad.exception, FedsegError)


def _generator(path: Path, trained: Sequence[str] = MODALITIES) -> Path:
    from fedseg.model.generator import GeneratorConfig, new_generator_weights
    from fedseg.model.generator_file import GeneratorFile, save_generator

    cfg = GeneratorConfig(base_filters=4, depth=2)
    gf = GeneratorFile(cfg, new_generator_weights(cfg, seed=0), trained=list(trained))
    return save_generator(path, gf)


def test_export_refuses_a_generator_file(tmp_path: Path) -> None:
    gen = _generator(tmp_path / "best.pt")
    res = runner.invoke(app, ["export", str(gen), "--out", str(tmp_path / "ov")])
    assert isinstance(res.exception, FedsegError)
    assert str(res.exception) == f"export converts segmentation models; {gen} is a generator"
