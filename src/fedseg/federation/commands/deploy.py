"""``fedseg server start`` and ``fedseg site start``: the federation across machines.

Security model, Flower 1.41 deployment engine:

* TLS everywhere: the SuperLink serves with the certificate from ``fedseg pki issue-server``;
  SuperNodes and the ``flwr`` CLI verify it against the consortium's ``ca.crt``.
* SuperNode authentication (``--enable-supernode-auth``): a SuperNode signs every Fleet
  request with its EC key; the SuperLink only lets in public keys registered through its
  Control API, exactly those of the CA-signed certificates in ``CREDS/enrolled``
  (:mod:`fedseg.federation.security.enrollment`), so a revoked site is refused.
* Only the Fleet API faces the sites: Flower 1.41 serves every API on one port, so the
  SuperLink runs through :mod:`fedseg.federation.engine.fleet_gateway`, which keeps the full
  API on 127.0.0.1 and answers only ``/v1/fleet/...`` on the site-facing address; on
  127.0.0.1 the Control API answers only the launcher's token (other local users and
  processes cannot submit a run).
* A site runs only the fedseg app it installed: its SuperNode runs under
  :mod:`fedseg.federation.engine.app_guard` (``--isolation process``), which refuses any
  other app in one line of the site's log before any of its code runs.

The aggregator side is the one engine run (``engine_run.run_federation`` with its
``ServerOptions``); the site side starts a SuperNode with the site's credentials and says
in one line why it stopped. Processes, Flower's home and logs are the engine's
(:mod:`fedseg.federation.engine.processes`), with telemetry, the update check and runtime
installs off.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from fedseg.errors import FedsegError
from fedseg.federation.commands.engine_run import RunResult, ServerOptions, run_federation
from fedseg.federation.engine.app_bundle import ConfigValue, config_arg
from fedseg.federation.engine.app_guard import site_command
from fedseg.federation.engine.client_app import (
    NODE_CREDS_DIR,
    NODE_DATA_DIR,
    NODE_MIN_SUMMARY_CASES,
    NODE_SITE_NAME,
    compute_node_config,
)
from fedseg.federation.engine.fleet_gateway import DEFAULT_SITE_RUNTIME_PORT
from fedseg.federation.engine.launcher import flower_env
from fedseg.federation.engine.processes import Proc, flower_program, spawn
from fedseg.federation.security import pki
from fedseg.model.compute import ComputeOverrides, resolve_device
from fedseg.model.summary import MIN_SUMMARY_CASES
from fedseg.run_folder import FLWR_HOME, LOGS_DIR

# --- aggregator side ---------------------------------------------------------------------


def serve_plan(
    plan_path: Path,
    out: Path,
    options: ServerOptions,
    *,
    console: Console | None = None,
    live: bool = True,
) -> RunResult:
    """``fedseg server start``: SuperLink, enrollment, then the plan's run until it ends."""
    return run_federation(out, options, plan_path=plan_path, console=console, live=live)


# --- site side ---------------------------------------------------------------------------


class SiteOptions(BaseModel):
    """How a site's SuperNode reaches the aggregator."""

    model_config = ConfigDict(frozen=True)

    server: str = Field(description="the aggregator's Fleet address, HOST:PORT")
    data_dir: Path
    creds: Path = Field(description="site credentials folder: ca.crt, site.key, site.crt")
    work_dir: Path = Field(description="Flower home of this site (logs, installed app)")
    runtime_port: int = Field(DEFAULT_SITE_RUNTIME_PORT, ge=1, le=65535)
    max_retries: int | None = Field(None, ge=0, description="connection retries; None: forever")
    min_summary_cases: int = Field(
        MIN_SUMMARY_CASES, ge=1, description="this site's floor: no summary over fewer cases"
    )
    compute: ComputeOverrides = Field(
        default_factory=ComputeOverrides,
        description="this machine's device and precision over the recipe's train.compute",
    )
    node_config: dict[str, ConfigValue] = Field(default_factory=dict)
    fresh_process_per_task: bool = Field(
        False, description="each task in a new process, not the site's warm worker (app_guard)"
    )


def check_server_address(server: str) -> str:
    """Return ``HOST:PORT`` if it is one (no URL scheme), else raise FedsegError."""
    host, sep, port = server.rpartition(":")
    if "://" in server or not sep or not host or not port.isdigit():
        raise FedsegError(
            f"--server {server!r} must be HOST:PORT of the aggregator's Fleet API, "
            "e.g. aggregator.example.org:9092"
        )
    return server


def supernode_command(options: SiteOptions) -> list[str]:
    """The ``flower-supernode`` command line of a site (TLS + its enrolled auth key).

    The node config names the site (from its CA-signed certificate), its data folder, its
    summary floor, its compute choices and its credentials folder (with which it signs its
    secure-aggregation round keys), the keys the ClientApp reads.
    """
    creds = pki.site_credentials(options.creds)
    if not creds.name:
        raise FedsegError(
            f"{options.creds / pki.SITE_CERT} missing: copy site.crt from the coordinator's reply"
        )
    node_config: dict[str, ConfigValue] = {
        NODE_SITE_NAME: creds.name,
        NODE_DATA_DIR: str(options.data_dir.resolve()),
        NODE_MIN_SUMMARY_CASES: options.min_summary_cases,
        NODE_CREDS_DIR: str(options.creds.resolve()),  # signs its secure-aggregation keys
        **compute_node_config(options.compute),
        **options.node_config,
    }
    cmd = [
        flower_program("flower-supernode"),
        "--isolation", "process",  # the app guard takes the tasks (see start_site)
        "--superlink", check_server_address(options.server),
        "--root-certificates", str(creds.ca_cert.resolve()),
        "--auth-supernode-private-key", str(creds.auth_key.resolve()),
        "--node-config", config_arg(node_config),
        "--host", "127.0.0.1",
        "--port", str(options.runtime_port),
    ]  # fmt: skip
    if options.max_retries is not None:
        cmd += ["--max-retries", str(options.max_retries)]
    return cmd


def start_site(options: SiteOptions, env: Mapping[str, str] | None = None) -> Proc:
    """Start a site's SuperNode under its app guard in the background, in its own session
    (the guard's ClientApp processes stop with it); log: ``work_dir/logs/supernode.log``."""
    if not options.data_dir.is_dir():
        raise FedsegError(f"data folder {options.data_dir} not found")
    check_site_compute(options.compute)
    cmd = site_command(
        supernode_command(options), options.runtime_port, options.fresh_process_per_task
    )
    home = options.work_dir / FLWR_HOME
    home.mkdir(parents=True, exist_ok=True)
    return spawn(
        "site", cmd, env or flower_env(home), options.work_dir / LOGS_DIR / "supernode.log"
    )


def check_site_compute(compute: ComputeOverrides) -> None:
    """A ``--device`` this machine does not have is a one-line error before the site
    connects (``resolve_device``'s); a device the plan's recipe asks for is checked by
    each task, which fails with that line."""
    if compute.device is not None:
        resolve_device(compute.device)


_SUPERNODE_FAILURES = (
    (
        "Failed to activate SuperNode",
        "the aggregator does not know this site's key: it is not enrolled (send the request "
        "from `fedseg pki request` to the coordinator), was enrolled after the aggregator "
        "started (restart it), or was revoked",
    ),
    (
        "401 Unauthorized",
        "the aggregator no longer knows this node: it restarted for a new run, or this site "
        "was revoked",
    ),
    ("Unable to parse the private key", "site.key is not a SuperNode key from `fedseg pki`"),
    (
        "CERTIFICATE_VERIFY_FAILED",
        "the aggregator's TLS certificate does not chain to this site's ca.crt",
    ),
    (
        "could not establish a connection",
        "the aggregator is not reachable at --server (address, port, firewall)",
    ),
)


def explain_supernode_failure(log_tail: str) -> str:
    """One line saying why a SuperNode stopped, from the end of its log."""
    for needle, reason in _SUPERNODE_FAILURES:
        if needle in log_tail:
            return reason
    return "see the log"
