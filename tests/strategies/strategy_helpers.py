"""Helpers of the plan tests: the federation tests' tiny plans and array transport, with
``min_sites`` 1 by default (sequential plans train one site per round)."""

from __future__ import annotations

from pathlib import Path

from fedseg.plan import PlanConfig
from tests.federation.fed_helpers import SITES, ArrayTransport, float_keys, write_run
from tests.federation.fed_helpers import tiny_plan as _tiny_plan

__all__ = ["SITES", "ArrayTransport", "float_keys", "tiny_plan", "write_run"]


def tiny_plan(sites: dict[str, Path], **overrides: object) -> PlanConfig:
    """``fed_helpers.tiny_plan`` with ``min_sites=1`` unless overridden."""
    return _tiny_plan(sites, **{"min_sites": 1, **overrides})
