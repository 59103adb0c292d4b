"""No patient's number, path or case id reaches the coordinator: the real round loop and the
real site code (``LocalTransport`` runs ``run_task`` in-process, as a deployed site with
the default floor of 3), sites with 1, 2 and 3 validation cases and one with a truncated
NIfTI file; then every file of the coordinator's run folder (the SQLite store dumped) is
searched for every case id and site path."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedseg.data.splits import load_split, make_split
from fedseg.data.synth.generate import make_tiny_dataset
from fedseg.federation.commands.compare_plans.local_transport import LocalTransport
from fedseg.federation.rounds.coordinator import Coordinator, initial_weights
from fedseg.federation.rounds.site import SITE_LOG, TaskFailed, run_task
from fedseg.federation.rounds.tasks import TaskRequest, recipe_json
from fedseg.run_folder import STORE_FILE
from fedseg.tracking.status import read_status, render_status
from fedseg.tracking.store import RunStore
from tests.federation.fed_helpers import run_folder_text, tiny_plan, write_run

#: site -> validation fraction of 6 cases: 1, 2 and 3 validation cases; site4 is broken
FRACTIONS = {"site1": 0.2, "site2": 0.3, "site3": 0.5, "site4": 0.2}


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("disclosure_sites")
    make_tiny_dataset(root, sites=4, cases_per_site=6, seed=1)
    out = {s: (root / s).resolve() for s in FRACTIONS}
    for s, frac in FRACTIONS.items():
        make_split(out[s], val_fraction=frac)
    # a truncated label file of a training case of site4
    label = load_split(out["site4"]).train[0].label
    assert label is not None
    label.write_bytes(label.read_bytes()[: label.stat().st_size // 2])
    return out


def test_no_case_id_or_site_path_reaches_the_coordinator(
    tmp_path: Path, sites: dict[str, Path]
) -> None:
    names = list(sites)
    split = {s: load_split(sites[s]) for s in names}
    assert [len(split[s].val) for s in names] == [1, 2, 3, 1]
    # a deployment's plan: no data paths; the sites keep them (and their workspaces) to
    # themselves and apply their own floor of 3
    plan = tiny_plan(dict.fromkeys(names), rounds=1, min_sites=1, privacy={})  # type: ignore[arg-type]
    assert plan.privacy.min_summary_cases == 3
    run = write_run(tmp_path / "run", plan)
    ws = {s: tmp_path / "site-workspaces" / s for s in names}
    Coordinator(run, LocalTransport(sites, ws, min_summary_cases=3)).run()

    secrets = {c.case_id for s in names for c in (*split[s].train, *split[s].val)}
    secrets |= {str(p) for p in sites.values()} | {str(p) for p in ws.values()}
    secrets.add(str(sites["site4"].parent))
    files = run_folder_text(run)
    assert run / STORE_FILE in files and "too few" in files[run / STORE_FILE]
    leaks = [(p.name, s) for p, text in files.items() for s in secrets if s in text]
    assert leaks == []

    with RunStore(run) as store:
        rows = {r.site: r for r in store.site_rounds()}
        assert {s: rows[s].status for s in names} == {
            "site1": "ok", "site2": "ok", "site3": "ok", "site4": "failed"
        }  # fmt: skip
        assert (rows["site1"].n_val, rows["site2"].n_val, rows["site3"].n_val) == (1, 2, 3)
        # only site3's summaries arrived (model 0 in round 1, model 1 in the final one)
        val = store.validation()
        assert {v.site for v in val} == {"site3"} and all(v.n >= 3 for v in val)
        assert {v.model_round for v in val} == {0, 1}
        assert store.case_metrics() == []
        err = rows["site4"].error or ""
        assert err.startswith("data: the site's data could not be read (DataError)"), err
        events = " ".join(m for _, _, m in store.events())
        assert "site site1 validated model 0 on 1 case(s), too few" in events
        assert "site site2 validated model 1 on 2 case(s), too few" in events
        assert store.meta.best() is not None and store.meta.best().model_round in (0, 1)
    # status shows the run (sites without numbers have no Dice) without failing
    view = read_status(run)
    by_site = {x.site: x for x in view.sites}
    assert by_site["site1"].scores == {} and by_site["site3"].scores
    render_status(view)

    # the site's own log has the whole story: the file, the case id, the traceback
    log = (ws["site4"] / SITE_LOG).read_text()
    broken = split["site4"].train[0]
    assert str(broken.label) in log and broken.case_id in log and "Traceback" in log
    assert "the coordinator is told only: data: " in log
    assert "fewer than 3: no numbers sent" in (ws["site2"] / SITE_LOG).read_text()


def test_training_loss_over_too_few_cases_stays_home(
    tmp_path: Path, sites: dict[str, Path]
) -> None:
    plan = tiny_plan({"site3": sites["site3"]}, min_sites=1)
    req = TaskRequest(1, 0, False, 1, 7, "r", recipe_json(plan.network, plan.train),
                      initial_weights(plan), min_summary_cases=4)  # fmt: skip
    rep = run_task("site3", sites["site3"], req, tmp_path / "ws")  # 3 training cases
    assert rep.n_train == 3 and rep.weights is not None and rep.train_loss is None
    req.min_summary_cases = 1
    rep = run_task("site3", sites["site3"], req, tmp_path / "ws", min_summary_cases=3)
    assert rep.train_loss is not None  # 3 cases: the site's floor is met


def test_a_missing_data_folder_is_a_scrubbed_task_failure(tmp_path: Path) -> None:
    plan = tiny_plan({"x": tmp_path}, min_sites=1)
    gone = tmp_path / "hospital-a" / "brats"
    req = TaskRequest(1, 0, True, 1, 7, "r", recipe_json(plan.network, plan.train),
                      initial_weights(plan))  # fmt: skip
    with pytest.raises(TaskFailed) as info:
        run_task("a", gone, req, tmp_path / "ws")
    assert info.value.category == "data"
    assert str(info.value) == (
        "data: the site's data folder is missing (SiteError); the site's log has the details"
    )
    assert str(gone) in (tmp_path / "ws" / SITE_LOG).read_text()
