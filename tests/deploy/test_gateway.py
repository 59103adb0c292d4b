"""The fleet-only filter in front of Flower's SuperLink app (the ASGI layer, no process)."""

from __future__ import annotations

import asyncio
from typing import Any

from fedseg.federation.engine.fleet_gateway import fleet_only_on_port

FLEET, LOOPBACK = 9092, 9093


def _call(port: int, path: str, kind: str = "http") -> tuple[int, list[str]]:
    """Send one request through the filter; return the status and the paths Flower saw."""
    seen: list[str] = []

    async def flower(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": kind, "path": path, "server": ("0.0.0.0", port), "method": "POST"}
    asyncio.run(fleet_only_on_port(flower, FLEET)(scope, receive, send))
    status = sent[0].get("status", sent[0].get("code", 0))
    return int(status), seen


def test_fleet_socket_serves_only_fleet_paths() -> None:
    assert _call(FLEET, "/v1/fleet/pull-messages") == (200, ["/v1/fleet/pull-messages"])
    for path in (
        "/v1/control/start-run",
        "/v1/control/list-runs",
        "/v1/runtime/pull-app-inputs",
        "/health",
        "/docs",
        "/openapi.json",
        "/v1/fleetx",
        "/",
    ):
        assert _call(FLEET, path) == (404, []), path
    assert _call(FLEET, "/v1/fleet/x", kind="websocket") == (1008, [])


def test_loopback_socket_serves_every_api() -> None:
    for path in ("/v1/control/start-run", "/v1/runtime/pull-app-inputs", "/v1/fleet/get-run"):
        assert _call(LOOPBACK, path) == (200, [path])


def _call_with(path: str, headers: list[tuple[bytes, bytes]], port: int = LOOPBACK) -> int:
    """Status of one request through the filter with a Control API token set."""
    sent: list[dict[str, Any]] = []

    async def flower(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "path": path, "server": ("127.0.0.1", port), "method": "POST",
             "headers": headers}  # fmt: skip
    asyncio.run(fleet_only_on_port(flower, FLEET, TOKEN)(scope, receive, send))
    return int(sent[0]["status"])


TOKEN = b"t" * 43


def test_the_control_api_needs_the_token() -> None:
    good = [(b"authorization", b"Bearer " + TOKEN)]
    for path in ("/v1/control/start-run", "/v1/control/list-runs", "/docs", "/", "/v1/x"):
        assert _call_with(path, []) == 401, path
        assert _call_with(path, [(b"authorization", b"Bearer " + b"u" * 43)]) == 401, path
        assert _call_with(path, [(b"authorization", TOKEN)]) == 401, path
        assert _call_with(path, good * 2) == 401, path  # one header, not two
        assert _call_with(path, good) == 200, path
    # Fleet (sites), Runtime (the ServerApp, with Flower's task token) and health: open
    for path in ("/v1/fleet/pull-messages", "/v1/runtime/pull-app-inputs", "/health"):
        assert _call_with(path, []) == 200, path
    # the site-facing socket still answers Fleet only, token or not
    assert _call_with("/v1/control/list-runs", good, port=FLEET) == 404
