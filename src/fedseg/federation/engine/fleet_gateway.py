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

Both sockets use the SuperLink's TLS certificate. Usage (the other flags are
``flower-superlink``'s)::

    python -m fedseg.federation.engine.fleet_gateway --fleet-host 0.0.0.0 --fleet-port 9092 -- \
        --host 127.0.0.1 --port 9093 --ssl-certfile ... --enable-supernode-auth ...
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

FLEET_PREFIX = "/v1/fleet/"
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

    def command(self, superlink_args: list[str]) -> list[str]:
        """The command that runs ``flower-superlink SUPERLINK_ARGS`` behind this gateway."""
        return [
            sys.executable, "-m", "fedseg.federation.engine.fleet_gateway",
            "--fleet-host", self.host, "--fleet-port", str(self.port), "--", *superlink_args,
        ]  # fmt: skip


def fleet_only_on_port(app: Asgi, fleet_port: int) -> Asgi:
    """Wrap an ASGI app: requests arriving on local port ``fleet_port`` may only hit Fleet.

    The local port comes from the accepted socket (``scope["server"]``), not from any header
    the client controls.
    """

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            server = scope.get("server") or (None, None)
            on_fleet_socket = server[1] == fleet_port
            if on_fleet_socket and (
                scope["type"] != "http" or not str(scope.get("path", "")).startswith(FLEET_PREFIX)
            ):
                await _refuse(scope, send)
                return
        await app(scope, receive, send)

    return guarded


async def _refuse(scope: Scope, send: Send) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps({"detail": "only the Fleet API is served on this address"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 404,
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

    app = fleet_only_on_port(create_app(config, SuperLinkLifespan), ours.fleet_port)
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
        f"fleet_gateway: all APIs on {config.host}:{config.port}, "
        f"Fleet API only on {ours.fleet_host}:{ours.fleet_port}",
        flush=True,
    )
    uvicorn.Server(uv_config).run(sockets=sockets)


if __name__ == "__main__":
    main()
