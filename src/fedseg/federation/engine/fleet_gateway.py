"""Run Flower's SuperLink with its Fleet API alone on the site-facing address.

Flower 1.41 serves the Control, Runtime (ServerAppIo) and Fleet APIs from ONE HTTP server on
one ``--host``/``--port`` (the old ``--fleet-api-address``/``--control-api-address`` flags
are deprecated and ignored). Binding that port to a public address would let any site that
can reach the Fleet API also call the Control API (``flwr run``, ``flwr ls``, ...), which has
no account authentication in the open-source SuperLink.

This entry point builds the very same SuperLink app (Flower's ``create_app`` with Flower's
own argument parsing and lifespan) and serves it from one uvicorn server on two sockets:

* ``--host``/``--port`` (loopback): every API, for the coordinator's ``flwr`` CLI and the
  ServerApp process that Flower's SuperExec starts;
* ``--fleet-host``/``--fleet-port`` (site-facing): only ``/v1/fleet/...`` paths; anything
  else gets 404 before it reaches Flower.

Both sockets use the SuperLink's TLS certificate. The Control API (``/v1/control/...``:
``flwr run``, ``flwr ls``, node registration) has no account login in the open-source
SuperLink, and loopback is open to every process and user of the coordinator's machine:
with ``--control-token-file`` every path but Fleet, Runtime (the ServerApp's, guarded by
Flower's task tokens) and ``/health`` answers only requests that carry that file's token
as ``Authorization: Bearer TOKEN`` (401 otherwise, before Flower sees them). The launcher
writes a new token per start into the run's Flower home (mode 0600) and hands it to
Flower's own ``flwr`` CLI through Flower's credential store in that home, so the
coordinator's fedseg (and its user) can, and nobody else can. Usage (the other flags are
``flower-superlink``'s)::

    python -m fedseg.federation.engine.fleet_gateway --fleet-host 0.0.0.0 --fleet-port 9092 \
        --control-token-file RUN/flwr-home/control.token -- \
        --host 127.0.0.1 --port 9093 --ssl-certfile ... --enable-supernode-auth ...
"""

from __future__ import annotations

import argparse
import hmac
import json
import socket
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FLEET_PREFIX = "/v1/fleet/"
RUNTIME_PREFIX = "/v1/runtime/"
#: Ports of a deployment: sites reach the Fleet port; the others stay on loopback.
DEFAULT_FLEET_PORT = 9092
DEFAULT_CONTROL_PORT = 9093
DEFAULT_SITE_RUNTIME_PORT = 9094
FLOWER_VERSION = "1.41.0"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class FleetGateway:
    """The site-facing address where only the Fleet API is served."""

    host: str
    port: int

    def command(self, superlink_args: list[str], control_token_file: Path | None = None
                ) -> list[str]:  # fmt: skip
        """The command that runs ``flower-superlink SUPERLINK_ARGS`` behind this gateway."""
        token = ["--control-token-file", str(control_token_file)] if control_token_file else []
        return [
            sys.executable, "-m", "fedseg.federation.engine.fleet_gateway",
            "--fleet-host", self.host, "--fleet-port", str(self.port), *token,
            "--", *superlink_args,
        ]  # fmt: skip

    @property
    def site_address(self) -> str:
        """Where a SuperNode on this machine reaches the Fleet API."""
        return f"{'127.0.0.1' if self.host in ('0.0.0.0', '') else self.host}:{self.port}"


def _open_without_token(path: str) -> bool:
    """Fleet (sites), Runtime (the ServerApp process Flower starts, with its own task
    token) and the health check; everything else (the Control API first) needs the token."""
    return path == "/health" or path.startswith((FLEET_PREFIX, RUNTIME_PREFIX))


def _has_token(scope: Scope, token: bytes) -> bool:
    """Whether the request carries exactly one ``Authorization: Bearer TOKEN``."""
    values = [v for k, v in scope.get("headers") or [] if k.lower() == b"authorization"]
    return len(values) == 1 and hmac.compare_digest(values[0], b"Bearer " + token)


def fleet_only_on_port(app: Asgi, fleet_port: int, control_token: bytes | None = None) -> Asgi:
    """Wrap an ASGI app: requests arriving on local port ``fleet_port`` may only hit Fleet;
    with ``control_token``, every other request but Fleet, Runtime and health (the Control
    API first) must carry it.

    The local port comes from the accepted socket (``scope["server"]``), not from any header
    the client controls.
    """

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            server = scope.get("server") or (None, None)
            on_fleet_socket = server[1] == fleet_port
            path = str(scope.get("path", ""))
            if on_fleet_socket and (scope["type"] != "http" or not path.startswith(FLEET_PREFIX)):
                await _refuse(scope, send, 404, "only the Fleet API is served on this address")
                return
            if (
                control_token is not None
                and not _open_without_token(path)
                and not (scope["type"] == "http" and _has_token(scope, control_token))
            ):
                await _refuse(scope, send, 401, CONTROL_REFUSED)
                return
        await app(scope, receive, send)

    return guarded


CONTROL_REFUSED = (
    "the Control API answers only the coordinator's fedseg (token in the run's Flower home)"
)


async def _refuse(scope: Scope, send: Send, status: int, detail: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host.strip("[]"), port))
    sock.set_inheritable(True)
    return sock


def main(argv: list[str] | None = None) -> None:
    """Parse our two flags, hand the rest to Flower's SuperLink parser, serve both sockets."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="fleet_gateway", description=__doc__)
    parser.add_argument("--fleet-host", required=True)
    parser.add_argument("--fleet-port", type=int, required=True)
    parser.add_argument("--control-token-file", type=Path, default=None)
    ours, flower_args = parser.parse_known_args(argv)
    if flower_args[:1] == ["--"]:
        flower_args = flower_args[1:]

    import flwr
    import uvicorn

    # The internals used below (`_parse_superlink_lifespan_config`, `create_app`) are those of
    # the pinned release; a different one must be checked before it is trusted here.
    if flwr.__version__ != FLOWER_VERSION:
        sys.exit(f"fleet_gateway is written for flwr {FLOWER_VERSION}, found {flwr.__version__}")

    from flwr.supercore.http_logging import get_uvicorn_log_config
    from flwr.supercore.logger import console_handler
    from flwr.supercore.update_check import warn_if_flwr_update_available
    from flwr.superlink.cli.flower_superlink import (
        SuperLinkLifespan,
        _parse_superlink_lifespan_config,
    )
    from flwr.superlink.main import create_app

    warn_if_flwr_update_available(process_name="flower-superlink")
    sys.argv = ["flower-superlink", *flower_args]
    config = _parse_superlink_lifespan_config()
    if ours.fleet_port == config.port:
        sys.exit("--fleet-port must differ from --port (the loopback port of every API)")

    token = None
    if ours.control_token_file is not None:
        token = ours.control_token_file.read_bytes().strip()
        if len(token) < 32:
            sys.exit(f"{ours.control_token_file}: the Control API token is too short")
    app = fleet_only_on_port(create_app(config, SuperLinkLifespan), ours.fleet_port, token)
    sockets = [_bind(config.host, config.port), _bind(ours.fleet_host, ours.fleet_port)]
    uv_config = uvicorn.Config(
        app=app,
        host=config.host,
        port=config.port,
        access_log=False,
        log_config=get_uvicorn_log_config(console_handler.level),
        ssl_keyfile=config.ssl_keyfile,
        ssl_certfile=config.ssl_certfile,
        workers=1,
    )
    print(
        f"fleet_gateway: all APIs on {config.host}:{config.port}"
        f"{' (Control API with its token only)' if token else ''}, "
        f"Fleet API only on {ours.fleet_host}:{ours.fleet_port}",
        flush=True,
    )
    uvicorn.Server(uv_config).run(sockets=sockets)


if __name__ == "__main__":
    main()
