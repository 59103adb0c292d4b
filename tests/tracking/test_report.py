from __future__ import annotations

import base64
import csv
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fedseg.errors import FedsegError
from fedseg.tracking.alarms import AlarmConfig, replay_alarms
from fedseg.tracking.report import ReportInputs, build_report, write_report
from fedseg.tracking.store import RunStore
from tests.tracking.conftest import chromium, noisy, rising, write_plan

SECTIONS = ("summary", "alarms", "crosssite", "curves", "selection", "contributions", "updates",
            "comparison", "plan", "events")  # fmt: skip
IMG = re.compile(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')
#: tab10 colours of the first three sites (blue, orange, green).
SITE_RGB = ((31, 119, 180), (255, 127, 14), (44, 160, 44))


def case_csv(path: Path, shift: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["site", "case_id", "ET_dice", "TC_dice", "WT_dice", "ET_hd95"])
        for i in range(20):
            d = np.clip(0.4 + shift + rng.normal(0, 0.1, 3), 0, 1)
            w.writerow(["site1", f"c{i:02d}", *(f"{v:.4f}" for v in d), f"{30 * (1 - d[0]):.2f}"])
    return path


@pytest.fixture
def full_run(make_run, tmp_path: Path) -> tuple[Path, ReportInputs]:
    base = rising(10)
    dist = {s: [1.0, 1.1, 0.95, 1.05, 1.0, 1.02, 0.98, 1.0, 1.03] for s in ("s1", "s2", "s3")}
    dist["s3"] = [1.0, 1.1, 0.95, 3.0, 1.0, 1.02, 0.98, 1.0, 1.03]
    run = make_run(
        {"s1": noisy(base, 0.02, 1), "s2": noisy(base, 0.02, 2),
         "s3": [v - 0.15 for v in noisy(base, 0.02, 3)]},
        update_distance=dist, checkpoints=True,
    )  # fmt: skip
    write_plan(run, ["s1", "s2", "s3"], "rounds: 9\nalarms:\n  min_rounds: 5\n")
    with RunStore(run) as store:
        replay_alarms(store, AlarmConfig())
        store.log("run finished")
    inputs = ReportInputs((case_csv(tmp_path / "initial.csv", 0.0, 1),
                           case_csv(tmp_path / "final.csv", 0.25, 2)))  # fmt: skip
    return run, inputs


def decoded_pngs(text: str) -> dict[str, Image.Image]:
    out = {}
    for alt, b64 in IMG.findall(text):
        data = base64.b64decode(b64, validate=True)
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        img = Image.open(io.BytesIO(data))
        img.load()
        out[alt] = img
    return out


def test_report_has_every_section_and_figure(full_run) -> None:
    run, inputs = full_run
    text = build_report(run, inputs)
    for sec in SECTIONS:
        assert f"<section id='{sec}'>" in text
    pngs = decoded_pngs(text)
    assert sorted(pngs) == sorted(["validation curves", "site contributions", "site updates",
                                   "per-case Dice violins"])  # fmt: skip
    for img in pngs.values():
        assert img.width > 500 and img.height > 200
        assert len(img.convert("RGB").getcolors(1 << 20) or []) > 50  # not a blank canvas
    assert "below_federation" in text and "update_outlier" in text  # stored alarms
    assert "below p (cases)" in text and "gap trend" in text  # the per-site test table
    assert "final vs initial" in text and "min_rounds: 5" in text and "run finished" in text
    assert text.count("<table>") >= 6


def test_report_without_alarms_stored_recomputes_them(make_run) -> None:
    base = rising(9)
    run = make_run({"a": base, "b": noisy(base, 0.01, 1), "bad": [v - 0.2 for v in base]})
    text = build_report(run)
    assert "computed now" in text and "below_federation" in text
    assert "No per-case results given" in text
    assert "stored no checkpoints" in text
    assert len(decoded_pngs(text)) == 3


def test_report_bad_inputs(make_run, tmp_path: Path) -> None:
    run = make_run({"a": rising(4)})
    with pytest.raises(FedsegError, match="not found"):
        build_report(run, ReportInputs((tmp_path / "nope.csv",)))
    write_plan(run, ["a"], "alarms:\n  alpha: 7\n")
    with pytest.raises(FedsegError, match=r"plan\.yaml: alarms\.alpha"):
        build_report(run)


def test_report_cli_and_headless_chromium(full_run, tmp_path: Path) -> None:
    from fedseg.cli.main import _register, app

    run, inputs = full_run
    _register()
    res = CliRunner().invoke(app, [
        "report", str(run), "--case-csv", str(inputs.case_csvs[0]),
        "--case-csv", str(inputs.case_csvs[1]), "--label", "initial", "--label", "final",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    page = run / "report.html"
    assert page.is_file() and "report written" in res.output
    n_img = len(IMG.findall(page.read_text()))
    assert n_img == 4

    dom = chromium(page, tmp_path / "chr1", "--dump-dom")
    assert len(re.findall(r"<img[^>]+src=\"data:image/png;base64,", dom)) == n_img
    assert all(f'id="{s}"' in dom for s in SECTIONS)

    shot = tmp_path / "shot.png"
    chromium(page, tmp_path / "chr2", f"--screenshot={shot}", "--window-size=1200,4000")
    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 4000)
    px = np.asarray(img).reshape(-1, 3).astype(int)
    assert (px != 255).any(axis=1).mean() > 0.05  # far from a blank white page
    for rgb in SITE_RGB:  # every site's curve colour is on screen
        near = (np.abs(px - np.array(rgb)).sum(axis=1) < 30).sum()
        assert near > 200, rgb


def test_write_report_to_a_chosen_path(make_run, tmp_path: Path) -> None:
    run = make_run({"a": rising(3), "b": rising(3)})
    out = write_report(run, tmp_path / "out" / "r.html")
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_text_from_the_run_is_escaped_in_every_table(make_run) -> None:
    """Site names and event messages come from the sites: the shared table helper escapes
    them, so a message cannot inject markup into the report."""
    run = make_run({"a": rising(3), "<b>&co": rising(3)})
    with RunStore(run) as store:
        store.log("site said <script>alert(1)</script>")
    text = build_report(run)
    assert "<script>" not in text and "<b>&co" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    for sec in ("summary", "alarms", "contributions"):  # the tables naming sites
        body = text.split(f"<section id='{sec}'>")[1].split("</section>")[0]
        assert "&lt;b&gt;&amp;co" in body, sec


def test_report_shows_cross_site_matrix_evidence_observations_and_verdicts(
    tmp_path: Path,
) -> None:
    from tests.tracking.cross_fixtures import build_cross_run, profile
    from tests.tracking.test_cross_alarms import federation

    sites = federation("eroded", hard=profile("hard", own=-0.35, n_val=8))
    run = build_cross_run(tmp_path / "run", sites, seed=0)  # type: ignore[arg-type]
    write_plan(run, sorted(sites), "rounds: 8\n")
    with RunStore(run) as store:
        replay_alarms(store, AlarmConfig())
    # a leave-one-site-out run that `fedseg contributions --loso` left behind
    from fedseg.run_folder import RunStatus

    without = build_cross_run(run / "loso" / "without_bad", {s: p for s, p in sites.items()
                                                              if s != "bad"}, seed=0)  # fmt: skip
    with RunStore(without) as store:
        store.meta.set_status(RunStatus.DONE)
    text = build_report(run)
    pngs = decoded_pngs(text)
    assert "cross-site matrix" in pngs and pngs["cross-site matrix"].width > 500
    alarms = text.split("<section id='alarms'>")[1].split("</section>")[0]
    assert "bad ET: its local models lose" in alarms or "bad TC: its local models lose" in alarms
    assert "<h3>Observations</h3>" in alarms
    observed = alarms.split("<h3>Observations</h3>")[1].split("Cross-site evidence after")[0]
    assert "hard" in observed and "harder or different data" in observed
    assert "labels_disagree" not in observed and "away effect" in alarms
    contrib = text.split("<section id='contributions'>")[1].split("</section>")[0]
    assert "harmful" in contrib and "leave one site out" in contrib
    first = contrib.split("<tr>")[2]  # the first row after the header: most harmful first
    assert ">bad<" in first and ">harmful<" in first
    dom = chromium(_write(text, tmp_path), tmp_path / "c", "--dump-dom")
    assert "its local models lose" in dom and "Cross-site validation" in dom


def _write(text: str, tmp: Path) -> Path:
    page = tmp / "report.html"
    page.write_text(text, encoding="utf-8")
    return page
