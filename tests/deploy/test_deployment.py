"""The security of a real deployment on loopback: SuperLink (TLS, node auth) + 3 SuperNodes.

One SuperLink and three enrolled sites serve the whole module (each start costs seconds on
this 2-core machine); the last test revokes a site, so the order of the tests matters.
Training itself is exercised by ``test_deploy_plan.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from fedseg.federation.commands import deploy
from fedseg.federation.commands.engine_run import ServerOptions, aggregator_launcher
from fedseg.federation.engine.app_bundle import write_app
from fedseg.federation.engine.app_guard import REFUSED, expected_app
from fedseg.federation.engine.launcher import (
    CONNECTION,
    CONTROL_TOKEN,
    Launcher,
    flower_env,
    json_output,
)
from fedseg.federation.engine.processes import Proc, flower_program
from fedseg.federation.security import pki
from fedseg.federation.security.enrollment import enroll_sites, start_enrolled_superlink
from fedseg.run_folder import LOGS_DIR
from tests.deploy.deploy_helpers import (
    SECRET_CASE,
    SECRET_LABEL,
    SITES,
    listening_sockets,
    make_coordinator,
    write_foreign_app,
)
from tests.helpers import free_port

pytestmark = pytest.mark.slow


@dataclass
class Deployment:
    options: ServerOptions
    launcher: Launcher
    sites: dict[str, Proc | subprocess.Popen[bytes]]
    data: dict[str, Path]
    root: Path
    node_ids: dict[str, int]

    @property
    def superlink_pid(self) -> int:
        return self.launcher.procs[0].popen.pid


def _cli(*args: str, home: Path) -> subprocess.Popen[bytes]:
    """``fedseg ARGS`` as a user runs it, in its own session."""
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "fedseg", *args],
        env=flower_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("deploy")
    creds = make_coordinator(root / "coord")
    options = ServerOptions(
        creds=creds, fleet_host="0.0.0.0", fleet_port=free_port(), control_port=free_port()
    )
    launcher = aggregator_launcher(root / "run", options)
    sites: dict[str, Proc | subprocess.Popen[bytes]] = {}
    data: dict[str, Path] = {}
    try:
        node_ids = start_enrolled_superlink(launcher, pki.enrolled_sites(creds))
        server = f"127.0.0.1:{options.fleet_port}"
        for name in SITES:
            data[name] = root / f"data-{name}"
            data[name].mkdir()
            site_creds = creds / "sites" / name  # the bundle handed to the site
            if name == "alpha":  # one site through the CLI, as a site admin starts it,
                # its tasks each in a fresh process (the others': their warm workers)
                sites[name] = _cli(
                    "site", "start", "--server", server, "--data", str(data[name]),
                    "--creds", str(site_creds), "--work-dir", str(root / f"work-{name}"),
                    "--runtime-port", str(free_port()), "--retry-wait", "2",
                    "--fresh-process-per-task", home=root / f"work-{name}",
                )  # fmt: skip
            else:
                sites[name] = deploy.start_site(
                    deploy.SiteOptions(
                        server=server,
                        data_dir=data[name],
                        creds=site_creds,
                        work_dir=root / f"work-{name}",
                        runtime_port=free_port(),
                    )
                )
        dep = Deployment(options, launcher, sites, data, root, node_ids)
        _wait_online(dep, len(SITES))
        yield dep
    finally:
        for proc in sites.values():
            if isinstance(proc, Proc):
                proc.stop()
            else:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
        launcher.stop()


def _flwr(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [flower_program("flwr"), *args],
        env=flower_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _post(address: str, path: str, ca: Path, authorization: str | None = None) -> int:
    """HTTP status of an empty POST over TLS verified against ``ca``."""
    headers = {"Authorization": authorization} if authorization else {}
    req = urllib.request.Request(
        f"https://{address}{path}", data=b"", method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(
            req, context=ssl.create_default_context(cafile=str(ca)), timeout=10
        ) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def _this_host_ip() -> str | None:
    """A non-loopback address of this machine, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.255.255.255", 1))
            ip = str(sock.getsockname()[0])
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def _wait_online(dep: Deployment, count: int, timeout: float = 90) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    nodes: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        out = dep.launcher.flwr("supernode", "ls", CONNECTION, "--format", "json")
        nodes = json.loads(out.stdout[out.stdout.find("{") :]).get("nodes", [])
        if sum(1 for n in nodes if n.get("status") == "online") >= count:
            return nodes
        time.sleep(2)
    raise AssertionError(f"not {count} sites online after {timeout} s: {nodes}")


def test_only_the_fleet_port_listens_beyond_loopback(deployment: Deployment) -> None:
    opts = deployment.options
    sockets = listening_sockets(deployment.superlink_pid)
    exposed = {(host, port) for host, port in sockets if not host.startswith("127.")}
    assert exposed == {("0.0.0.0", opts.fleet_port)}, sockets
    assert ("127.0.0.1", opts.control_port) in sockets
    # the sites' own SuperNode APIs stay on loopback too
    for proc in deployment.sites.values():
        site_sockets = listening_sockets(proc.pid)
        assert site_sockets and all(h.startswith("127.") for h, _ in site_sockets), site_sockets
    ip = _this_host_ip()
    if ip is not None:  # seen from the network, only the Fleet port answers
        with socket.create_connection((ip, opts.fleet_port), timeout=5):
            pass
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((ip, opts.control_port), timeout=5)


def test_a_site_cannot_reach_the_control_or_runtime_api(deployment: Deployment) -> None:
    opts, ca = deployment.options, deployment.options.creds / "ca.crt"
    fleet, control = f"127.0.0.1:{opts.fleet_port}", deployment.launcher.address
    for path in ("/v1/control/list-runs", "/v1/control/start-run", "/v1/runtime/get-run"):
        assert _post(fleet, path, ca) == 404, path
    assert _post(control, "/v1/control/list-runs", ca) == 401  # on loopback, with its token
    # `flwr` pointed at the site-facing address, as a site would do it
    site_home = deployment.root / "site-flwr-home"
    site_home.mkdir()
    (site_home / "config.toml").write_text(
        f'[superlink]\ndefault = "agg"\n[superlink.agg]\naddress = "{fleet}"\n'
        f'root-certificates = "{ca}"\n'
    )
    listed = _flwr(site_home, "ls", "agg")
    assert listed.returncode != 0
    assert "only the Fleet API" in listed.stdout + listed.stderr
    app = write_app(deployment.root / "site-app")
    started = _flwr(site_home, "run", str(app), "agg")
    assert started.returncode != 0
    assert "only the Fleet API" in started.stdout + started.stderr
    assert deployment.launcher.flwr("ls", CONNECTION).returncode == 0  # the coordinator can


def _fleet_client(dep: Deployment, site: str) -> Any:
    """Flower's own Fleet HTTP client, signing with ``site``'s enrolled key."""
    from flwr.supernode.fleet_http_client import FleetHttpClient
    from flwr.supernode.node_auth_http_interceptor import NodeAuthHttpInterceptor

    key = pki.load_private_key(dep.options.creds / "sites" / site / "site.key")
    return FleetHttpClient.from_server_address(
        f"127.0.0.1:{dep.options.fleet_port}",
        insecure=False,
        root_certificates=(dep.options.creds / "ca.crt").read_bytes(),
        interceptors=[NodeAuthHttpInterceptor(key, key.public_key())],
    )


def _site_log(dep: Deployment, site: str) -> Path:
    return dep.root / f"work-{site}" / LOGS_DIR / "supernode.log"


def _run_ids(launcher: Launcher) -> set[str]:
    out = launcher.flwr("ls", CONNECTION, "--format", "json")
    assert out.returncode == 0, out.stdout + out.stderr
    runs = json_output(out.stdout).get("runs", [])
    return {str(r["run-id"]) for r in runs}  # type: ignore[attr-defined,index]


def test_a_foreign_app_is_refused_at_every_site(deployment: Deployment, tmp_path: Path) -> None:
    """A malicious coordinator (it holds the Control API token) submits its own app, whose
    ClientApp reads the site's data folder: every site refuses it in one log line naming the
    app and its FAB hash, before any of its code runs; nothing of the data comes back."""
    from flwr.cli.build import build_fab_from_disk

    for name, folder in deployment.data.items():
        (folder / f"{SECRET_CASE}-{name}_seg.nii.gz").write_text(f"{SECRET_LABEL}-{name}")
    app = write_foreign_app(tmp_path / "steal")
    fab_sha = hashlib.sha256(build_fab_from_disk(app)).hexdigest()
    out = tmp_path / "stolen.txt"
    started = deployment.launcher.flwr(
        "run", str(app), CONNECTION, "--run-config", f'out="{out}"', "--format", "json"
    )
    assert json_output(started.stdout).get("success"), started.stdout + started.stderr
    deadline = time.monotonic() + 150
    while not out.exists():
        assert time.monotonic() < deadline, "the foreign ServerApp never wrote its replies"
        time.sleep(1)
    replies = out.read_text().splitlines()
    assert len(replies) == len(SITES) and all(r.startswith("ERROR ") for r in replies), replies
    assert all(REFUSED in r and fab_sha in r for r in replies), replies
    for name in SITES:
        lines = _site_log(deployment, name).read_text().splitlines()
        refused = [ln for ln in lines if REFUSED in ln]
        assert len(refused) == 1, refused
        assert f"fedseg site {name}: " in refused[0] and "evil/steal 1.0.0" in refused[0]
        assert fab_sha in refused[0] and expected_app().digest in refused[0]
    # nothing of any site's data reached the coordinator: its run folder, logs, the app's output
    coordinator_files = [p for p in (deployment.root / "run").rglob("*") if p.is_file()]
    for path in [out, *coordinator_files]:
        data = path.read_bytes()
        assert SECRET_CASE.encode() not in data and SECRET_LABEL.encode() not in data, path


def test_only_the_coordinators_fedseg_can_use_the_control_api(
    deployment: Deployment, tmp_path: Path
) -> None:
    """Another process or user on the coordinator's machine reaches the loopback port but not
    the token (0600 in a 0700 Flower home): Flower's own CLI and raw requests are refused."""
    launcher, ca = deployment.launcher, deployment.options.creds / "ca.crt"
    assert stat.S_IMODE(launcher.home.stat().st_mode) == 0o700
    for name in (CONTROL_TOKEN, "credentials.yaml"):
        assert stat.S_IMODE((launcher.home / name).stat().st_mode) == 0o600, name
    runs = _run_ids(launcher)
    other = tmp_path / "other-home"
    other.mkdir()
    (other / "config.toml").write_text(
        f'[superlink]\ndefault = "agg"\n[superlink.agg]\naddress = "{launcher.address}"\n'
        f'root-certificates = "{ca}"\n'
    )
    app = write_app(tmp_path / "app")  # even fedseg's own app
    for args in (("run", str(app), "agg"), ("ls", "agg"), ("supernode", "ls", "agg")):
        res = _flwr(other, *args)
        assert res.returncode != 0, (args, res.stdout, res.stderr)
    for header in (None, "Bearer " + "A" * 43, f"Basic {'A' * 43}"):
        assert _post(launcher.address, "/v1/control/list-runs", ca, header) == 401, header
    assert _run_ids(launcher) == runs  # no run was added
    assert launcher.flwr("supernode", "ls", CONNECTION).returncode == 0  # the coordinator can


def test_a_site_cannot_pull_another_sites_messages(deployment: Deployment) -> None:
    from flwr.proto.fleet_pb2 import PullMessagesRequest
    from flwr.proto.node_pb2 import Node

    client = _fleet_client(deployment, "alpha")
    own, other = deployment.node_ids["alpha"], deployment.node_ids["beta"]
    client.PullMessages(PullMessagesRequest(node=Node(node_id=own)))  # its own: fine
    with pytest.raises(httpx.HTTPStatusError) as refused:
        client.PullMessages(PullMessagesRequest(node=Node(node_id=other)))
    assert refused.value.response.status_code == 401


def test_an_unenrolled_key_is_refused(deployment: Deployment, tmp_path: Path) -> None:
    """Flower's own SuperNode with a key the aggregator never registered cannot join."""
    pki.make_request("intruder", tmp_path / "intruder")  # a valid EC key pair, never enrolled
    home = tmp_path / "home"
    home.mkdir()
    log = tmp_path / "intruder.log"
    with log.open("wb") as fh:
        code = subprocess.run(
            [flower_program("flower-supernode"),
             "--superlink", f"127.0.0.1:{deployment.options.fleet_port}",
             "--root-certificates", str(deployment.options.creds / "ca.crt"),
             "--auth-supernode-private-key", str(tmp_path / "intruder" / "site.key"),
             "--port", str(free_port()), "--max-retries", "0"],
            env=flower_env(home), stdout=fh, stderr=subprocess.STDOUT, timeout=90, check=False,
        ).returncode  # fmt: skip
    assert code != 0
    assert "Failed to activate SuperNode" in log.read_text()
    assert len(_wait_online(deployment, 3)) == 3  # no trace of the intruder among the nodes


def test_a_site_signed_after_the_server_started_is_told_why(
    deployment: Deployment, tmp_path: Path
) -> None:
    """`fedseg site start` with a valid certificate whose key the SuperLink never registered:
    exit 2 and one line saying so (the signing happens on a copy of the coordinator folder so
    the running deployment's enrollment stays as it is)."""
    coord = tmp_path / "coord"
    shutil.copytree(deployment.options.creds, coord)
    site = tmp_path / "late"
    bundle = pki.sign_request(coord, pki.make_request("late", site))
    for name in ("ca.crt", "site.crt"):
        shutil.copyfile(bundle / name, site / name)
    (tmp_path / "data").mkdir()
    proc = _cli(
        "site", "start", "--server", f"127.0.0.1:{deployment.options.fleet_port}",
        "--data", str(tmp_path / "data"), "--creds", str(site),
        "--work-dir", str(tmp_path / "work"), "--runtime-port", str(free_port()),
        "--max-retries", "0", home=tmp_path / "work",
    )  # fmt: skip
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 2, err
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "not know this site's key" in lines[0], lines


def test_a_revoked_site_is_refused(deployment: Deployment, tmp_path: Path) -> None:
    creds = deployment.options.creds
    (creds / "enrolled" / "beta.crt").unlink()  # the coordinator revokes beta
    node_ids = enroll_sites(deployment.launcher, pki.enrolled_sites(creds))
    assert node_ids == {k: v for k, v in deployment.node_ids.items() if k != "beta"}
    again = deploy.start_site(
        deploy.SiteOptions(
            server=f"127.0.0.1:{deployment.options.fleet_port}",
            data_dir=deployment.data["beta"],
            creds=creds / "sites" / "beta",
            work_dir=tmp_path / "beta-again",
            runtime_port=free_port(),
            max_retries=0,
        )
    )
    try:
        assert again.popen.wait(timeout=90) != 0
    finally:
        again.stop()
    assert "Failed to activate SuperNode" in again.log.read_text()


def test_a_cli_site_rejoins_when_the_aggregator_restarts(deployment: Deployment) -> None:
    """`fedseg site start` outlives the SuperLink: a new run's SuperLink (new database, new
    node ids) gets the site back without anyone touching the site."""
    deployment.launcher.stop()
    launcher = aggregator_launcher(deployment.root / "run2", deployment.options)
    deployment.launcher = launcher  # the fixture stops this one at the end
    node_ids = start_enrolled_superlink(launcher, pki.enrolled_sites(deployment.options.creds))
    assert node_ids["alpha"] != deployment.node_ids["alpha"]  # a new SuperLink, new ids
    deadline = time.monotonic() + 150
    online: set[str] = set()
    while str(node_ids["alpha"]) not in online:
        assert time.monotonic() < deadline, "alpha did not rejoin the new SuperLink"
        assert deployment.sites["alpha"].poll() is None, "the site process gave up"  # type: ignore[union-attr]
        time.sleep(3)
        out = launcher.flwr("supernode", "ls", CONNECTION, "--format", "json")
        nodes = json.loads(out.stdout[out.stdout.find("{") :]).get("nodes", [])
        online = {str(n["node-id"]) for n in nodes if n.get("status") == "online"}
