"""The Flower app folder that ``flwr run`` bundles (FAB) for a fedseg federation.

The bundle is a shim (``pyproject.toml`` and two one-line modules) pointing at
``fedseg.federation.engine.server_app:app`` and ``client_app:app``; fedseg itself must be
importable where the SuperLink and SuperNodes run (runtime dependency installation is off).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from fedseg import __version__
from fedseg.run_folder import APP_DIR

#: One shim module per component, so that a site's process does not import the aggregator.
SERVER_MODULE = "fedseg_serverapp"
CLIENT_MODULE = "fedseg_clientapp"
ConfigValue = str | int | float | bool
#: run-config key: path of the simulation engine's node table (``SIM_NODES_FILE``); ""
#: (the bundle's default) under the deployment engine
SIM_NODES_KEY = "sim-nodes"

_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fedseg-federation"
version = "{version}"
description = "fedseg federation (ServerApp and ClientApp of fedseg.federation)"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "fedseg"

[tool.flwr.app.components]
serverapp = "{server}:app"
clientapp = "{client}:app"

[tool.flwr.app.config]
run-dir = ""
run-id = ""
{sim_nodes} = ""
"""

_SHIM = '''\
"""fedseg's Flower {what} (generated; see fedseg.federation.engine.app_bundle)."""

from fedseg.federation.engine.{module} import app

__all__ = ["app"]
'''


def write_app(run_dir: Path) -> Path:
    """Write the app folder into ``run_dir`` and return its path."""
    app = Path(run_dir) / APP_DIR
    app.mkdir(parents=True, exist_ok=True)
    version = __version__.split("+")[0]
    (app / "pyproject.toml").write_text(
        _PYPROJECT.format(
            version=version, server=SERVER_MODULE, client=CLIENT_MODULE, sim_nodes=SIM_NODES_KEY
        )
    )
    (app / f"{SERVER_MODULE}.py").write_text(_SHIM.format(what="ServerApp", module="server_app"))
    (app / f"{CLIENT_MODULE}.py").write_text(_SHIM.format(what="ClientApp", module="client_app"))
    return app


def run_config(run_dir: Path, run_id: str, sim_nodes: Path | None = None) -> dict[str, ConfigValue]:
    """The run config: where the run folder is and the run's name (the ServerApp), and
    under the simulation engine the simulated sites' node table (``sim-nodes``, read by the
    ClientApp's ``node_settings``; every key must be declared in the bundle's pyproject)."""
    cfg: dict[str, ConfigValue] = {"run-dir": str(Path(run_dir).resolve()), "run-id": run_id}
    if sim_nodes is not None:
        cfg[SIM_NODES_KEY] = str(Path(sim_nodes).resolve())
    return cfg


def toml_value(value: ConfigValue) -> str:
    """A value in TOML syntax, as ``--run-config``/``--node-config`` read it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def config_arg(values: Mapping[str, ConfigValue]) -> str:
    """``k1=v1 k2="v2"``: Flower's space-separated run/node config option."""
    return " ".join(f"{k}={toml_value(v)}" for k, v in values.items())
