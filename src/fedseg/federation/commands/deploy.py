"""Start the aggregator (SuperLink + the plan's run) and a site (SuperNode) across machines.

Security model, Flower 1.41 deployment engine:

* TLS everywhere: the SuperLink serves with the certificate from ``fedseg pki issue-server``;
  SuperNodes and the ``flwr`` CLI verify it against the consortium's ``ca.crt``.
* SuperNode authentication (``--enable-supernode-auth``): a SuperNode signs every Fleet
  request with its EC key; the SuperLink only lets in public keys registered through its
  Control API. :func:`enroll_sites` registers exactly the keys of the CA-signed certificates
  in ``CREDS/enrolled``, so only enrolled sites can join, and a revoked one is refused.
* Only the Fleet API faces the sites: Flower 1.41 serves every API on one port, so the
  SuperLink runs through :mod:`fedseg.federation.engine.fleet_gateway`, which keeps the full API on
  127.0.0.1 and answers only ``/v1/fleet/...`` on the site-facing address.

The processes, Flower's home and logs are the federation launcher's (``launcher.py``): all
in the run folder, with telemetry, the update check and runtime installs off.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from fedseg.errors import FedsegError
from fedseg.federation.commands.run_folder import prepare_run
from fedseg.federation.commands.simulate import SimulationResult, result_of, watch
from fedseg.federation.engine.app_bundle import ConfigValue, config_arg, run_config, write_app
from fedseg.federation.engine.client_app import NODE_DATA_DIR, NODE_SITE_NAME
from fedseg.federation.engine.fleet_gateway import (
    DEFAULT_CONTROL_PORT,
    DEFAULT_FLEET_PORT,
    DEFAULT_SITE_RUNTIME_PORT,
)
from fedseg.federation.engine.launcher import CONNECTION, Launcher, Proc, Security, flower_env
from fedseg.federation.security import pki
from fedseg.plan import PlanConfig, load_plan
from fedseg.run_folder import ENROLLED_NODES_FILE, FLWR_HOME, LOGS_DIR, PLAN_FILE, RunStatus
from fedseg.tracking.store import RunStore


def flower_bin(name: str) -> str:
    """Path of a Flower console script of this environment (next to the interpreter)."""
    local = Path(sys.executable).parent / name
    if not local.exists():
        raise FedsegError(f"`{name}` not found next to {sys.executable}: install flwr==1.41.0")
    return str(local)


# --- aggregator side ---------------------------------------------------------------------


class ServerOptions(BaseModel):
    """Where the aggregator's SuperLink listens and what it trusts."""

    model_config = ConfigDict(frozen=True)

    creds: Path = Field(description="coordinator credentials folder (fedseg pki init)")
    fleet_host: str = Field("0.0.0.0", description="site-facing address of the Fleet API")
    fleet_port: int = Field(DEFAULT_FLEET_PORT, ge=1, le=65535)
    control_port: int = Field(
        DEFAULT_CONTROL_PORT, ge=1, le=65535, description="loopback port of every API"
    )


def server_security(creds: Path) -> Security:
    """TLS with the coordinator's server certificate, SuperNode authentication on."""
    paths = pki.CaPaths(creds)
    return Security(
        insecure=False,
        ca_cert=paths.cert.resolve(),
        server_cert=paths.server_cert.resolve(),
        server_key=paths.server_key.resolve(),
        supernode_auth=True,
    )


class AggregatorLauncher(Launcher):
    """The federation launcher, with the SuperLink behind the fleet gateway.

    Everything but the SuperLink command is the launcher's: run-folder home, logs, pid file,
    ``flwr`` connection (to the loopback address), health wait, ``submit``, ``stop``.
    """

    def __init__(self, run_dir: Path, options: ServerOptions) -> None:
        super().__init__(run_dir, server_security(options.creds), "127.0.0.1", options.control_port)
        self.options = options

    def superlink_command(self) -> list[str]:
        sec = self.security
        return [
            sys.executable, "-m", "fedseg.federation.engine.fleet_gateway",
            "--fleet-host", self.options.fleet_host,
            "--fleet-port", str(self.options.fleet_port),
            "--",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--disable-runtime-dependency-installation",
            "--ssl-certfile", str(sec.server_cert),
            "--ssl-keyfile", str(sec.server_key),
            "--ssl-ca-certfile", str(sec.ca_cert),
            "--enable-supernode-auth",
        ]  # fmt: skip

    def start_superlink(self, timeout_s: float = 120.0) -> Proc:
        """Start the SuperLink (TLS, node auth, Fleet-only outside); wait until it answers."""
        # State in memory (as the launcher's default: its SQLite file locked up under load),
        # so a new SuperLink knows no key yet: forget the previous one's registrations.
        (self.run_dir / ENROLLED_NODES_FILE).unlink(missing_ok=True)
        self._write_connection()
        proc = self._spawn("superlink", self.superlink_command(), "superlink.log")
        self._wait_healthy(proc, timeout_s)
        return proc

    def flwr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A ``flwr`` command against this SuperLink's loopback Control API."""
        return subprocess.run(
            [flower_bin("flwr"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def check_server_creds(creds: Path) -> list[pki.EnrolledSite]:
    """Check the coordinator's folder (CA, server certificate, enrolled sites) before starting."""
    paths = pki.CaPaths(creds)
    ca = pki.load_cert(paths.cert)
    if not paths.server_cert.exists() or not paths.server_key.exists():
        raise FedsegError(
            f"{paths.server_cert.parent} has no server certificate; run "
            f"`fedseg pki issue-server HOST --creds {creds}` first"
        )
    pki.verify_issued(pki.load_cert(paths.server_cert), ca)
    sites = pki.enrolled_sites(creds)
    if not sites:
        raise FedsegError(
            f"no site is enrolled in {paths.enrolled}; run `fedseg pki sign REQUEST` (or "
            "`fedseg pki issue-site NAME`) for each site"
        )
    return sites


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    return " ".join((result.stdout + result.stderr).split())[-300:]


def _json_tail(stdout: str) -> dict[str, object]:
    """The JSON object that ``flwr ... --format json`` prints (after any banner lines)."""
    start = stdout.find("{")
    try:
        data = json.loads(stdout[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def enroll_sites(launcher: AggregatorLauncher, sites: list[pki.EnrolledSite]) -> dict[str, int]:
    """Make the SuperLink's registered keys exactly ``sites``; return name -> Flower node id.

    New keys are registered (``flwr supernode register``); keys this SuperLink registered
    earlier but no longer enrolled (certificate removed or replaced) are unregistered, so a
    revoked site is refused from then on, without a restart. The mapping is kept in
    ``RUN/enrolled-nodes.json``: a node's trustworthy name, since the SuperLink identifies
    a node by its key, whatever name the node's config claims.
    """
    path = launcher.run_dir / ENROLLED_NODES_FILE
    registry: dict[str, dict[str, object]] = json.loads(path.read_text()) if path.exists() else {}
    wanted = {s.name: s.openssh_public_key.decode() for s in sites}
    for name, entry in list(registry.items()):
        if wanted.get(name) != entry["public_key"]:
            result = launcher.flwr("supernode", "unregister", str(entry["node_id"]), CONNECTION)
            if result.returncode != 0:
                raise FedsegError(f"could not unregister site {name!r}: {_one_line(result)}")
            del registry[name]
            path.write_text(json.dumps(registry, indent=2))
    keys_dir = launcher.home / "enrolled-keys"
    keys_dir.mkdir(parents=True, exist_ok=True)
    for name, public_key in wanted.items():
        if name in registry:
            continue
        key_file = keys_dir / f"{name}.pub"
        key_file.write_text(public_key + "\n")
        result = launcher.flwr(
            "supernode", "register", str(key_file), CONNECTION, "--name", name, "--format", "json"
        )
        data = _json_tail(result.stdout)
        if not (data.get("success") and "node-id" in data):
            raise FedsegError(f"could not enroll site {name!r}: {_one_line(result)}")
        registry[name] = {"node_id": int(str(data["node-id"])), "public_key": public_key}
        path.write_text(json.dumps(registry, indent=2))
    path.write_text(json.dumps(registry, indent=2))
    return {name: int(str(entry["node_id"])) for name, entry in registry.items()}


def prepare_deployment(plan_path: Path, out: Path, enrolled: list[str]) -> PlanConfig:
    """Create the run folder ``out`` with its plan and store; every plan site must be enrolled.

    Site data folders are the sites' business in a deployment: a plan's ``data`` is ignored.
    """
    plan = load_plan(plan_path)
    missing = [name for name in plan.sites if name not in enrolled]
    if missing:
        raise FedsegError(
            f"plan site(s) {', '.join(missing)} not enrolled (enrolled: "
            f"{', '.join(enrolled)}); sign their requests with `fedseg pki sign` first"
        )
    return prepare_run(plan_path, out, simulation=False)


def serve_plan(
    plan_path: Path,
    out: Path,
    options: ServerOptions,
    *,
    console: Console | None = None,
    live: bool = True,
) -> SimulationResult:
    """``fedseg server start``: SuperLink, enrollment, then the plan's run until it ends."""
    sites = check_server_creds(options.creds)
    prepare_deployment(plan_path, out, [s.name for s in sites])
    run_dir = out.resolve()
    plan = load_plan(run_dir / PLAN_FILE)
    console = console or Console(stderr=True)
    t0 = time.monotonic()
    with RunStore(run_dir) as store:
        run_id = str(store.meta.run_id())
        store.meta.set_status(RunStatus.STARTING)
    launcher = AggregatorLauncher(run_dir, options)
    launcher.kill_leftovers()
    app = write_app(run_dir)
    try:
        with console.status("starting the SuperLink"):
            launcher.start_superlink()
            enroll_sites(launcher, sites)
        console.print(
            f"SuperLink up: sites connect to {options.fleet_host}:{options.fleet_port} "
            f"(Fleet API only); enrolled: {', '.join(s.name for s in sites)}"
        )
        flower_run = launcher.submit(app, run_config(run_dir, run_id))
        with RunStore(run_dir) as store:
            store.meta.set_flower_run_id(flower_run)
            store.log(f"Flower run {flower_run} submitted (deployment)")
        watch(run_dir, plan, launcher, console, live)
    finally:
        launcher.stop()
    return result_of(run_dir, t0)


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
    node_config: dict[str, ConfigValue] = Field(default_factory=dict)


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

    The node config names the site (from its CA-signed certificate) and its data folder,
    the keys the ClientApp reads.
    """
    creds = pki.site_credentials(options.creds)
    if not creds.name:
        raise FedsegError(
            f"{options.creds / pki.SITE_CERT} missing: copy site.crt from the coordinator's reply"
        )
    node_config: dict[str, ConfigValue] = {
        NODE_SITE_NAME: creds.name,
        NODE_DATA_DIR: str(options.data_dir.resolve()),
        **options.node_config,
    }
    cmd = [
        flower_bin("flower-supernode"),
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


@dataclass
class SiteProcess:
    """A site's SuperNode, in its own session (its SuperExec and ClientApps stop with it)."""

    popen: subprocess.Popen[bytes]
    log: Path
    _log_fh: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the process group, then SIGKILL what is left after ``timeout`` seconds."""
        if self.alive():
            _signal_group(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=timeout)
        _signal_group(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=5)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        return self.popen.returncode


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def start_site(options: SiteOptions, env: Mapping[str, str] | None = None) -> SiteProcess:
    """Start a site's SuperNode in the background (log: ``work_dir/logs/supernode.log``)."""
    if not options.data_dir.is_dir():
        raise FedsegError(f"data folder {options.data_dir} not found")
    cmd = supernode_command(options)
    home = options.work_dir / FLWR_HOME
    home.mkdir(parents=True, exist_ok=True)
    log = options.work_dir / LOGS_DIR / "supernode.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    fh = log.open("ab")
    popen = subprocess.Popen(
        cmd,
        env=dict(env or flower_env(home)),
        stdout=fh,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    return SiteProcess(popen=popen, log=log, _log_fh=fh)


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
