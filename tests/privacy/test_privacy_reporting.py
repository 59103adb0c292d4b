"""What a user sees of privacy: ``fedseg status`` (mechanisms, latest ε per site against the
budget), the report's Privacy section (plot, ledger table, what the aggregator could see),
``fedseg contributions`` (not available without single updates), and the alarms."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from fedseg.federation.rounds.coordinator import Coordinator
from fedseg.plan import AlarmConfig, load_plan
from fedseg.run_folder import PrivacySpent
from fedseg.tracking.alarms import OUTLIER, evaluate_alarms
from fedseg.tracking.contributions import unavailable
from fedseg.tracking.report import build_report
from fedseg.tracking.status import read_status, render_status
from fedseg.tracking.store import RunStore
from tests.federation.fed_helpers import SITES, ArrayTransport, tiny_plan, write_run

OFFSETS = {"site1": 0.1, "site2": 0.2, "site3": 5.0}
N_TRAIN = {"site1": 1, "site2": 2, "site3": 5}


def _text(renderable: object) -> str:
    console = Console(width=250, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


@pytest.fixture(scope="module")
def site_dp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("dp")
    privacy = {"min_summary_cases": 1, "dp": {"level": "site", "epsilon": 8.0}}
    plan = tiny_plan({s: tmp / s for s in SITES}, rounds=2, privacy=privacy)
    run = write_run(tmp / "run", plan)
    Coordinator(run, ArrayTransport(OFFSETS, N_TRAIN)).run()
    return run


def test_status_shows_mechanisms_and_epsilon_against_the_budget(site_dp_run: Path) -> None:
    st = read_status(site_dp_run)
    with RunStore(site_dp_run) as store:
        last = store.privacy_ledger()[-1][2].epsilon
    assert st.privacy is not None and st.privacy.epsilon_budget == 8.0
    out = _text(render_status(st))
    assert "privacy: site-level DP" in out
    assert f"ε spent: every site {last:.3g} (round 2) of 8 at δ=1e-05" in out


def test_status_shows_each_site_for_case_level_rows(tmp_path: Path) -> None:
    privacy = {"min_summary_cases": 1, "dp": {"level": "case", "epsilon": 3.0}}
    run = write_run(tmp_path / "run", tiny_plan({s: tmp_path / s for s in SITES},
                                                privacy=privacy))  # fmt: skip
    with RunStore(run) as store:
        for rnd, site, eps in ((1, "site1", 0.5), (1, "site2", 0.7), (2, "site1", 0.9)):
            store.record_privacy(rnd, site, PrivacySpent(
                level="case", epsilon=eps, delta=1e-5, sigma=1.1, clip_norm=1.0,
                steps=10 * rnd, sample_rate=0.1, accountant="rdp",
            ))  # fmt: skip
    out = _text(render_status(read_status(run)))
    assert "case-level DP-SGD" in out
    assert "ε spent: site1 0.9 (round 2), site2 0.7 (round 1) of 3 at δ=1e-05" in out


def test_plain_run_status_says_nothing_of_privacy(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", tiny_plan({s: tmp_path / s for s in SITES}, rounds=1))
    Coordinator(run, ArrayTransport(OFFSETS, N_TRAIN)).run()
    st = read_status(run)
    assert st.privacy is None and "privacy" not in _text(render_status(st))


def test_report_has_the_privacy_section_with_plot_and_table(site_dp_run: Path) -> None:
    page = build_report(site_dp_run)
    start = (
        page.index("<section id='privacy'")
        if "<section id='privacy'" in page
        else page.index('<section id="privacy"')
    )
    sec = page[start : page.index("</section>", start)]
    assert "Privacy" in sec and "site-level DP" in sec
    assert "alt='privacy epsilon per round'" in sec or 'alt="privacy epsilon per round"' in sec
    assert "data:image/png;base64," in sec
    assert "single site updates" in sec and "validation summaries" in sec
    assert "every site" in sec  # the ledger table
    assert "site contributions from updates are not available" in page


def test_contributions_unavailable_without_single_updates(site_dp_run: Path) -> None:
    plan = load_plan(site_dp_run / "plan.yaml")
    assert unavailable(plan.privacy) == (
        "site contributions from updates are not available: the aggregator saw no single "
        "site's update (privacy.dp level site); --loso (leave one site out) still works"
    )
    assert unavailable(plan.privacy.model_copy(update={"dp": plan.privacy.dp.model_copy(
        update={"level": "case"})})) is None  # fmt: skip


def test_update_outlier_alarm_needs_single_updates(site_dp_run: Path, tmp_path: Path) -> None:
    # site3's update is far from the others': flagged in clear, not under site-level DP
    plan = tiny_plan({s: tmp_path / s for s in SITES}, rounds=1, bounds={"enabled": False})
    plain = write_run(tmp_path / "run", plan)
    Coordinator(plain, ArrayTransport(OFFSETS, dict.fromkeys(SITES, 1))).run()
    cfg = AlarmConfig(outlier_min_sites=3)
    with RunStore(plain) as store:
        assert [a.site for a in evaluate_alarms(store, 1, cfg) if a.kind == OUTLIER] == ["site3"]
        off = cfg.model_copy(update={"update_outlier": False})
        assert not [a for a in evaluate_alarms(store, 1, off) if a.kind == OUTLIER]
    with RunStore(site_dp_run) as store:
        assert not [a for a in evaluate_alarms(store, 1, cfg) if a.kind == OUTLIER]
