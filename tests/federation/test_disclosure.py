"""What a site lets leave it: the summary floor, error categories and scrubbed lines, and
their encoding (no processes, no training)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import yaml

from fedseg.errors import DataError
from fedseg.federation.engine.messages import (
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)
from fedseg.federation.rounds.disclosure import (
    MIN_SUMMARY_CASES,
    ErrorCategory,
    SiteError,
    categorize,
    public_error,
    releasable,
    scrub,
    summary_floor,
)
from fedseg.federation.rounds.tasks import TaskReply, TaskRequest
from fedseg.model.summary import Summary
from fedseg.plan import PlanConfig, example_plan

CASE = "BraTS2021_00417"
PATH = f"/srv/hospital-a/brats/{CASE}/{CASE}_seg.nii.gz"


def test_the_plan_can_raise_the_sites_floor_but_never_lower_it() -> None:
    assert MIN_SUMMARY_CASES == 3
    assert summary_floor(1, 3) == 3 and summary_floor(2, 3) == 3
    assert summary_floor(5, 3) == 5
    assert summary_floor(1, 1) == 1


def test_only_summaries_over_enough_cases_are_released() -> None:
    summaries = {
        "WT": {"dice": Summary(0.8, 0.1, 3), "hd95": Summary(4.0, 1.0, 2)},
        "ET": {"dice": Summary(0.5, 0.0, 1)},
        "mean": {"dice": Summary(0.6, 0.1, 3)},
    }
    assert releasable(summaries, 3) == {
        "WT": {"dice": Summary(0.8, 0.1, 3)},  # HD95 of two cases stays home
        "mean": {"dice": Summary(0.6, 0.1, 3)},
    }
    assert releasable(summaries, 4) == {}
    assert releasable(summaries, 1) == summaries


def test_plan_privacy_key_defaults_to_three_and_is_in_the_example_plan() -> None:
    plan = PlanConfig.model_validate({"sites": {"a": {}}})
    assert plan.privacy.min_summary_cases == 3
    example = yaml.safe_load(example_plan())
    assert example["privacy"]["min_summary_cases"] == 3
    # the other privacy keys the example documents are the defaults: no mechanism is on
    assert (
        PlanConfig.model_validate(example).privacy
        == PlanConfig.model_validate({"sites": {"a": {}}}).privacy
    )
    with pytest.raises(ValueError, match="min_summary_cases"):
        PlanConfig.model_validate({"sites": {"a": {}}, "privacy": {"min_summary_cases": 0}})


@pytest.mark.parametrize(
    ("exc", "phase", "category"),
    [
        (DataError(f"{PATH}: image data cannot be read"), ErrorCategory.TRAINING, "data"),
        (SiteError(ErrorCategory.DATA, "no training cases", PATH), ErrorCategory.TRAINING, "data"),
        (MemoryError(), ErrorCategory.VALIDATION, "resources"),
        (
            OSError(errno.ENOSPC, "No space left on device", PATH),
            ErrorCategory.TRAINING,
            "resources",
        ),
        (RuntimeError(f"shape mismatch in {CASE}"), ErrorCategory.TRAINING, "training"),
        (ValueError(PATH), ErrorCategory.VALIDATION, "validation"),
        (KeyError("network"), ErrorCategory.INTERNAL, "internal"),
    ],
)
def test_errors_leave_as_category_and_type_never_their_text(
    exc: Exception, phase: ErrorCategory, category: str
) -> None:
    assert categorize(exc, phase) == category
    line = public_error(exc, phase, [CASE, "/srv/hospital-a/brats"])
    assert line.startswith(f"{category}: ") and type(exc).__name__ in line
    assert CASE not in line and "/srv" not in line and "hospital-a" not in line
    assert "\n" not in line and "the site's log" in line


def test_a_site_error_sends_its_public_text() -> None:
    exc = SiteError(ErrorCategory.DATA, "the site has no training cases", f"no cases in {PATH}")
    line = public_error(exc, ErrorCategory.TRAINING)
    assert line.startswith("data: the site has no training cases (SiteError)")
    # a careless public text is still scrubbed: known secrets and any absolute path
    leaky = SiteError(ErrorCategory.DATA, f"case {CASE} at {PATH} is broken", "")
    line = public_error(leaky, ErrorCategory.DATA, [CASE])
    assert CASE not in line and "/srv" not in line


def test_scrub_masks_known_secrets_and_absolute_paths() -> None:
    text = f"EOFError reading {PATH} (case {CASE}) under C:\\data\\site\\x.nii"
    out = scrub(text, [CASE, "", "/srv/hospital-a"])
    assert CASE not in out and "/srv" not in out and "C:\\data" not in out
    assert out.startswith("EOFError reading ")
    assert scrub("data: local training failed (RuntimeError)") == (
        "data: local training failed (RuntimeError)"
    )
    assert scrub("ratio 3/4 of cases") == "ratio 3/4 of cases"


def test_request_floor_and_validated_flag_travel() -> None:
    import numpy as np

    w = {"w": np.zeros(2, np.float32)}
    req = TaskRequest(1, 0, True, 1, 0, "r", "{}", w, min_summary_cases=5)
    assert decode_request(encode_request(req)).min_summary_cases == 5
    rep = decode_reply(encode_reply(TaskReply(site="a", n_val=2, validated=True)))
    assert rep.validated and rep.validation == {} and rep.train_loss is None
    plain = decode_reply(encode_reply(TaskReply(site="a")))
    assert not plain.validated


def test_site_start_passes_the_sites_own_floor_to_its_app(tmp_path: Path) -> None:
    from fedseg.federation.commands.deploy import SiteOptions, supernode_command
    from fedseg.federation.security import pki

    pki.init_ca(tmp_path / "ca")
    bundle = pki.issue_site(tmp_path / "ca", "alpha")
    base = {"server": "localhost:9092", "data_dir": tmp_path, "creds": bundle,
            "work_dir": tmp_path / "w"}  # fmt: skip

    def node_config(**extra: object) -> str:
        cmd = supernode_command(SiteOptions.model_validate({**base, **extra}))
        return cmd[cmd.index("--node-config") + 1]

    assert "min-summary-cases=3" in node_config().split()
    assert "min-summary-cases=5" in node_config(min_summary_cases=5).split()
    with pytest.raises(ValueError):
        SiteOptions.model_validate({**base, "min_summary_cases": 0})
