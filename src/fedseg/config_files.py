"""Reading typed config files (YAML) with one-line errors: one implementation for plans,
recipes, intake mappings and every other pydantic config a user writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fedseg.errors import FedsegError


def read_yaml_mapping(path: Path, what: str, hint: str = "") -> dict[str, Any]:
    """The top-level mapping of the YAML file ``path`` (a ``what`` file); ``hint`` is appended
    to the not-found error (e.g. how to write one)."""
    path = Path(path)
    if not path.is_file():
        raise FedsegError(f"{path}: {what} file not found{f' ({hint})' if hint else ''}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise FedsegError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise FedsegError(f"{path}: a {what} is a mapping of keys to values at the top level")
    return data


def first_error(exc: ValidationError, top: str = "(top level)") -> str:
    """``"key.path: message"`` of the first problem pydantic found (``top`` for the root)."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or top
    return f"{where}: {err['msg'].removeprefix('Value error, ')}"
