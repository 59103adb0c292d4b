"""The security of a real deployment on loopback: SuperLink (TLS, node auth) + 3 SuperNodes.

One SuperLink and three enrolled sites serve the whole module (each start costs seconds on
this 2-core machine); the last test revokes a site, so the order of the tests matters.
Training itself is exercised by ``test_deploy_plan.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
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
from fedseg.federation.engine.launcher import CONNECTION, Launcher, flower_env
from fedseg.federation.engine.processes import Proc, flower_program
from fedseg.federation.security import pki
from fedseg.federation.security.enrollment import enroll_sites, start_enrolled_superlink
from tests.deploy.deploy_helpers import SITES, listening_sockets, make_coordinator
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
            if name == "alpha":  # one site through the CLI, as a site admin starts it
                sites[name] = _cli(
                    "site", "start", "--server", server, "--data", str(data[name]),
                    "--creds", str(site_creds), "--work-dir", str(root / f"work-{name}"),
                    "--runtime-port", str(free_port()), "--retry-wait", "2",
                    home=root / f"work-{name}",
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


def _post(address: str, path: str, ca: Path) -> int:
    """HTTP status of an empty POST over TLS verified against ``ca``."""
    req = urllib.request.Request(f"https://{address}{path}", data=b"", method="POST")
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
    assert _post(control, "/v1/control/list-runs", ca) != 404  # it exists, on loopback only
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
