"""A site runs only the fedseg app its administrator installed.

Flower's SuperNode runs whatever app (FAB) the SuperLink's run names, and the open-source
SuperLink takes a run from anyone who reaches its Control API; Flower's own app signatures
(``flower-supernode --trusted-entities``) only ever carry signatures from Flower Hub, so a
self-hosted consortium cannot use them. Here the trust anchor is the site's own
installation instead:

* every fedseg SuperNode runs with ``--isolation process``, so Flower itself starts no app
  process, under this guard (``python -m fedseg.federation.engine.app_guard site --
  flower-supernode ...``: one process group, see :func:`site_command`), the only taker
  of its ClientApp tasks;
* for each task a process pulls the task's input (message, context, run, FAB) from
  the SuperNode's loopback Runtime API and compares the FAB's files with the app this
  site's own fedseg writes (:func:`~fedseg.federation.engine.app_bundle.write_app`, bundled
  with Flower's own builder): the same file names and, file by file, the same bytes
  (``pyproject.toml`` by its parsed content, the zip's compression and Flower's manifest
  aside). The *content digest* (:func:`content_digest`) names that set of files;
* a match runs ``fedseg.federation.engine.client_app:app`` from this installation (the FAB
  is neither installed nor imported); anything else is refused before any of its code
  runs or any site file is read: one ``REFUSED`` line in the site's log (app name and
  version, FAB sha256, content digest), an ``INVALID_FAB`` error reply to the aggregator.

Tasks of other kinds (Flower's AgentApp, ...) are never taken. The task process is the
site's warm worker (``task_worker``: one long-lived process that runs the tasks one after
another, its imports and the site's data loaded once) when it is free, else a fresh
process (``--fresh-process-per-task``: always). The task token reaches the worker through
its private stdin pipe, a fresh process in its environment (``FEDSEG_TASK_TOKEN``),
never a command line.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
import traceback
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fedseg.federation.engine.app_bundle import write_app
from fedseg.federation.engine.processes import die_with_parent
from fedseg.federation.engine.task_worker import TASK_T0_ENV, TaskWorker

if TYPE_CHECKING:
    from flwr.app import Context, Message
    from flwr.supercore.fab import Fab
    from flwr.supercore.run import Run
    from flwr.supercore.runtime import RuntimeHttpClient

#: Flower's manifest inside a FAB (derived from the other files: not compared).
MANIFEST = ".info/CONTENT"
PYPROJECT = "pyproject.toml"
#: No file of the fedseg app comes near this; a larger member is refused unread.
MAX_MEMBER_BYTES = 1 << 20
TOKEN_ENV = "FEDSEG_TASK_TOKEN"
REFUSED = "REFUSED"
POLL_S = float(os.environ.get("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "1.0"))


@dataclass(frozen=True)
class ExpectedApp:
    """The one app this site runs: what its own fedseg writes."""

    name: str
    version: str
    digest: str
    files: Mapping[str, bytes]


class Refused(Exception):
    """A FAB that is not this site's fedseg app (the message says why)."""


def _canonical(name: str, data: bytes) -> bytes:
    """A file's bytes as compared: ``pyproject.toml`` by its parsed content."""
    if name != PYPROJECT:
        return data
    try:
        parsed = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise Refused(f"unreadable {PYPROJECT}: {err}") from None
    return json.dumps(parsed, sort_keys=True).encode()


def content_digest(files: Mapping[str, bytes]) -> str:
    """sha256 over ``name NUL sha256(canonical bytes)`` lines, sorted by name."""
    lines = sorted(f"{n}\0{hashlib.sha256(b).hexdigest()}\n" for n, b in files.items())
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _members(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    return {i.filename: i for i in zf.infolist() if i.filename != MANIFEST}


def fab_files(fab: bytes, names: set[str] | None = None) -> dict[str, bytes]:
    """The files of a FAB (manifest left out, pyproject canonical). With ``names``, a FAB
    holding other files is refused before anything is decompressed."""
    try:
        with zipfile.ZipFile(io.BytesIO(fab)) as zf:
            members = _members(zf)
            if names is not None and set(members) != names:
                extra = sorted(set(members) - names)
                missing = sorted(names - set(members))
                raise Refused(f"other files (extra {extra[:5]}, missing {missing[:5]})")
            out = {}
            for name, info in members.items():
                if info.file_size > MAX_MEMBER_BYTES:
                    raise Refused(f"{name} is {info.file_size} bytes")
                out[name] = _canonical(name, zf.read(info))
            return out
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError) as err:
        raise Refused(f"not a readable FAB ({err})") from None


@functools.cache
def expected_app() -> ExpectedApp:
    """The FAB files this installation's ``write_app`` gives, bundled by Flower's builder."""
    from flwr.cli.build import build_fab_from_disk

    with tempfile.TemporaryDirectory(prefix="fedseg-app-") as tmp:
        app = write_app(Path(tmp))
        fab = build_fab_from_disk(app)
        project = tomllib.loads((app / PYPROJECT).read_text())["project"]
    files = fab_files(fab)
    return ExpectedApp(str(project["name"]), str(project["version"]), content_digest(files),
                       files)  # fmt: skip


def describe(fab: bytes) -> str:
    """``publisher/name version`` from a FAB's pyproject, as far as it can be read."""
    try:
        with zipfile.ZipFile(io.BytesIO(fab)) as zf:
            info = zf.getinfo(PYPROJECT)
            if info.file_size > MAX_MEMBER_BYTES:
                return "an app with an oversized pyproject.toml"
            cfg = tomllib.loads(zf.read(info).decode("utf-8"))
        project, app = cfg.get("project", {}), cfg.get("tool", {}).get("flwr", {}).get("app", {})
        name, version = project.get("name", "?"), project.get("version", "?")
        return f"{app.get('publisher', '?')}/{name} {version}"
    except Exception:  # anything unreadable is described as such
        return "an unreadable app"


def check_fab(fab: bytes) -> None:
    """Raise :class:`Refused` unless ``fab`` holds exactly this site's fedseg app."""
    expected = expected_app()
    files = fab_files(fab, set(expected.files))
    if content_digest(files) != expected.digest:
        changed = sorted(n for n, b in files.items() if expected.files.get(n) != b)
        raise Refused(f"other content in {', '.join(changed)}")


def refusal_line(site: str, run_id: int, fab: bytes, reason: str) -> str:
    """The one line a refused run leaves in the site's log."""
    exp = expected_app()
    try:
        digest = content_digest(fab_files(fab))
    except Refused:
        digest = "unreadable"
    return (
        f"fedseg site {site}: {REFUSED} run {run_id}: {describe(fab)} (FAB sha256 "
        f"{hashlib.sha256(fab).hexdigest()}, content {digest}) is not the fedseg app "
        f"installed here ({exp.name} {exp.version}, content {exp.digest}): {reason}; "
        "nothing of it was run"
    )


# --- the processes -----------------------------------------------------------------------


def site_command(
    supernode_cmd: list[str], runtime_port: int, fresh_process_per_task: bool = False
) -> list[str]:
    """A site's SuperNode (``supernode_cmd``, which must say ``--isolation process``) under
    this guard, which takes its ClientApp tasks from ``127.0.0.1:runtime_port`` and runs
    them in its warm worker (or each in a fresh process)."""
    if "--isolation" not in supernode_cmd:
        supernode_cmd = [*supernode_cmd, "--isolation", "process"]
    fresh = ["--fresh-process-per-task"] if fresh_process_per_task else []
    return [sys.executable, "-m", "fedseg.federation.engine.app_guard", "site", *fresh,
            "--runtime-api-address", f"127.0.0.1:{runtime_port}", "--", *supernode_cmd]  # fmt: skip


def _guard_command(mode: str, runtime_api_address: str, parent_pid: str) -> list[str]:
    """This module in ``mode`` (``task`` or ``worker``), a child of the site's guard: no
    task token on it (a token travels in the environment or through the worker's stdin)."""
    return [sys.executable, "-m", "fedseg.federation.engine.app_guard", mode,
            "--runtime-api-address", runtime_api_address, "--parent-pid", parent_pid]  # fmt: skip


def _runtime_client(address: str, token: str | None = None) -> RuntimeHttpClient:
    from flwr.supercore.interceptors import (
        RuntimeTokenHttpInterceptor,
        RuntimeVersionHttpInterceptor,
    )
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    # The executor retries in its own loop (it must notice its SuperNode's exit); a task
    # retries like Flower's own ClientApp process.
    interceptors: list[object] = [RuntimeVersionHttpInterceptor(component_name="SuperExec")]
    retry = None
    if token is not None:
        interceptors = [RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                        RuntimeTokenHttpInterceptor(token)]  # fmt: skip
        retry = make_simple_http_retry_invoker()
    return RuntimeHttpClient.from_server_address(
        server_address=address, insecure=True, root_certificates=None,
        interceptors=interceptors, retry_invoker=retry,
    )  # fmt: skip


def run_site(
    supernode_cmd: list[str], runtime_api_address: str, fresh_process_per_task: bool = False
) -> int:
    """Start the SuperNode, then take its ClientApp tasks one by one until it exits; its
    exit code. Each task runs :func:`run_task` in the warm worker when it is free, else
    (and always with ``fresh_process_per_task``) in a fresh process."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType

    expected_app()  # computed once, before the SuperNode takes any message
    supernode = subprocess.Popen(supernode_cmd, preexec_fn=die_with_parent)
    client = _runtime_client(runtime_api_address)
    me = str(os.getpid())
    worker: TaskWorker | None = None
    if not fresh_process_per_task:
        worker = TaskWorker(_guard_command("worker", runtime_api_address, me))
    try:
        while supernode.poll() is None:
            try:
                res = client.AcquireTask(
                    AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
                )
            except Exception:  # the SuperNode's API is not up (yet)
                time.sleep(POLL_S)
                continue
            taken = res.HasField("task") and bool(res.token)
            if taken and (worker is None or not worker.take(res.token)):
                subprocess.Popen(
                    _guard_command("task", runtime_api_address, me),
                    env={**os.environ, TOKEN_ENV: res.token},
                )
            time.sleep(POLL_S)
    finally:
        if supernode.poll() is None:
            supernode.terminate()
        if worker is not None:
            worker.close()
        client.close()
    return int(supernode.wait())


def run_worker(runtime_api_address: str, parent_pid: int | None) -> int:
    """The warm worker (``task_worker``): a task per token line on stdin, in order, each
    reported by a line with its exit code on the original stdout; everything the tasks
    print goes to stderr. Returns at the end of stdin."""
    from flwr.supercore.app_utils import start_parent_process_monitor

    if parent_pid is not None:
        start_parent_process_monitor(parent_pid)
    report = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # a task's print must not be taken for a report
    for line in sys.stdin:
        token = line.strip()
        if not token:
            continue
        os.environ[TASK_T0_ENV] = repr(time.time())
        try:
            code = run_task(runtime_api_address, token, None)
        except Exception as err:  # before its own handling began: the worker stays
            print(f"fedseg site: ClientApp task failed to start: {type(err).__name__}: {err}",
                  file=sys.stderr, flush=True)  # fmt: skip
            code = 1
        report.write(f"{code}\n".encode())
    return 0


#: First retry and cap (s) of a task's pull of a message object its SuperNode has not
#: stored yet. Flower's are 1 s and 10 s: its SuperNode makes the task before it has pulled
#: the message's objects from the SuperLink, so a warm worker that takes the task at once
#: found them missing and slept 1 s, then 2 s (measured: 1-3.6 s per task on loopback).
PULL_BACKOFF_S = (0.02, 0.25)


def pull_task_input(client: RuntimeHttpClient) -> tuple[Message, Context, Run, Fab]:
    """A task's message, context, run and FAB from the SuperNode's Runtime API: Flower's
    ``run_clientapp.pull_task_input`` with :data:`PULL_BACKOFF_S` for the message's objects."""
    from flwr.app import Message
    from flwr.common.serde import context_from_proto, fab_from_proto, run_from_proto
    from flwr.proto.node_pb2 import Node
    from flwr.proto.runtime_pb2 import PullAppMessagesRequest, PullTaskInputRequest
    from flwr.supercore.inflatable.inflatable_protobuf_utils import (
        make_confirm_message_received_fn_protobuf,
        make_pull_object_fn_protobuf,
    )
    from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree
    from flwr.supercore.task_identity import TaskIdentity

    res = client.PullTaskInput(PullTaskInputRequest())
    TaskIdentity.task_id = res.task_id
    TaskIdentity.run_id = res.run.run_id
    TaskIdentity.node_id = res.context.node_id
    context = context_from_proto(res.context)
    run = run_from_proto(res.run)
    fab = fab_from_proto(res.fab)
    msgs = client.PullMessages(PullAppMessagesRequest())
    if not msgs.messages_list:
        raise RuntimeError("no message for this task on the SuperNode's Runtime API")
    node = Node(node_id=context.node_id)
    tree = msgs.message_object_trees[0]
    first, cap = PULL_BACKOFF_S
    pull = make_pull_object_fn_protobuf(client.PullObject, node, context.run_id)
    confirm = make_confirm_message_received_fn_protobuf(
        client.ConfirmMessageReceived, node, context.run_id
    )
    message = pull_and_inflate_object_from_tree(
        tree,
        pull,
        confirm,
        return_type=Message,
        initial_backoff=first,
        backoff_cap=cap,
        max_tries_per_object=None,  # bounded by Flower's max_time, not by a count of fast tries
    )
    message.metadata.__dict__["_message_id"] = tree.object_id  # as Flower sets it
    return message, context, run, fab


def run_task(runtime_api_address: str, token: str, parent_pid: int | None) -> int:
    """One ClientApp task: check the FAB, then run fedseg's ClientApp or refuse. Exit code."""
    from flwr.app import Message
    from flwr.app.error import Error
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.app_utils import start_parent_process_monitor
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
    from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

    if parent_pid is not None:
        start_parent_process_monitor(parent_pid)
    client = _runtime_client(runtime_api_address, token)
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    heartbeat.start()
    context = None
    status, details, code = SubStatus.FAILED, "", 1
    try:
        message, context, run, fab = pull_task_input(client)
        try:
            check_fab(fab.content)
        except Refused as why:
            site = str(context.node_config.get("site-name", "?"))
            line = refusal_line(site, run.run_id, fab.content, str(why))
            print(line, file=sys.stderr, flush=True)
            details = line
            reply = Message(Error(ErrorCode.INVALID_FAB, line), reply_to=message)
        else:
            from fedseg.federation.engine.client_app import app

            try:
                reply = app(message=message, context=context)
                status, details, code = SubStatus.COMPLETED, "", 0
            except Exception as err:  # an error reply, as Flower sends it
                details = str(type(err)) + ":<'" + str(err) + "'>"
                traceback.print_exc()
                reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, details),
                                reply_to=message)  # fmt: skip
        push_message(client, reply, context)
    except Exception as err:  # reported to the SuperNode like Flower does
        print(f"fedseg site: ClientApp task failed: {type(err).__name__}: {err}",
              file=sys.stderr, flush=True)  # fmt: skip
        details = f"{type(err).__name__}: {err}"
    finally:
        push_task_output(client, context, status, details)
        heartbeat.stop()
        client.close()
    return code


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    supernode = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="app_guard", description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["site", "task", "worker", "digest"])
    parser.add_argument("--runtime-api-address", default="127.0.0.1:9094")
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--fresh-process-per-task", action="store_true")
    args = parser.parse_args(argv)
    if args.mode == "digest":
        exp = expected_app()
        print(f"{exp.name} {exp.version} content {exp.digest}")
    elif args.mode == "site":
        if not supernode:
            sys.exit("app_guard site: give the SuperNode command after --")
        sys.exit(run_site(supernode, args.runtime_api_address, args.fresh_process_per_task))
    elif args.mode == "worker":
        sys.exit(run_worker(args.runtime_api_address, args.parent_pid))
    else:
        token = os.environ.pop(TOKEN_ENV, "")
        if not token:
            sys.exit(f"no task token in ${TOKEN_ENV}")
        sys.exit(run_task(args.runtime_api_address, token, args.parent_pid))


if __name__ == "__main__":
    main()
