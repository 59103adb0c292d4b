"""A real deployment on loopback: SuperLink (TLS, node auth) + 3 SuperNodes, real processes.

One SuperLink and three sites serve the whole module (each start costs seconds on this
2-core machine); the last test kills a site, so the order of the tests matters.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from deploy_helpers import BARE_APP, SITES, free_port, listening_sockets, make_coordinator

from fedseg.federation import deploy, pki

pytestmark = pytest.mark.slow
SITE_VALUES = {"alpha": 1.0, "beta": 2.0, "gamma": 3.0}


@dataclass
class Deployment:
    options: deploy.ServerOptions
    superlink: deploy.ManagedProcess
    sites: dict[str, deploy.ManagedProcess | subprocess.Popen[bytes]]
    data: dict[str, Path]
    root: Path
    node_ids: dict[str, int]


def _cli(*args: str, **kw: object) -> subprocess.Popen[bytes]:
    env = deploy.flower_env(Path(str(kw.pop("home"))))
    return subprocess.Popen(
        [sys.executable, "-m", "fedseg", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("deploy")
    creds = make_coordinator(root / "coord")
    options = deploy.ServerOptions(
        creds=creds,
        run_dir=root / "run",
        fleet_host="0.0.0.0",
        fleet_port=free_port(),
        control_port=free_port(),
    )
    superlink = deploy.start_superlink(options)
    sites: dict[str, deploy.ManagedProcess | subprocess.Popen[bytes]] = {}
    data: dict[str, Path] = {}
    try:
        node_ids = deploy.enroll_sites(options, pki.enrolled_sites(creds))
        server = f"127.0.0.1:{options.fleet_port}"
        for name in SITES:
            data[name] = root / f"data-{name}"
            data[name].mkdir()
            (data[name] / "value.txt").write_text(str(SITE_VALUES[name]))
            site_creds = creds / "sites" / name  # the bundle handed to the site
            if name == "alpha":  # one site through the CLI, as a site admin starts it
                sites[name] = _cli(
                    "site", "start", "--server", server, "--data", str(data[name]),
                    "--creds", str(site_creds), "--work-dir", str(root / f"work-{name}"),
                    "--runtime-port", str(free_port()), home=root / f"work-{name}",
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
        dep = Deployment(options, superlink, sites, data, root, node_ids)
        _wait_online(dep, len(SITES))
        yield dep
    finally:
        for proc in sites.values():
            if isinstance(proc, deploy.ManagedProcess):
                proc.stop()
            else:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
        superlink.stop()


def _flwr(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [deploy.flower_bin("flwr"), *args],
        env=deploy.flower_env(home),
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
        out = _flwr(dep.options.home, "supernode", "ls", deploy.CONNECTION, "--format", "json")
        nodes = json.loads(out.stdout[out.stdout.find("{") :]).get("nodes", [])
        if sum(1 for n in nodes if n.get("status") == "online") >= count:
            return nodes
        time.sleep(2)
    raise AssertionError(f"not {count} sites online after {timeout} s: {nodes}")


def test_only_the_fleet_port_listens_beyond_loopback(deployment: Deployment) -> None:
    opts = deployment.options
    sockets = listening_sockets(deployment.superlink.pid)
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
    fleet, control = f"127.0.0.1:{opts.fleet_port}", opts.control_address
    for path in ("/v1/control/list-runs", "/v1/control/start-run", "/v1/runtime/get-run"):
        assert _post(fleet, path, ca) == 404, path
    assert _post(control, "/v1/control/list-runs", ca) != 404  # it exists, on loopback only
    # `flwr` pointed at the site-facing address, as a site would do it
    site_home = deployment.root / "site-flwr-home"
    deploy.write_connection(site_home, fleet, ca, name="agg")
    listed = _flwr(site_home, "ls", "agg")
    assert listed.returncode != 0
    assert "only the Fleet API" in listed.stdout + listed.stderr
    started = _flwr(site_home, "run", str(BARE_APP), "agg")
    assert started.returncode != 0
    assert "only the Fleet API" in started.stdout + started.stderr
    assert _flwr(opts.home, "ls", deploy.CONNECTION).returncode == 0  # the coordinator can


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


def test_an_unenrolled_site_is_refused(deployment: Deployment, tmp_path: Path) -> None:
    intruder = tmp_path / "intruder"
    pki.make_request("intruder", intruder)  # a valid key pair, never signed nor registered
    (intruder / "ca.crt").write_bytes((deployment.options.creds / "ca.crt").read_bytes())
    (tmp_path / "data").mkdir()
    proc = _cli(
        "site", "start", "--server", f"127.0.0.1:{deployment.options.fleet_port}",
        "--data", str(tmp_path / "data"), "--creds", str(intruder),
        "--work-dir", str(tmp_path / "work"), "--runtime-port", str(free_port()),
        "--max-retries", "0", home=tmp_path / "work",
    )  # fmt: skip
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 2, err
    assert "not enrolled" in err.decode()
    log = (tmp_path / "work" / "logs" / "supernode.log").read_text()
    assert "Failed to activate SuperNode" in log
    nodes = _wait_online(deployment, 3)
    assert len(nodes) == 3  # the intruder left no trace among the nodes


def test_three_sites_train_two_rounds_over_tls(deployment: Deployment) -> None:
    _wait_online(deployment, 3)
    result = deployment.root / "result-2rounds.json"
    start = time.monotonic()
    code = deploy.submit_run(
        deployment.options,
        BARE_APP,
        {"num-server-rounds": 2, "min-nodes": 3, "result-file": str(result)},
        timeout=240,
    )
    took = time.monotonic() - start
    assert code == 0, (deployment.options.run_dir / "logs" / "run.log").read_text()[-2000:]
    out = json.loads(result.read_text())
    # each round adds the mean of the three sites' values (1, 2, 3) from their data folders
    assert out["final"] == pytest.approx([4.0, 4.0, 4.0])
    assert out["train_metrics"]["2"]["site-value"] == pytest.approx(2.0)
    print(f"2 rounds, 3 sites, TLS + node auth: {took:.1f} s")


def test_a_site_killed_mid_round_does_not_stop_the_run(deployment: Deployment) -> None:
    _wait_online(deployment, 3)
    gamma = deployment.sites["gamma"]
    assert isinstance(gamma, deploy.ManagedProcess)
    (deployment.data["gamma"] / "delay.txt").write_text("600")
    result = deployment.root / "result-killed.json"
    log = deployment.options.run_dir / "logs" / "run.log"
    codes: list[int] = []
    config = {"num-server-rounds": 2, "min-nodes": 2, "result-file": str(result)}
    runner = threading.Thread(
        target=lambda: codes.append(deploy.submit_run(deployment.options, BARE_APP, config))
    )
    runner.start()
    started = deployment.data["gamma"] / "training.started"
    deadline = time.monotonic() + 90
    while not started.exists():
        assert time.monotonic() < deadline, "gamma never started training"
        assert runner.is_alive(), "the run ended before gamma trained"
        time.sleep(0.5)
    killed_at = time.monotonic()
    os.killpg(gamma.pid, signal.SIGKILL)  # the site's machine dies mid-round
    runner.join(timeout=200)
    assert codes == [0], log.read_text()[-2000:]
    print(f"run finished {time.monotonic() - killed_at:.1f} s after the site was killed")
    out = json.loads(result.read_text())
    # round 1: alpha + beta answer (mean 1.5), gamma fails; round 2: only they are sampled
    assert out["final"] == pytest.approx([3.0, 3.0, 3.0])
    assert "Received 2 results and 1 failures" in log.read_text()


def test_a_revoked_site_is_refused(deployment: Deployment, tmp_path: Path) -> None:
    creds = deployment.options.creds
    (creds / "enrolled" / "beta.crt").unlink()  # the coordinator revokes beta
    node_ids = deploy.enroll_sites(deployment.options, pki.enrolled_sites(creds))
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
