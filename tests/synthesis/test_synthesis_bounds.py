"""What a synthesis site's validation summaries may name (``bounds.check_summary`` with
``task: synthesis``): a modality it declared, and ssim/psnr/mae only, within their ranges;
a segmentation run takes no synthesis metric."""

from __future__ import annotations

import pytest

from fedseg.federation.rounds.aggregation import UpdateRejected
from fedseg.federation.rounds.bounds import check_declaration, check_report, check_summary
from fedseg.model.summary import Summary
from fedseg.run_folder import DeclaredCases, Task

S = Task.SYNTHESIS
NO_FLAIR = ["t1", "t1ce", "t2"]


@pytest.mark.parametrize(
    ("region", "metric", "s", "reason"),
    [
        ("t1", "ssim", Summary(0.6, 0.1, 2), None),
        ("t2", "psnr", Summary(27.0, 3.0, 2), None),
        ("t1ce", "mae", Summary(0.05, 0.01, 2), None),
        ("t1", "ssim", Summary(0.0, 0.0, 0), None),  # no value
        ("flair", "ssim", Summary(0.6, 0.1, 2), "flair/ssim: not a modality the site declared"),
        ("WT", "dice", Summary(0.6, 0.1, 2), "WT/dice: not a modality the site declared"),
        ("t1", "dice", Summary(0.6, 0.1, 2), "t1/dice: unknown metric (known: ssim, psnr, mae)"),
        ("t1", "psnr", Summary(140.0, 1.0, 2), "t1/psnr: mean 140.0 outside [0, 100]"),
        ("t1", "ssim", Summary(-1.5, 0.1, 2), "t1/ssim: mean -1.5 outside [-1, 1]"),
        ("t1", "mae", Summary(0.1, 0.1, 5), "t1/mae over 5 cases, declared 2 validation cases"),
    ],
)  # fmt: skip
def test_synthesis_summaries(region: str, metric: str, s: Summary, reason: str | None) -> None:
    if reason is None:
        check_summary(region, metric, s, 2, S, NO_FLAIR)
        return
    with pytest.raises(UpdateRejected) as err:
        check_summary(region, metric, s, 2, S, NO_FLAIR)
    assert str(err.value) == f"validation {reason}"


def test_segmentation_takes_no_synthesis_metric() -> None:
    check_summary("WT", "dice", Summary(0.8, 0.1, 2), 2)
    with pytest.raises(UpdateRejected, match="ET/ssim: unknown metric"):
        check_summary("ET", "ssim", Summary(0.8, 0.1, 2), 2)


def test_the_declaration_names_known_modalities() -> None:
    check_declaration(DeclaredCases(n_train=3, n_val=1, modalities=NO_FLAIR), 100)
    check_declaration(DeclaredCases(n_train=3, n_val=1), 100)  # an older site: all four
    for bad in ([], ["t1", "t1"], ["pd"]):
        with pytest.raises(UpdateRejected, match="declares modalities"):
            check_declaration(DeclaredCases(n_train=3, n_val=1, modalities=bad), 100)
    declared = DeclaredCases(n_train=3, n_val=2, modalities=NO_FLAIR)
    check_report(3, 2, {"t2": {"ssim": Summary(0.5, 0.1, 2)}}, declared, S)
    with pytest.raises(UpdateRejected, match="flair/ssim: not a modality"):
        check_report(3, 2, {"flair": {"ssim": Summary(0.5, 0.1, 2)}}, declared, S)
