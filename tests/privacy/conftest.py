"""Fixtures of the privacy tests."""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from typing import Any

import pytest

from fedseg.privacy import accounting


@pytest.fixture
def without_dp_accounting(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process as if dp-accounting were not installed (the privacy extra missing)."""
    real_import = builtins.__import__

    def no_dp(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "dp_accounting":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    accounting._dp.cache_clear()
    monkeypatch.setattr(builtins, "__import__", no_dp)
    try:
        yield
    finally:
        monkeypatch.undo()
        accounting._dp.cache_clear()
