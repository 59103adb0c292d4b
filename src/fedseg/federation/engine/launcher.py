"""Start and stop Flower's engines: one SuperLink, and one SuperNode per site (deployment
engine) or the SuperLink's simulation runtime (simulation engine: ``start_superlink(
simulation=SimulationOptions(...))``; Flower then starts ``flwr-simulation``, which runs
the ServerApp and a Ray pool of ``workers`` actors that run every virtual node's ClientApp
messages, so processes and memory grow with the workers, not the sites).

Only Flower's command-line programs are used here (``flower-superlink``,
``flower-supernode``, ``flwr run``), so a Flower upgrade touches their flags, not our code.
Flower's home (``FLWR_HOME``: config.toml, installed app bundles) and every log live in the
run folder; telemetry, the update check and runtime dependency installation are off.

The SuperLink keeps its state in memory unless ``persistent_state`` (a deployment that
registers SuperNode keys wants them kept): on this machine, under heavy load, its SQLite
file answered "database is locked" to heartbeats and the SuperLink then dropped the run.

Security: ``Security()`` is plain HTTP and is refused on anything but loopback; otherwise the
SuperLink serves TLS (``server_cert``/``server_key``) and SuperNodes and ``flwr`` verify it
against ``ca_cert``; ``supernode_auth`` turns on SuperNode authentication (sites sign with
``site_keys[site]``; their public keys must be registered with the SuperLink first). The
SuperLink always runs behind :mod:`fleet_gateway`: every API on the launcher's loopback
address, only the Fleet API on the gateway's address (site-facing in a deployment, another
loopback port in a simulation). The Control API answers only this launcher's ``flwr``
calls: a new token per start in ``<home>/control.token`` (0600, the home 0700), which
Flower's CLI sends from its credential store in the same home (``credentials.yaml``, as
``flwr login`` would leave it). Sites run under :mod:`app_guard` (only the fedseg app).

The processes are :class:`~fedseg.federation.engine.processes.Proc` (own session, dies with
the launcher), and the launcher's reaper kills the processes Flower starts in turn when
the launcher dies (all of them carry this run's Flower home in their environment, the
marker); a later start in the same run folder kills whatever is still left with the same
scan. ``<home>/pids.json`` lists the running processes for people.

Ray (simulation engine) keeps its sockets, session and logs in a short per-run folder,
``RAY_TMPDIR`` = ``/tmp/fedseg-ray-<hash of the Flower home>`` (unix socket paths are
limited to 107 bytes; a run folder's path may be longer); its usage statistics are off.
Ray's DashboardAgent and RuntimeEnvAgent do not carry the Flower home in their
environment but do carry ``RAY_TMPDIR``, so both are the run's markers. Stopping first
lets ``flwr-simulation`` end by itself (it shuts Ray down), then signals what is left.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import fedseg
from fedseg.errors import FedsegError
from fedseg.federation.engine.app_bundle import ConfigValue, config_arg
from fedseg.federation.engine.app_guard import site_command
from fedseg.federation.engine.fleet_gateway import FleetGateway
from fedseg.federation.engine.processes import (
    Proc,
    flower_program,
    kill_marked,
    spawn,
    start_reaper,
    stop_all,
    stop_reaper,
    wait_marked_exit,
)
from fedseg.run_folder import FLWR_HOME, LOGS_DIR

CONNECTION = "fedseg"
PIDS = "pids.json"
CONTROL_TOKEN = "control.token"
#: SuperExec's task polling (Flower default 1 s); it is one of several polls in a round.
TASK_POLL_S = "0.2"
#: Flower's simulation runtime process (it runs the ServerApp and drives Ray)
SIMULATION_PROGRAM = "flwr-simulation"
#: how long ``stop`` lets ``flwr-simulation`` end by itself (it shuts Ray down) before
#: signalling the engine
SIMULATION_EXIT_S = 30.0


@dataclass(frozen=True)
class SimulationOptions:
    """Flower's simulation engine for one run: ``nodes`` virtual SuperNodes served by a Ray
    pool of ``workers`` actors of ``cpus_per_worker`` CPUs each (the connection options
    ``options.*`` that ``flwr run`` sends; ``flwr/cli/flower_config.py``)."""

    nodes: int
    workers: int
    cpus_per_worker: int = 1
    #: Ray's own log level (``ray.init(logging_level=...)``)
    logging_level: str = "WARNING"

    def connection_lines(self) -> list[str]:
        return [
            f"options.num-supernodes = {self.nodes}",
            f"options.backend.client-resources.num-cpus = {self.cpus_per_worker}",
            "options.backend.client-resources.num-gpus = 0.0",
            f"options.backend.init-args.num-cpus = {self.workers * self.cpus_per_worker}",
            f'options.backend.init-args.logging-level = "{self.logging_level}"',
        ]


@dataclass(frozen=True)
class Security:
    """How the engine's connections are protected (see the module docstring)."""

    insecure: bool = True
    ca_cert: Path | None = None
    server_cert: Path | None = None
    server_key: Path | None = None
    supernode_auth: bool = False
    site_keys: Mapping[str, Path] = field(default_factory=dict)

    def check(self, host: str) -> None:
        if self.insecure:
            if host not in ("127.0.0.1", "localhost", "::1"):
                raise FedsegError(
                    f"refusing an insecure (no TLS) SuperLink on {host}: use TLS certificates "
                    "(`fedseg pki`) for anything but loopback"
                )
            return
        for name in ("ca_cert", "server_cert", "server_key"):
            p = getattr(self, name)
            if p is None or not Path(p).is_file():
                raise FedsegError(f"TLS needs {name}: {p} not found (issue it with `fedseg pki`)")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def json_output(stdout: str) -> dict[str, object]:
    """The JSON object that ``flwr ... --format json`` prints (after any banner lines);
    empty if there is none."""
    start = stdout.find("{")
    try:
        data = json.loads(stdout[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def ray_tmpdir(home: Path) -> Path:
    """Ray's temp folder for the engine of Flower home ``home``: short (unix sockets live
    there) and its own per run (two runs never share a Ray instance)."""
    digest = hashlib.sha256(str(Path(home).resolve()).encode()).hexdigest()[:12]
    return Path("/tmp") / f"fedseg-ray-{digest}"


def flower_env(home: Path) -> dict[str, str]:
    """Environment of every Flower process: home in the run folder, nothing phoned home,
    nothing installed, and this fedseg importable by the app processes Flower spawns."""
    env = dict(os.environ)
    src = str(Path(fedseg.__file__).resolve().parents[1])
    env.update(
        FLWR_HOME=str(Path(home).resolve()),
        RAY_TMPDIR=str(ray_tmpdir(home)),
        RAY_USAGE_STATS_ENABLED="0",
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        FLWR_SUPEREXEC_TASK_POLL_INTERVAL=TASK_POLL_S,
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])]),
        # Flower starts `flower-superexec`/`flwr-*app` by name: find this environment's first.
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    return env


class Launcher:
    """The engine processes of one run folder."""

    def __init__(self, run_dir: Path, security: Security | None = None,
                 host: str = "127.0.0.1", port: int | None = None,
                 persistent_state: bool = False,
                 gateway: FleetGateway | None = None) -> None:  # fmt: skip
        self.run_dir = Path(run_dir).resolve()
        self.home = self.run_dir / FLWR_HOME
        self.logs = self.run_dir / LOGS_DIR
        self.security = security or Security()
        self.host = host
        self.security.check(host)
        self.port = port or free_port(host if host != "0.0.0.0" else "127.0.0.1")
        if gateway is None:  # a simulation: the sites' Fleet API on another loopback port
            gateway = FleetGateway("127.0.0.1", free_port())
        self.gateway = gateway
        self.security.check(gateway.host)
        self.persistent_state = persistent_state
        self.procs: list[Proc] = []
        self.reaper: subprocess.Popen[bytes] | None = None
        #: set by ``start_superlink(simulation=...)``
        self.simulation: SimulationOptions | None = None
        self.home.mkdir(parents=True, exist_ok=True)
        self.home.chmod(0o700)  # the Control API token and Flower's credentials live here
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = flower_env(self.home)

    @property
    def address(self) -> str:
        host = "127.0.0.1" if self.host == "0.0.0.0" else self.host
        return f"{host}:{self.port}"

    @property
    def site_address(self) -> str:
        """Where a SuperNode on this machine reaches the Fleet API (the gateway)."""
        return self.gateway.site_address

    # -- processes --------------------------------------------------------------------
    @property
    def marker(self) -> bytes:
        """``FLWR_HOME=<home>``: in the environment of every Flower process of this run's
        engine (Ray's agents aside: :attr:`markers`)."""
        return f"FLWR_HOME={self.env['FLWR_HOME']}".encode()

    @property
    def markers(self) -> list[bytes]:
        """Every marker of this run's engine processes: the Flower home and Ray's temp
        folder (Ray's DashboardAgent and RuntimeEnvAgent carry only the latter)."""
        return [self.marker, f"RAY_TMPDIR={self.env['RAY_TMPDIR']}".encode()]

    def _spawn(self, role: str, cmd: list[str], log_name: str) -> Proc:
        if self.reaper is None:
            env = {k: v for k, v in self.env.items() if k not in ("FLWR_HOME", "RAY_TMPDIR")}
            self.reaper = start_reaper(self.markers, env)
        proc = spawn(role, cmd, self.env, self.logs / log_name)
        self.procs.append(proc)
        self._write_pids()
        return proc

    def _write_pids(self) -> None:
        pids = [{"role": p.role, "pid": p.popen.pid} for p in self.procs if p.alive()]
        (self.home / PIDS).write_text(json.dumps(pids))

    def superlink_args(self) -> list[str]:
        """``flower-superlink``'s arguments: address, state, TLS, SuperNode authentication."""
        sec = self.security
        args = ["--host", self.host, "--port", str(self.port),
                "--disable-runtime-dependency-installation"]  # fmt: skip
        if self.persistent_state:
            # Node registrations survive a restart; runs do not (resume is ours, see resume.py)
            args += ["--database", str(self.home / "superlink.db")]
        if sec.insecure:
            args.append("--insecure")
        else:
            args += ["--ssl-certfile", str(sec.server_cert), "--ssl-keyfile", str(sec.server_key),
                     "--ssl-ca-certfile", str(sec.ca_cert)]  # fmt: skip
        if sec.supernode_auth:
            args.append("--enable-supernode-auth")
        return args

    def start_superlink(
        self, timeout_s: float = 120.0, simulation: SimulationOptions | None = None
    ) -> Proc:
        """Start the SuperLink behind the gateway, with a new Control API token; wait until
        it answers. With ``simulation``, it runs Flower's simulation runtime (``--simulation``)
        and the connection asks for that many virtual nodes and Ray workers."""
        self.simulation = simulation
        args = self.superlink_args()
        if simulation is not None:
            args.append("--simulation")
        cmd = self.gateway.command(args, self._new_control_token())
        self._write_connection()
        proc = self._spawn("superlink", cmd, "superlink.log")
        self._wait_healthy(proc, timeout_s)
        return proc

    def start_site(
        self, site: str, node_config: Mapping[str, ConfigValue],
        fresh_process_per_task: bool = False,
    ) -> Proc:  # fmt: skip
        """Start a SuperNode for ``site`` with ``node_config`` (site-name, data-dir, ...),
        under the site's app guard (:mod:`app_guard`: it runs only the fedseg app), which
        runs its tasks in its warm worker (or each in a fresh process)."""
        sec = self.security
        runtime_port = free_port()
        cmd = [flower_program("flower-supernode"), "--superlink", self.site_address,
               "--host", "127.0.0.1", "--port", str(runtime_port), "--isolation", "process",
               "--node-config", config_arg(node_config)]  # fmt: skip
        if sec.insecure:
            cmd.append("--insecure")
        else:
            cmd += ["--root-certificates", str(sec.ca_cert)]
        if sec.supernode_auth:
            key = sec.site_keys.get(site)
            if key is None:
                raise FedsegError(f"SuperNode authentication is on but site {site} has no key")
            cmd += ["--auth-supernode-private-key", str(key)]
        cmd = site_command(cmd, runtime_port, fresh_process_per_task)
        return self._spawn(f"site:{site}", cmd, f"site-{site}.log")

    def submit(self, app_dir: Path, run_config: Mapping[str, ConfigValue],
               timeout_s: float = 180.0) -> int:  # fmt: skip
        """``flwr run APP`` on this SuperLink; returns Flower's run id."""
        try:
            res = self.flwr("run", str(Path(app_dir).resolve()), CONNECTION,
                            "--run-config", config_arg(run_config), "--format", "json",
                            timeout_s=timeout_s)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise FedsegError(f"`flwr run` did not answer within {timeout_s:.0f} s") from None
        with (self.logs / "flwr-run.log").open("a") as fh:
            fh.write(res.stdout + res.stderr)
        data = json_output(res.stdout)
        if not data.get("success") or not data.get("run-id"):
            msg = str(data.get("error-message") or res.stderr or res.stdout).strip()
            raise FedsegError(f"Flower refused the run: {' '.join(msg.split())[:300]}")
        return int(str(data["run-id"]))

    def flwr(self, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
        """A ``flwr`` command against this SuperLink (its loopback Control API)."""
        return subprocess.run(
            [flower_program("flwr"), *args], env=self.env, capture_output=True, text=True,
            timeout=timeout_s, check=False,
        )  # fmt: skip

    def save_run_log(self, run_id: int, timeout_s: float = 30.0) -> Path | None:
        """Keep what Flower's run ``run_id`` logged (the ServerApp's output; under the
        simulation engine the simulation runtime's too, e.g. why it stopped, which no other
        log holds) in ``logs/flower-run-<id>.log`` (``flwr log --show``); None if Flower
        did not answer."""
        path = self.logs / f"flower-run-{run_id}.log"
        try:
            res = self.flwr("log", str(run_id), CONNECTION, "--show", timeout_s=timeout_s)
        except (subprocess.TimeoutExpired, OSError):
            return None
        path.write_text(res.stdout + res.stderr)
        return path

    def dead(self) -> list[Proc]:
        """Processes that have exited."""
        return [p for p in self.procs if not p.alive()]

    def stop(self, timeout_s: float = 10.0, simulation_exit_s: float = SIMULATION_EXIT_S) -> None:
        """Under the simulation engine, first wait up to ``simulation_exit_s`` for
        ``flwr-simulation`` to end by itself (the run over, it shuts Ray down); then SIGTERM
        every process group, SIGKILL what is left after ``timeout_s``, and sweep what is
        still marked (Ray's agents included); Ray's temp folder goes last."""
        if self.simulation is not None and simulation_exit_s > 0:
            wait_marked_exit(self.markers, SIMULATION_PROGRAM.encode(), simulation_exit_s)
        stop_all(self.procs, timeout_s)
        self.procs.clear()
        if self.reaper is not None:  # sweeps what Flower started and outlived its parent
            stop_reaper(self.reaper)
            self.reaper = None
        with contextlib.suppress(OSError):
            (self.home / PIDS).unlink()
        shutil.rmtree(self.env["RAY_TMPDIR"], ignore_errors=True)

    def kill_leftovers(self) -> int:
        """SIGKILL every process left over from an earlier launcher of this run folder (one
        killed with -9 whose reaper could not run): those whose environment carries one of
        this run's markers. How many."""
        n = kill_marked(self.markers)
        (self.home / PIDS).unlink(missing_ok=True)
        return n

    # -- helpers ----------------------------------------------------------------------
    def _new_control_token(self) -> Path:
        """A new Control API token: the gateway's file and Flower's CLI credential store."""
        from flwr.cli.constant import (
            ACCESS_TOKEN_STORE_KEY,
            AUTHN_TYPE_STORE_KEY,
            REFRESH_TOKEN_STORE_KEY,
        )
        from flwr.common.constant import AuthnType
        from flwr.supercore.credential_store.file_credential_store import FileCredentialStore

        token = secrets.token_urlsafe(32)
        path = self.home / CONTROL_TOKEN
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token)
        # Flower's CLI sends the stored access token as `Authorization: Bearer` (its OIDC
        # plugin); it refreshes only on a 401 that asks for Bearer, which the gateway never
        # sends, so the refresh token is a placeholder.
        store = FileCredentialStore(self.home / "credentials.yaml")  # written 0600 by Flower
        store.set(AUTHN_TYPE_STORE_KEY % self.address, AuthnType.OIDC.encode())
        store.set(ACCESS_TOKEN_STORE_KEY % self.address, token.encode())
        store.set(REFRESH_TOKEN_STORE_KEY % self.address, b"none")
        return path

    def _write_connection(self) -> None:
        lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]",
                 f'address = "{self.address}"']  # fmt: skip
        if self.security.insecure:
            lines.append("insecure = true")
        else:
            lines.append(f'root-certificates = "{Path(str(self.security.ca_cert)).resolve()}"')
        if self.simulation is not None:
            lines += self.simulation.connection_lines()
        (self.home / "config.toml").write_text("\n".join(lines) + "\n")

    def _wait_healthy(self, proc: Proc, timeout_s: float) -> None:
        scheme = "http" if self.security.insecure else "https"
        ctx = None
        if not self.security.insecure:
            ctx = ssl.create_default_context(cafile=str(self.security.ca_cert))
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if not proc.alive():
                raise FedsegError(
                    f"the SuperLink exited (code {proc.popen.returncode}): {proc.tail(3)} "
                    f"(log: {proc.log})"
                )
            try:
                with urllib.request.urlopen(
                    f"{scheme}://{self.address}/health", timeout=2, context=ctx
                ) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise FedsegError(
            f"the SuperLink did not answer on {self.address} within {timeout_s:.0f} s"
        )
