"""Start the aggregator (SuperLink + run) and a site (SuperNode) across machines.

Security model, Flower 1.41 deployment engine:

* TLS everywhere: the SuperLink serves with the certificate from ``fedseg pki issue-server``;
  SuperNodes and the ``flwr`` CLI verify it against the consortium's ``ca.crt``.
* SuperNode authentication (``--enable-supernode-auth``): a SuperNode signs every Fleet
  request with its EC key; the SuperLink only lets in public keys registered through its
  Control API. :func:`enroll_sites` registers exactly the keys of the CA-signed certificates
  in ``CREDS/enrolled`` (``flwr supernode register``), so only enrolled sites can join.
* Only the Fleet API faces the sites: Flower 1.41 serves every API on one port, so the
  SuperLink runs through :mod:`fedseg.federation.fleet_gateway`, which keeps the full API on
  127.0.0.1 and answers only ``/v1/fleet/...`` on the site-facing address.

Flower's home (config.toml, installed apps) lives inside the run folder; telemetry, the
update check and runtime dependency installation are off.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pydantic import BaseModel, ConfigDict, Field

import fedseg
from fedseg.errors import FedsegError
from fedseg.federation import pki

CONNECTION = "fedseg"
DEFAULT_FLEET_PORT = 9092
DEFAULT_CONTROL_PORT = 9093
DEFAULT_SITE_RUNTIME_PORT = 9094
ConfigValue = str | int | float | bool


def flower_env(home: Path, extra_pythonpath: list[Path] | None = None) -> dict[str, str]:
    """Environment for Flower processes: home in ``home``, no telemetry/update check/installs."""
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(home.resolve()),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        PYTHONUNBUFFERED="1",
        # Flower starts `flower-superexec` by name: find the one of this environment first.
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    # Flower's child processes (SuperExec, ServerApp, ClientApp) import this very fedseg.
    parts = [str(p.resolve()) for p in extra_pythonpath or []]
    parts.append(str(Path(fedseg.__file__).resolve().parents[1]))
    if env.get("PYTHONPATH"):
        parts.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    home.mkdir(parents=True, exist_ok=True)
    return env


def flower_bin(name: str) -> str:
    """Path of a Flower console script next to this interpreter (the venv's), else on PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise FedsegError(f"`{name}` not found: install flwr==1.41.0 in this environment")
    return found


def write_connection(home: Path, address: str, ca_cert: Path, name: str = CONNECTION) -> None:
    """Write Flower's ``config.toml`` with one TLS SuperLink connection, made the default."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{name}"\n\n'
        f"[superlink.{name}]\n"
        f'address = "{address}"\n'
        f'root-certificates = "{ca_cert.resolve()}"\n'
    )


def toml_value(value: ConfigValue) -> str:
    """One value in TOML syntax, as ``flwr run --run-config`` and ``--node-config`` read it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def config_arg(values: Mapping[str, ConfigValue]) -> str:
    """``k1=v1 k2="v2"``: the space-separated form of Flower's run/node config options."""
    return " ".join(f"{k}={toml_value(v)}" for k, v in values.items())


# --- processes ---------------------------------------------------------------------------


@dataclass
class ManagedProcess:
    """A Flower process in its own session (so its SuperExec children stop with it)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    _log_fh: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the process group, then SIGKILL what is left after ``timeout`` seconds."""
        if self.alive():
            _signal_group(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)
        # Children (SuperExec, app processes) share the group; make sure none outlive it.
        _signal_group(self.popen.pid, signal.SIGKILL)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        return self.popen.returncode

    def tail(self, lines: int = 20) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def spawn(name: str, cmd: list[str], env: Mapping[str, str], log: Path) -> ManagedProcess:
    """Start ``cmd`` in a new session with stdout+stderr to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    fh = log.open("ab")
    popen = subprocess.Popen(
        cmd, env=dict(env), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
    )
    return ManagedProcess(name=name, popen=popen, log=log, _log_fh=fh)


# --- aggregator side ---------------------------------------------------------------------


class ServerOptions(BaseModel):
    """Where and how the aggregator's SuperLink listens."""

    model_config = ConfigDict(frozen=True)

    creds: Path = Field(description="coordinator credentials folder (fedseg pki init)")
    run_dir: Path = Field(description="run folder: Flower home, SuperLink database, logs")
    fleet_host: str = Field("0.0.0.0", description="site-facing address of the Fleet API")
    fleet_port: int = Field(DEFAULT_FLEET_PORT, ge=1, le=65535)
    control_port: int = Field(
        DEFAULT_CONTROL_PORT, ge=1, le=65535, description="loopback port of every API"
    )

    @property
    def home(self) -> Path:
        return self.run_dir / "flwr-home"

    @property
    def control_address(self) -> str:
        return f"127.0.0.1:{self.control_port}"


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
            f"no site is enrolled in {paths.enrolled}; run `fedseg pki issue-site NAME` or "
            "`fedseg pki sign REQUEST` for each site"
        )
    return sites


def superlink_command(options: ServerOptions) -> list[str]:
    """The fleet-gateway command line (Flower's SuperLink with the Fleet API alone outside)."""
    paths = pki.CaPaths(options.creds)
    return [
        sys.executable,
        "-m",
        "fedseg.federation.fleet_gateway",
        "--fleet-host",
        options.fleet_host,
        "--fleet-port",
        str(options.fleet_port),
        "--",
        "--host",
        "127.0.0.1",
        "--port",
        str(options.control_port),
        "--ssl-certfile",
        str(paths.server_cert.resolve()),
        "--ssl-keyfile",
        str(paths.server_key.resolve()),
        "--ssl-ca-certfile",
        str(paths.cert.resolve()),
        "--enable-supernode-auth",
        "--database",
        str((options.run_dir / "superlink.db").resolve()),
        "--disable-runtime-dependency-installation",
    ]


def wait_healthy(address: str, ca_cert: Path, proc: ManagedProcess, timeout: float = 60) -> None:
    """Poll ``https://address/health`` (verified against ``ca_cert``) until it answers 200."""
    context = ssl.create_default_context(cafile=str(ca_cert))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise FedsegError(
                f"the SuperLink exited (code {proc.popen.returncode}); see {proc.log}: "
                + proc.tail(3).replace("\n", " | ")
            )
        try:
            with urllib.request.urlopen(
                f"https://{address}/health", context=context, timeout=2
            ) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise FedsegError(f"the SuperLink did not answer on {address} within {timeout:.0f} s")


def start_superlink(options: ServerOptions) -> ManagedProcess:
    """Start the SuperLink (TLS, node auth, Fleet-only outside) and wait until it answers."""
    options.run_dir.mkdir(parents=True, exist_ok=True)
    env = flower_env(options.home)
    write_connection(options.home, options.control_address, pki.CaPaths(options.creds).cert)
    proc = spawn(
        "superlink",
        superlink_command(options),
        env,
        options.run_dir / "logs" / "superlink.log",
    )
    try:
        wait_healthy(options.control_address, pki.CaPaths(options.creds).cert, proc)
    except BaseException:
        proc.stop()
        raise
    return proc


def _flwr(
    args: list[str], home: Path, timeout: float = 60, extra_pythonpath: list[Path] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [flower_bin("flwr"), *args],
        env=flower_env(home, extra_pythonpath),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _json_tail(stdout: str) -> dict[str, object]:
    """The JSON object that ``flwr ... --format json`` prints (after any banner lines)."""
    start = stdout.find("{")
    if start < 0:
        return {}
    try:
        data = json.loads(stdout[start:])
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


NODES_FILE = "enrolled-nodes.json"


def _registry(options: ServerOptions) -> dict[str, dict[str, object]]:
    path = options.run_dir / NODES_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def enroll_sites(options: ServerOptions, sites: list[pki.EnrolledSite]) -> dict[str, int]:
    """Make the SuperLink's enrolled keys exactly ``sites``; return name -> Flower node id.

    New keys are registered (``flwr supernode register``); keys registered by an earlier
    start of this run folder but no longer enrolled (certificate removed) are unregistered,
    so a revoked site is refused from the next start on. The mapping is kept in
    ``RUN/enrolled-nodes.json``: it is also the trustworthy name of each node, since a node
    is identified by its key, not by what its node config claims.
    """
    registry = _registry(options)
    wanted = {s.name: s.openssh_public_key.decode() for s in sites}
    for name, entry in list(registry.items()):
        if wanted.get(name) != entry["public_key"]:
            result = _flwr(
                ["supernode", "unregister", str(entry["node_id"]), CONNECTION], options.home
            )
            if result.returncode != 0:
                raise FedsegError(
                    f"could not unregister revoked site {name!r}: "
                    + (result.stdout + result.stderr).strip().replace("\n", " ")[-300:]
                )
            del registry[name]
    keys_dir = options.run_dir / "enrolled-keys"
    keys_dir.mkdir(parents=True, exist_ok=True)
    for site in sites:
        if site.name in registry:
            continue
        key_file = keys_dir / f"{site.name}.pub"
        key_file.write_text(wanted[site.name] + "\n")
        result = _flwr(
            [
                "supernode",
                "register",
                str(key_file),
                CONNECTION,
                "--name",
                site.name,
                "--format",
                "json",
            ],
            options.home,
        )
        data = _json_tail(result.stdout)
        if not (data.get("success") and "node-id" in data):
            output = (result.stdout + result.stderr).strip().replace("\n", " ")
            hint = (
                "; this run folder's SuperLink database knows the key but lost its record: "
                "use a new run folder"
                if "already in use" in output
                else ""
            )
            raise FedsegError(f"could not enroll site {site.name!r}: {output[-300:]}{hint}")
        registry[site.name] = {
            "node_id": int(str(data["node-id"])),
            "public_key": wanted[site.name],
        }
        (options.run_dir / NODES_FILE).write_text(json.dumps(registry, indent=2))
    (options.run_dir / NODES_FILE).write_text(json.dumps(registry, indent=2))
    return {name: int(str(entry["node_id"])) for name, entry in registry.items()}


def submit_run(
    options: ServerOptions,
    app_dir: Path,
    run_config: Mapping[str, ConfigValue],
    stream_to: IO[str] | None = None,
    timeout: float | None = None,
    extra_pythonpath: list[Path] | None = None,
) -> int:
    """``flwr run APP`` on the loopback Control API and follow its logs until it ends.

    Returns the exit code of ``flwr run --stream`` (0 when the run finished).
    """
    cmd = [flower_bin("flwr"), "run", str(app_dir.resolve()), CONNECTION, "--stream"]
    if run_config:
        cmd += ["--run-config", config_arg(run_config)]
    log = options.run_dir / "logs" / "run.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as fh:
        proc = subprocess.Popen(
            cmd,
            env=flower_env(options.home, extra_pythonpath),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        for line in proc.stdout:
            fh.write(line)
            fh.flush()
            if stream_to is not None:
                stream_to.write(line)
            if deadline is not None and time.monotonic() > deadline:
                proc.kill()
                break
        return proc.wait()


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
    """The ``flower-supernode`` command line for a site (TLS + its enrolled auth key)."""
    creds = pki.site_credentials(options.creds)
    node_config: dict[str, ConfigValue] = {"data-dir": str(options.data_dir.resolve())}
    if creds.name:
        node_config["site-name"] = creds.name
    node_config.update(options.node_config)
    cmd = [
        flower_bin("flower-supernode"),
        "--superlink",
        check_server_address(options.server),
        "--root-certificates",
        str(creds.ca_cert.resolve()),
        "--auth-supernode-private-key",
        str(creds.auth_key.resolve()),
        "--node-config",
        config_arg(node_config),
        "--host",
        "127.0.0.1",
        "--port",
        str(options.runtime_port),
    ]
    if options.max_retries is not None:
        cmd += ["--max-retries", str(options.max_retries)]
    return cmd


def start_site(options: SiteOptions, extra_pythonpath: list[Path] | None = None) -> ManagedProcess:
    """Start a site's SuperNode in the background (logs in ``work_dir/logs/supernode.log``)."""
    if not options.data_dir.is_dir():
        raise FedsegError(f"data folder {options.data_dir} not found")
    cmd = supernode_command(options)
    env = flower_env(options.work_dir / "flwr-home", extra_pythonpath)
    return spawn("supernode", cmd, env, options.work_dir / "logs" / "supernode.log")


_SUPERNODE_FAILURES = (
    (
        "Failed to activate SuperNode",
        "the aggregator does not know this site's key: the site is not enrolled (send the "
        "request from `fedseg pki request` to the coordinator) or the server was started "
        "before the enrollment",
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


def plan_app(plan: Path) -> tuple[Path, dict[str, ConfigValue], Path]:
    """The Flower app folder, run config and run folder for a federation plan."""
    raise FedsegError(
        f"cannot run {plan}: `fedseg server start` needs the federation plan support "
        "(fedseg.federation.plan), which is not in this build yet"
    )
