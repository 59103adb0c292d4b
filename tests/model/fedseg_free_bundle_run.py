"""``python -m monai.bundle ARGS`` in a process where fedseg cannot be imported.

Run as ``python -I fedseg_free_bundle_run.py run --config_file ... --key value ...`` with
no PYTHONPATH: an import hook at the front of ``sys.meta_path`` refuses ``fedseg`` and
every ``fedseg.*`` module (the shared environment has fedseg installed editable, which
``-I`` does not hide), so a bundle that needed fedseg fails here. Prints ``FEDSEG-FREE``
when the workflow ran and no fedseg module was loaded. Without the ``fire`` package
(which ``python -m monai.bundle`` needs) the same ``monai.bundle.run`` is called with the
``--key value`` pairs as keyword arguments.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import runpy
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType


class BlockFedseg(importlib.abc.MetaPathFinder):
    """Refuses to find fedseg or any of its modules."""

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name == "fedseg" or name.startswith("fedseg."):
            raise ImportError(f"fedseg is blocked in this process ({name})")
        return None


def main(argv: list[str]) -> None:
    sys.meta_path.insert(0, BlockFedseg())
    try:
        import fedseg  # noqa: F401
    except ImportError:
        pass
    else:
        sys.exit("fedseg is importable: the check would prove nothing")
    if importlib.util.find_spec("fire") is not None:
        sys.argv = ["monai.bundle", *argv]
        runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
    else:
        from monai.bundle import run

        assert argv[0] == "run", argv
        pairs = argv[1:]
        run(**{k.removeprefix("--"): v for k, v in zip(pairs[::2], pairs[1::2], strict=True)})
    loaded = [m for m in sys.modules if m == "fedseg" or m.startswith("fedseg.")]
    assert not loaded, loaded
    print("FEDSEG-FREE")


if __name__ == "__main__":
    main(sys.argv[1:])
