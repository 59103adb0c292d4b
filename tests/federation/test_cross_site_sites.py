"""Cross-site validation with the real site code: ``LocalTransport`` runs ``run_task`` (real
training and validation) for every site, as ``fedseg compare`` and the benchmarks do; and
the Flower encoding of the models and summaries."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fedseg.data.splits import load_split, make_split
from fedseg.data.synth.generate import make_tiny_dataset
from fedseg.federation.commands.compare_plans.local_transport import LocalTransport
from fedseg.federation.engine.messages import (
    content_bytes,
    decode_reply,
    decode_request,
    encode_reply,
    encode_requests,
)
from fedseg.federation.rounds.coordinator import Coordinator, initial_weights
from fedseg.federation.rounds.site import run_task
from fedseg.federation.rounds.tasks import TaskReply, TaskRequest, recipe_json
from fedseg.model.summary import Summary
from fedseg.run_folder import CROSSVAL_DIR, cross_label
from fedseg.tracking.store import (
    CROSS_DICE,
    CROSS_DICE_DIFF,
    WITHOUT_DICE_DIFF,
    WITHOUT_PREFIX,
    RunStore,
)
from tests.federation.fed_helpers import run_folder_text, tiny_plan, write_run

#: site -> validation fraction of 6 cases: 3, 3, 3 and 2 validation cases
FRACTIONS = {"site1": 0.5, "site2": 0.5, "site3": 0.5, "small": 0.3}


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cross_sites")
    made = make_tiny_dataset(root, sites=4, cases_per_site=6, seed=3)
    out = {}
    for (name, frac), folder in zip(FRACTIONS.items(), sorted(made), strict=True):
        out[name] = (root / folder).resolve()
        make_split(out[name], val_fraction=frac)
    return out


def test_a_federation_over_local_transport_stores_away_and_home_rows(
    tmp_path: Path, sites: dict[str, Path]
) -> None:
    names = list(sites)
    assert [len(load_split(sites[s]).val) for s in names] == [3, 3, 3, 2]
    plan = tiny_plan(sites, rounds=1, min_sites=1, privacy={},  # floor 3: "small" can't
                     cross_site={"leave_one_out": True})  # fmt: skip
    run = write_run(tmp_path / "run", plan)
    ws = {s: tmp_path / "ws" / s for s in names}
    seen: list[bool] = []

    def parked(_site: str) -> None:
        seen.append((run / CROSSVAL_DIR).is_dir())

    transport = LocalTransport(sites, ws, min_summary_cases=3, on_site=parked)
    Coordinator(run, transport).run()
    # models of round 1 were parked during the final validation, gone afterwards
    assert seen == [False] * 4 + [True] * 4 and not (run / CROSSVAL_DIR).exists()
    with RunStore(run) as store:
        rows = store.cross()
        sent = {(r.round, r.site): r.bytes_sent for r in store.site_rounds()}
        assert store.case_metrics() == []
    home = [r for r in rows if r.home]
    away = [r for r in rows if not r.home]
    # home: the three sites with 3 cases, model 1 against model 0, in round 1
    assert {r.model_site for r in home} == {"site1", "site2", "site3"}
    assert {(r.round, r.model_round, r.reference_round) for r in home} == {(1, 1, 0)}
    # away: every model (the small site's too) at 3 evaluators, never at "small" or itself
    pairs = {(r.model_site, r.eval_site) for r in away}
    assert Counter(m for m, _ in pairs) == dict.fromkeys(names[:3], 2) | {"small": 3}
    assert all(m != e and e != "small" for m, e in pairs)
    assert {(r.round, r.model_round, r.reference_round) for r in away} == {(2, 1, 1)}
    # each local model's evaluators also validated the round's model without its site
    without = {(r.model_site, r.eval_site) for r in away if r.metric == WITHOUT_DICE_DIFF}
    assert without == pairs
    for r in rows:
        assert r.summary.n == 3 and r.region in ("ET", "TC", "WT", "mean")
        metric = r.metric.removeprefix(WITHOUT_PREFIX)
        lo = 0.0 if metric == CROSS_DICE else -1.0
        assert metric in (CROSS_DICE, CROSS_DICE_DIFF) and lo <= r.summary.mean <= 1.0
    assert sent[(1, "site1")] > 0
    # the per-case values stayed with the evaluating site, under the model's label
    evaluator = next(r.eval_site for r in away if r.model_site == "small")
    with RunStore(ws[evaluator]) as local:
        labels = {row[1] for row in local.case_metrics()}
    assert cross_label("small", 1) in labels and evaluator in labels
    assert cross_label("small", 1, without=True) in labels
    assert cross_label(evaluator, 1) in labels  # its home check
    # no case id of any site reached the coordinator's folder
    secrets = {c.case_id for s in names for c in (*load_split(sites[s]).train,
                                                  *load_split(sites[s]).val)}  # fmt: skip
    files = run_folder_text(run)
    assert [(p.name, s) for p, t in files.items() for s in secrets if s in t] == []


def test_validate_several_models_pairs_per_case_with_the_global(
    tmp_path: Path, sites: dict[str, Path]
) -> None:
    plan = tiny_plan({"site1": sites["site1"]}, min_sites=1)
    w0 = initial_weights(plan)
    w1 = {k: v + np.asarray(0.01).astype(v.dtype) if v.dtype.kind == "f" else v
          for k, v in w0.items()}  # fmt: skip
    req = TaskRequest(1, 0, True, 1, 7, "r", recipe_json(plan.network, plan.train), w0,
                      cross={"a@0": w0, "b@0": w1}, home=True, min_summary_cases=3)  # fmt: skip
    rep = run_task("site1", sites["site1"], req, tmp_path / "ws")
    same = rep.cross["a@0"]
    assert set(same) == {"ET", "TC", "WT", "mean"}
    # the global model itself: its Dice is the validation's, the paired difference is 0
    for region in ("ET", "TC", "WT", "mean"):
        assert same[region][CROSS_DICE] == rep.validation[region]["dice"]
        assert same[region][CROSS_DICE_DIFF] == Summary(0.0, 0.0, 3)
    assert rep.cross["b@0"]["mean"][CROSS_DICE].n == 3
    assert set(rep.home) == {"ET", "TC", "WT", "mean"} and rep.home["mean"]["dice_diff"].n == 3
    # below the site's floor: nothing validated for the others, no home check sent
    rep = run_task("site1", sites["site1"], req, tmp_path / "ws2", min_summary_cases=4)
    assert rep.cross == {} and rep.home == {} and rep.validation == {}


def test_flower_encoding_shares_each_model_once_and_bounds_the_summaries(
    sites: dict[str, Path],
) -> None:
    plan = tiny_plan({"site1": sites["site1"]}, min_sites=1)
    w0 = initial_weights(plan)
    wa = {k: v + 1 if v.dtype.kind == "f" else v for k, v in w0.items()}
    wb = {k: v + 2 if v.dtype.kind == "f" else v for k, v in w0.items()}
    recipe = recipe_json(plan.network, plan.train)
    reqs = {
        "s1": TaskRequest(2, 1, True, 1, 7, "r", recipe, w0, cross={"s2@1": wa, "s3@1": wb},
                          home=True),
        "s2": TaskRequest(2, 1, True, 1, 7, "r", recipe, w0, cross={"s3@1": wb}),
        "s3": TaskRequest(2, 1, True, 1, 7, "r", recipe, w0),
    }  # fmt: skip
    enc = encode_requests(reqs)
    rec = {s: {k: v for k, v in c.items() if k.startswith("cross.")} for s, c in enc.items()}
    # the same ArrayRecord object for s3@1 in both requests: pushed once
    by_label = {s: dict(zip(c["task"]["cross"], rec[s].values(), strict=True))  # type: ignore[arg-type]
                for s, c in enc.items() if rec[s]}  # fmt: skip
    assert by_label["s1"]["s3@1"] is by_label["s2"]["s3@1"]
    assert "cross" not in enc["s3"]["task"] and rec["s3"] == {}
    # an empty cross part adds nothing to a request
    plain = encode_requests({"s3": TaskRequest(2, 1, True, 1, 7, "r", recipe, w0)})["s3"]
    assert content_bytes(plain) == content_bytes(enc["s3"])
    dec = decode_request(enc["s1"])
    assert set(dec.cross) == {"s2@1", "s3@1"} and dec.home
    for k in w0:
        np.testing.assert_array_equal(dec.cross["s3@1"][k], wb[k])
    assert not decode_request(enc["s3"]).home and decode_request(enc["s3"]).cross == {}

    s = {r: {CROSS_DICE: Summary(0.6, 0.1, 3), CROSS_DICE_DIFF: Summary(-0.2, 0.1, 3)}
         for r in ("ET", "TC", "WT", "mean")}  # fmt: skip
    rep = TaskReply("s1", n_val=3, cross={"s2@1": s, "s3@1": s}, home=s, validated=True)
    back = decode_reply(encode_reply(rep))
    assert back.cross == rep.cross and back.home == rep.home
    bare = TaskReply("s1", n_val=3, validated=True)
    assert (
        content_bytes(encode_reply(bare))
        < content_bytes(encode_reply(rep))
        < content_bytes(encode_reply(bare)) + 2000
    )  # summaries only: under 2 kB for 2 models
    assert decode_reply(encode_reply(bare)).cross == {}
