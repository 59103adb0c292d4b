"""Site presets and profile edits of `fedseg data synth` (``data.synth.presets``), exact
validation counts (``--val-cases``) and the ``scramble`` bad kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from fedseg.data.labels import ED, ET, NCR
from fedseg.data.splits import load_split
from fedseg.data.synth import BadKind, SynthConfig, read_record, synth_case
from fedseg.data.synth.annotation import scramble_labels
from fedseg.data.synth.config import SiteProfile, draw_profiles
from fedseg.data.synth.presets import customized, edit_profile, harder, other_scanner
from fedseg.errors import FedsegError
from fedseg.federation.commands.demo import SPACING_MM, demo_profiles
from tests.helpers import run_fedseg

SMALL = ("--sites", "4", "--cases-per-site", "4", "--spacing", "8")


def test_the_demo_profiles_did_not_change() -> None:
    """make_demo_data's site3 is other_scanner: the values the demo always had."""
    drawn = draw_profiles(3, 0, SPACING_MM)
    got = demo_profiles(0)
    assert got[:2] == drawn[:2]
    expected = drawn[2].model_dump() | {
        "intensity_scale": drawn[2].intensity_scale * 3.0,
        "slice_thickness_mm": 8.0,
        "bias_strength": 0.3,
        "tumor_radius_mm": 22.0,
        "edema_mm": 18.0,
    }
    assert got[2].model_dump() == expected


def test_presets_change_only_their_fields() -> None:
    p = draw_profiles(2, 5, 4.0)[1]
    hard, scan = harder(p).model_dump(), other_scanner(p).model_dump()
    before = p.model_dump()
    assert hard == before | {
        "tumor_radius_mm": pytest.approx(0.6 * p.tumor_radius_mm),
        "noise": 0.08,
        "blur_fwhm_mm": 2.5,
    }
    assert scan["intensity_scale"] == pytest.approx(3 * p.intensity_scale)
    assert {k: v for k, v in scan.items() if v != before[k]}.keys() <= {
        "intensity_scale", "slice_thickness_mm", "bias_strength", "tumor_radius_mm", "edema_mm"
    }  # fmt: skip


def test_edit_profile_parses_each_field_type() -> None:
    p = draw_profiles(1, 0, 4.0)[0]
    assert edit_profile(p, "noise", "0.05").noise == 0.05
    assert edit_profile(p, "tumor_radius_mm", "0.5x").tumor_radius_mm == pytest.approx(
        0.5 * p.tumor_radius_mm
    )
    assert edit_profile(p, "slice_axis", "1").slice_axis == 1
    assert edit_profile(p, "modality_scale", "1,1.5, 2,1").modality_scale == (1, 1.5, 2, 1)
    assert edit_profile(p, "bad_kind", "swapped").bad_kind is BadKind.SWAPPED
    for key, value, said in (
        ("radius", "3", "unknown key 'radius'; the keys are intensity_scale,"),
        ("name", "x", "unknown key 'name'"),
        ("noise", "-1", "greater than or equal to 0 (noise is a number); the keys are"),
        ("slice_axis", "1.5", "(slice_axis is a whole number)"),
        ("modality_scale", "1,2", "give 4 comma-separated values"),
        ("bad_kind", "flipped", "'scramble' (bad_kind is a bad kind)"),
    ):
        with pytest.raises(FedsegError, match=r"^--profile site1:") as err:
            edit_profile(p, key, value)
        assert said in str(err.value) and "\n" not in str(err.value)


def test_customized_applies_presets_then_edits_to_the_drawn_profiles() -> None:
    config = SynthConfig(sites=3, seed=2, spacing=4.0)
    assert customized(config) is config
    out = customized(config, hard=[1], scanner=[1, 3], edits=["site1:noise=0.01"])
    drawn = draw_profiles(3, 2, 4.0)
    assert out.profiles is not None and out.profiles[1] == drawn[1]
    assert out.profiles[0] == other_scanner(harder(drawn[0])).model_copy(update={"noise": 0.01})
    assert out.profiles[2] == other_scanner(drawn[2])


def test_synth_cli_presets_are_written_into_synth_yaml(tmp_path: Path) -> None:
    out = tmp_path / "data"
    res = run_fedseg(
        "data", "synth", out, *SMALL, "--hard-site", "2", "--scanner-site", "3",
        "--profile", "site1:tumor_radius_mm=2x", "--profile", "site1:noise=0.05",
        "--val-cases", "site4:2", "--bad-site", "4", "--bad-kind", "scramble",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    doc = yaml.safe_load((out / "synth.yaml").read_text())
    written = [SiteProfile(**p) for p in doc["profiles"]]
    drawn = draw_profiles(4, 0, 8.0)
    assert written[0] == drawn[0].model_copy(
        update={"tumor_radius_mm": 2 * drawn[0].tumor_radius_mm, "noise": 0.05}
    )
    assert written[1] == harder(drawn[1]) and written[2] == other_scanner(drawn[2])
    assert written[3] == drawn[3].model_copy(update={"bad_kind": BadKind.SCRAMBLE})
    split = load_split(out / "site4")
    assert len(split.val) == 2 and len(split.train) == 2
    assert not (out / "site1" / "fedseg_split.json").exists()  # split on first use, as before
    assert read_record(out).site_profiles() == written  # synth.yaml repeats the data set


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--profile", "site1:radius=3"], "unknown key 'radius'; the keys are"),
        (["--profile", "site1:noise=abc"], "site1:noise=abc: Input should be a valid number"),
        (["--profile", "site9:noise=1"], "no site 'site9'"),
        (["--profile", "nonsense"], "give SITE:KEY=VALUE"),
        (["--hard-site", "7"], "--hard-site 7: sites are numbered 1..4"),
        (["--scanner-site", "0"], "--scanner-site 0: sites are numbered 1..4"),
        (["--val-cases", "site4:4"], "site4 has 4 cases, give it 1..3 validation cases"),
        (["--val-cases", "site4:x"], "--val-cases site4:x: give SITE:N"),
        (["--val-cases", "site9:1"], "val_cases names site9"),
        (["--bad-kind", "flipped"], "scramble"),
    ],
)
def test_synth_cli_refuses_bad_input_in_one_line(
    tmp_path: Path, args: list[str], said: str
) -> None:
    res = run_fedseg("data", "synth", tmp_path / "out", *SMALL, "--bad-site", "1", *args)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1 and said in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()  # nothing written


def test_scramble_site_permutes_every_tumor_label() -> None:
    config = SynthConfig(sites=2, cases_per_site=1, spacing=4.0, bad_sites=[2], bad_kind="scramble")
    c = synth_case(config, config.site_profiles(), 1, 0)
    assert np.array_equal(c.label, scramble_labels(c.clean_label))
    for a, b in ((NCR, ED), (ED, ET), (ET, NCR)):
        assert (c.clean_label == a).any() and np.array_equal(c.label == b, c.clean_label == a)
