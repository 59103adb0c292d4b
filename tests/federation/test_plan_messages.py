"""Plan files (typed, extra=forbid, one-line errors) and the Flower encoding of messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedseg.errors import FedsegError
from fedseg.federation.engine.app_bundle import config_arg, toml_value
from fedseg.federation.engine.client_app import compute_node_config, node_compute_overrides
from fedseg.federation.engine.messages import (
    decode_hello_reply,
    decode_payload,
    decode_reply,
    decode_request,
    encode_hello_reply,
    encode_payload,
    encode_reply,
    encode_request,
)
from fedseg.federation.rounds.tasks import (
    TaskReply,
    TaskRequest,
    declared_cases,
    recipe_from_json,
    recipe_json,
)
from fedseg.model.compute import ComputeOverrides
from fedseg.model.config import NetworkConfig
from fedseg.model.summary import Summary
from fedseg.plan import example_plan, load_plan
from fedseg.privacy.config import PrivacyConfig
from fedseg.run_folder import ComputeUsed, DeclaredCases, PrivacySpent
from fedseg.train.config import TrainConfig


def test_example_plan_loads_and_resolves_paths(tmp_path: Path) -> None:
    sites = [tmp_path / "data" / "hospA", tmp_path / "data" / "hospB"]
    (tmp_path / "plan.yaml").write_text(example_plan(sites))
    plan = load_plan(tmp_path / "plan.yaml")
    assert list(plan.sites) == ["hospA", "hospB"]
    assert plan.sites["hospA"].data == sites[0]
    assert plan.strategy.name == "fedavg" and plan.min_sites == 2
    # the report and norm bounds are on, written out where a user sees them
    assert plan.bounds.enabled and plan.bounds.update_norm_ratio == 3.0
    assert "bounds:" in example_plan(sites) and "enabled: true" in example_plan(sites)
    # relative data paths are relative to the plan file
    (tmp_path / "rel.yaml").write_text("sites:\n  a: {data: d/a}\n")
    assert load_plan(tmp_path / "rel.yaml").sites["a"].data == (tmp_path / "d" / "a").resolve()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sites: {a: {data: x}}\nroundz: 3\n", "roundz: Extra inputs are not permitted"),
        ("sites: {a: {data: x}}\nrounds: 0\n", "rounds: Input should be greater than"),
        ("sites: {}\n", "at least one site"),
        ("sites: {a: {}}\nmin_sites: 2\n", "min_sites 2 exceeds the 1 sites"),
        ("sites: {'a b': {}}\n", "site name 'a b'"),
        ("sites: {a: {}}\nnetwork: {depth: 3}\ntrain: {patch_size: [20, 20, 20]}\n", "multiples"),
        ("- just\n- a list\n", "a plan is a mapping"),
        ("sites: {a: {}}\nbounds: {max_case: 3}\n", "bounds.max_case: Extra inputs"),
        ("sites: {a: {}}\nbounds: {update_norm_ratio: 0}\n", "bounds.update_norm_ratio"),
        ("sites: {a: {}}\nalarms: {labels_min_models: 5}\n", "alarms: labels_min_models 5 is abov"),
    ],
)
def test_bad_plans_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "plan.yaml"
    p.write_text(text)
    with pytest.raises(FedsegError, match=message) as info:
        load_plan(p)
    assert "\n" not in str(info.value) and str(p) in str(info.value)


def test_request_and_reply_round_trip_keep_dtypes() -> None:
    weights = {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.array([1.5], np.float16),
        "c": np.array(7, np.int64),
        "d": np.ones((2, 2), np.float64),
    }
    recipe = recipe_json(NetworkConfig(base_filters=4, depth=2), TrainConfig.cpu())
    req = TaskRequest(3, 2, True, 1, 123, "run-x", recipe, weights)
    back = decode_request(encode_request(req))
    assert (back.round, back.model_round, back.validate, back.epochs, back.seed) == (
        3,
        2,
        True,
        1,
        123,
    )
    assert list(back.weights) == list(weights)
    for k, v in weights.items():
        assert back.weights[k].dtype == v.dtype
        np.testing.assert_array_equal(back.weights[k], v)
    net, train = recipe_from_json(back.recipe)
    assert net.base_filters == 4 and train == TrainConfig.cpu()

    val = {"ET": {"dice": Summary(0.5, 0.1, 3), "hd95": Summary(4.0, 1.0, 3)}}
    rep = TaskReply("site1", weights, n_train=8, n_val=3, train_loss=0.4, validation=val,
                    lr=2.5e-4)  # fmt: skip
    content = encode_reply(rep)
    # only weights and summaries travel: no case ids, no per-case values
    assert set(content) == {"site", "metrics", "validation", "weights"}
    assert set(content["validation"]) == {
        f"ET/{m}/{p}" for m in ("dice", "hd95") for p in ("mean", "std", "n")
    }
    got = decode_reply(content)
    assert got.validation == val and got.n_train == 8 and got.train_loss == pytest.approx(0.4)
    assert got.lr == 2.5e-4 and decode_reply(encode_reply(TaskReply("s", None))).lr is None
    assert got.weights is not None and got.weights["c"].dtype == np.int64
    assert decode_reply(encode_reply(TaskReply("s", None))).weights is None


def test_a_reply_says_which_process_did_the_work() -> None:
    """The worker's pid travels (the benchmark's critical path: tasks of one worker ran one
    after the other); a reply without one says nothing."""
    assert decode_reply(encode_reply(TaskReply("site1", None, worker=4242))).worker == 4242
    assert decode_reply(encode_reply(TaskReply("site1", None))).worker is None


def test_a_reply_says_which_device_and_precision_the_site_used() -> None:
    used = ComputeUsed(device="cuda:0 (NVIDIA H200)", precision="bf16")
    content = encode_reply(TaskReply("site1", None, compute=used))
    assert dict(content["site"]) == {"name": "site1", "device": used.device, "precision": "bf16"}
    assert decode_reply(content).compute == used
    # a reply from before, or one that says nothing, records nothing
    assert decode_reply(encode_reply(TaskReply("site1", None))).compute is None
    # a site that sends anything but a short device name and a precision word: not recorded
    for device, precision in (("x" * 200, "bf16"), ("cpu", "bf16; DROP TABLE"), ("a\nb", "fp32")):
        content = encode_reply(TaskReply("site1", None))
        content["site"]["device"], content["site"]["precision"] = device, precision
        assert decode_reply(content).compute is None, (device, precision)
    # a site's own record of an oddly named GPU is cut to the bounds, never refused
    odd = ComputeUsed.of("cuda:0 (Radeon\u00ae Pro; " + "W" * 200 + ")", "fp16")
    assert odd.device.startswith("cuda:0 (Radeon_ Pro_ W") and len(odd.device) == 80
    assert decode_reply(encode_reply(TaskReply("site1", None, compute=odd))).compute == odd


def test_site_compute_choices_travel_in_the_node_config() -> None:
    overrides = ComputeOverrides(device="cuda:1", precision="bf16", channels_last=True)
    node = compute_node_config(overrides)
    assert node == {"device": "cuda:1", "precision": "bf16", "channels-last": True}
    assert node_compute_overrides({"site-name": "a", **node}) == overrides
    assert compute_node_config(ComputeOverrides()) == compute_node_config(None) == {}
    assert node_compute_overrides({"site-name": "a"}).empty
    assert f"precision={toml_value('bf16')}" in config_arg(node)


def test_flower_error_reasons_become_one_line() -> None:
    from fedseg.federation.engine.server_app import error_line

    reason = "<class 'fedseg.errors.FedsegError'>:<'no complete labelled cases in /d/site3'>"
    assert error_line(reason) == "FedsegError: no complete labelled cases in /d/site3"
    assert error_line("Traceback ...\n  File x\nValueError: boom\n") == "ValueError: boom"


def test_hello_declares_the_sites_split_counts(tmp_path: Path, tiny_sites: dict[str, Path]) -> None:
    declared = declared_cases(tiny_sites["site1"])
    # 4 cases, 4:1 split; no fedseg_site.yaml: every modality
    assert declared == DeclaredCases(n_train=3, n_val=1, modalities=["t1", "t1ce", "t2", "flair"])
    assert decode_hello_reply(encode_hello_reply("site1", declared)) == ("site1", declared)
    # an older site's hello names no modalities: None (all four), still read
    old = DeclaredCases(n_train=3, n_val=1)
    assert decode_hello_reply(encode_hello_reply("site1", old)) == ("site1", old)
    # a site whose data folder does not read declares nothing (its task says why)
    assert declared_cases(tmp_path / "missing") is None
    assert decode_hello_reply(encode_hello_reply("site1")) == ("site1", None)


def test_privacy_section_and_protocol_payloads_travel_with_tasks() -> None:
    recipe = recipe_json(NetworkConfig(base_filters=4, depth=2), TrainConfig.cpu())
    privacy = PrivacyConfig.model_validate(
        {"secure_aggregation": True, "secagg": {"clip_norm": 2.5}, "dp": {"level": "site"}}
    )
    secure = {"shares": b"\x00\x01\xff", "weight": 3.0, "n": 4, "peer": "site2",
              "mask": np.arange(5, dtype=np.uint32)}  # fmt: skip
    req = TaskRequest(1, 0, True, 1, 5, "run", recipe, {"w": np.zeros(2, np.float32)},
                      privacy=privacy, secure=secure, planned_rounds=12)  # fmt: skip
    back = decode_request(encode_request(req))
    assert back.privacy == privacy and back.privacy.hides_updates
    assert back.planned_rounds == 12  # a site derives its DP-SGD noise from it
    assert back.secure is not None and set(back.secure) == set(secure)
    assert back.secure["shares"] == b"\x00\x01\xff" and back.secure["peer"] == "site2"
    np.testing.assert_array_equal(back.secure["mask"], secure["mask"])
    assert back.secure["mask"].dtype == np.uint32  # type: ignore[union-attr]
    # a plain task says nothing of the kind
    plain = decode_request(encode_request(TaskRequest(1, 0, True, 1, 5, "r", recipe, {})))
    assert plain.secure is None and plain.privacy == PrivacyConfig() and plain.planned_rounds == 0

    spent = PrivacySpent(level="case", epsilon=1.25, delta=1e-5, sigma=1.1, clip_norm=1.0,
                         steps=40, sample_rate=0.25, accountant="rdp")  # fmt: skip
    hidden = {"masked/w": np.array([7, 2**32 - 1], np.uint32)}
    rep = decode_reply(encode_reply(TaskReply("s", None, hidden=hidden, privacy_spent=spent)))
    assert rep.weights is None and rep.privacy_spent == spent
    assert rep.hidden is not None
    np.testing.assert_array_equal(rep.hidden["masked/w"], hidden["masked/w"])
    # the aggregator's copy is a read-only view of the message
    assert not rep.hidden["masked/w"].flags.writeable  # type: ignore[union-attr]
    assert decode_payload(encode_payload({"x": b"1"})) == {"x": b"1"}


def test_he_shorthand_and_one_hiding_mechanism() -> None:
    assert PrivacyConfig.model_validate({"he": "ckks"}).he.scheme == "ckks"
    with pytest.raises(ValueError, match=r"choose one of privacy\.secure_aggregation"):
        PrivacyConfig.model_validate({"he": "ckks", "secure_aggregation": True})
