"""The aggregator's side of the PKI: its TLS security, its credentials check, and the
enrollment of the sites' keys with the SuperLink.

* :func:`server_security`: TLS with the coordinator's server certificate (``fedseg pki
  issue-server``), verified against the consortium's ``ca.crt``; SuperNode authentication on.
* :func:`check_server_creds`: before anything starts, the coordinator's folder holds a CA, a
  server certificate that CA issued, and at least one enrolled site.
* :func:`enroll_sites`: the SuperLink (``--enable-supernode-auth``) lets in only public keys
  registered through its Control API; this registers exactly the keys of the CA-signed
  certificates in ``CREDS/enrolled``, so only enrolled sites can join, and a revoked one is
  refused from then on, without a restart.

``RUN/enrolled-nodes.json`` (:data:`ENROLLED_NODES_FILE`) maps each enrolled site name to its
Flower node id and public key. The SuperLink identifies a node by its key, whatever name the
node's config claims, so the ServerApp names nodes from this file (:func:`enrolled_nodes`).
A simulation has no such file.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from fedseg.errors import FedsegError
from fedseg.federation.engine.launcher import CONNECTION, Launcher, Security, json_output
from fedseg.federation.security import pki
from fedseg.run_folder import ENROLLED_NODES_FILE

#: Written by ``fedseg server start`` into the run folder: site name -> node id and key.
#: Folder of the Flower home holding the public key files given to ``flwr supernode register``.
KEYS_DIR = "enrolled-keys"


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


def start_enrolled_superlink(launcher: Launcher, sites: list[pki.EnrolledSite]) -> dict[str, int]:
    """Start the launcher's SuperLink and enroll ``sites``; return name -> Flower node id.

    The SuperLink keeps its state in memory (the launcher's default: its SQLite file locked
    up under load), so a new one knows no key: the previous one's registrations are
    forgotten first.
    """
    (launcher.run_dir / ENROLLED_NODES_FILE).unlink(missing_ok=True)
    launcher.start_superlink()
    return enroll_sites(launcher, sites)


def enroll_sites(launcher: Launcher, sites: list[pki.EnrolledSite]) -> dict[str, int]:
    """Make the SuperLink's registered keys exactly ``sites``; return name -> Flower node id.

    New keys are registered (``flwr supernode register``); keys this SuperLink registered
    earlier but no longer enrolled (certificate removed or replaced) are unregistered. The
    mapping is kept in ``RUN/enrolled-nodes.json`` after every change.
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
    keys_dir = launcher.home / KEYS_DIR
    keys_dir.mkdir(parents=True, exist_ok=True)
    for name, public_key in wanted.items():
        if name in registry:
            continue
        key_file = keys_dir / f"{name}.pub"
        key_file.write_text(public_key + "\n")
        result = launcher.flwr(
            "supernode", "register", str(key_file), CONNECTION, "--name", name, "--format", "json"
        )
        data = json_output(result.stdout)
        if not (data.get("success") and "node-id" in data):
            raise FedsegError(f"could not enroll site {name!r}: {_one_line(result)}")
        registry[name] = {"node_id": int(str(data["node-id"])), "public_key": public_key}
        path.write_text(json.dumps(registry, indent=2))
    path.write_text(json.dumps(registry, indent=2))
    return {name: int(str(entry["node_id"])) for name, entry in registry.items()}


def enrolled_nodes(run_dir: Path) -> dict[int, str] | None:
    """Node id -> enrolled site name from ``RUN/enrolled-nodes.json`` (written by
    ``fedseg server start``); None in a simulation, where there is no such file."""
    path = Path(run_dir) / ENROLLED_NODES_FILE
    if not path.is_file():
        return None
    registry = json.loads(path.read_text())
    return {int(entry["node_id"]): name for name, entry in registry.items()}


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    return " ".join((result.stdout + result.stderr).split())[-300:]
