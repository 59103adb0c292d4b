"""The simulation engine's pieces that need no running engine: the ClientApp's
``node_settings`` (a SuperNode's own name always wins over the run's node table), the
connection options Flower reads, the run config the bundle declares, the Ray markers the
reaper matches, and the one-line refusals of ``simulate``/``resume``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.cli.flower_config import parse_superlink_connection
from flwr.common.config import get_fused_config_from_dir

from fedseg.errors import FedsegError
from fedseg.federation.commands.engine_run import (
    LocalSites,
    _check_same_engine,
    default_workers,
    local_node_configs,
)
from fedseg.federation.commands.resume import resume
from fedseg.federation.engine import client_app
from fedseg.federation.engine.app_bundle import SIM_NODES_KEY, run_config, write_app
from fedseg.federation.engine.client_app import (
    NODE_DATA_DIR,
    NODE_SITE_NAME,
    NUM_PARTITIONS,
    PARTITION_ID,
    node_settings,
    site_context,
)
from fedseg.federation.engine.launcher import CONNECTION, Launcher, SimulationOptions, ray_tmpdir
from fedseg.federation.engine.messages import HELLO, decode_hello_reply
from fedseg.federation.engine.processes import kill_marked, marked_pids, wait_marked_exit
from fedseg.run_folder import FLWR_HOME, PLAN_FILE, STORE_FILE, Engine
from fedseg.tracking.store import RunStore
from tests.federation.fed_helpers import tiny_plan, write_run
from tests.helpers import SRC, run_fedseg


def _table(tmp_path: Path, names: list[str]) -> Path:
    path = tmp_path / "sim_nodes.json"
    rows = [{NODE_SITE_NAME: n, NODE_DATA_DIR: str(tmp_path / n), "threads": 1} for n in names]
    path.write_text(json.dumps(rows))
    return path


def _context(node_config: dict[str, object], run_config: dict[str, object]) -> Context:
    return Context(7, 11, node_config, RecordDict(), run_config)  # type: ignore[arg-type]


@pytest.fixture
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower stamps messages with the running task's identity (set in its app processes)."""
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_run_id", 7), ("_node_id", 11), ("_task_id", 13)):
        monkeypatch.setattr(TaskIdentity, name, value)


def _hello(context: Context) -> str:
    msg = Message(
        RecordDict({"hello": ConfigRecord({"from": "fedseg"})}), dst_node_id=11,
        message_type=HELLO,
    )  # fmt: skip
    reply = client_app.hello(msg, context)
    return decode_hello_reply(reply.content)[0]


@pytest.mark.usefixtures("task_identity")
def test_a_virtual_node_takes_its_partition_s_entry_of_the_node_table(tmp_path: Path) -> None:
    table = _table(tmp_path, ["a", "b", "c"])
    ctx = _context({PARTITION_ID: 1, NUM_PARTITIONS: 3}, {SIM_NODES_KEY: str(table)})
    settings = node_settings(ctx)
    assert settings[NODE_SITE_NAME] == "b" and settings[NODE_DATA_DIR] == str(tmp_path / "b")
    assert site_context(ctx).site == "b" and site_context(ctx).data == tmp_path / "b"
    assert _hello(ctx) == "b"  # what the aggregator learns the node's site is


@pytest.mark.usefixtures("task_identity")
def test_a_supernode_with_a_site_name_ignores_the_run_s_node_table(tmp_path: Path) -> None:
    """Security: in a deployment the aggregator chooses the run config, so a run config
    naming a node table (here one whose every entry is another site, and a partition id the
    table would map) must not change who a site is or which data it reads."""
    table = _table(tmp_path, ["victim", "victim", "victim"])
    own = {NODE_SITE_NAME: "mine", NODE_DATA_DIR: str(tmp_path / "mine"),
           PARTITION_ID: 0, NUM_PARTITIONS: 3}  # fmt: skip
    ctx = _context(own, {SIM_NODES_KEY: str(table)})
    assert node_settings(ctx) == own
    assert site_context(ctx).site == "mine" and site_context(ctx).data == tmp_path / "mine"
    assert _hello(ctx) == "mine"


def test_a_node_table_of_another_size_is_one_line(tmp_path: Path) -> None:
    table = _table(tmp_path, ["a", "b", "c"])
    ctx = _context({PARTITION_ID: 0, NUM_PARTITIONS: 4}, {SIM_NODES_KEY: str(table)})
    with pytest.raises(FedsegError) as err:
        node_settings(ctx)
    assert "4 nodes" in str(err.value) and "3 sites" in str(err.value)
    assert len(str(err.value).splitlines()) == 1
    missing = _context({PARTITION_ID: 0, NUM_PARTITIONS: 1}, {SIM_NODES_KEY: str(tmp_path / "x")})
    with pytest.raises(FedsegError, match="not readable"):
        node_settings(missing)


def test_a_node_without_a_name_or_a_table_is_told_how_to_name_itself() -> None:
    for run_cfg in ({}, {SIM_NODES_KEY: ""}):
        ctx = _context({PARTITION_ID: 0, NUM_PARTITIONS: 1}, run_cfg)
        with pytest.raises(ValueError, match="--node-config site-name=NAME"):
            site_context(ctx)


def test_the_node_table_holds_what_a_supernode_gets(tmp_path: Path) -> None:
    """Both engines take a simulated site's settings from one function, in plan order."""
    sites = {n: tmp_path / n for n in ("b", "a", "c")}
    plan = tiny_plan(sites)
    nodes = local_node_configs(plan, LocalSites(threads_per_site=2), tmp_path)
    assert list(nodes) == ["b", "a", "c"]
    assert nodes["a"] == {NODE_SITE_NAME: "a", NODE_DATA_DIR: str(tmp_path / "a"),
                          "threads": 2, "min-summary-cases": 1}  # fmt: skip


def test_the_connection_asks_flower_for_nodes_and_workers(tmp_path: Path) -> None:
    launcher = Launcher(tmp_path / "run")
    launcher.simulation = SimulationOptions(nodes=71, workers=2)
    launcher._write_connection()
    toml = tomllib.loads((launcher.home / "config.toml").read_text())
    conn = parse_superlink_connection(toml["superlink"][CONNECTION], CONNECTION)  # Flower's reader
    assert conn.options is not None and conn.options.num_supernodes == 71
    backend = conn.options.backend
    assert backend is not None and backend.client_resources is not None
    assert backend.init_args is not None
    assert backend.client_resources.num_cpus == 1 and backend.init_args.num_cpus == 2
    assert backend.init_args.logging_level == "WARNING"
    plain = Launcher(tmp_path / "run2")
    plain._write_connection()
    assert (
        "options"
        not in tomllib.loads((plain.home / "config.toml").read_text())["superlink"][CONNECTION]
    )


def test_the_bundle_declares_the_node_table_key(tmp_path: Path) -> None:
    """Flower refuses run-config keys its app does not declare; the deployment's default
    is empty (no table)."""
    app = write_app(tmp_path)
    fused = get_fused_config_from_dir(app, run_config(tmp_path, "r", tmp_path / "t.json"))
    assert fused[SIM_NODES_KEY] == str((tmp_path / "t.json").resolve())
    assert get_fused_config_from_dir(app, run_config(tmp_path, "r"))[SIM_NODES_KEY] == ""


def test_ray_s_folder_is_short_and_a_marker_the_reaper_matches(tmp_path: Path) -> None:
    """Ray's agents carry RAY_TMPDIR but not FLWR_HOME: the launcher's sweep kills them."""
    deep = tmp_path / ("x" * 60) / ("y" * 60)
    launcher = Launcher(deep)
    ray_dir = ray_tmpdir(launcher.home)
    assert launcher.env["RAY_TMPDIR"] == str(ray_dir) and len(str(ray_dir)) < 40
    assert ray_tmpdir(Launcher(tmp_path / "other").home) != ray_dir
    assert launcher.env["RAY_USAGE_STATS_ENABLED"] == "0"
    env = {k: v for k, v in launcher.env.items() if k != "FLWR_HOME"}  # as Ray's agents
    agent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    try:
        end = time.monotonic() + 10
        while agent.pid not in marked_pids(launcher.markers) and time.monotonic() < end:
            time.sleep(0.05)  # its environ is readable once it has exec'd
        assert agent.pid in marked_pids(launcher.markers, b"time.sleep")
        assert agent.pid not in marked_pids(launcher.marker)
        assert not wait_marked_exit(launcher.markers, b"time.sleep", 0.3)
        assert kill_marked(launcher.markers) >= 1
        assert agent.wait(timeout=10) != 0
        assert wait_marked_exit(launcher.markers, b"time.sleep", 5)
    finally:
        if agent.poll() is None:
            agent.kill()


def test_workers_default_to_cores_and_sites() -> None:
    cores = len(os.sched_getaffinity(0))
    assert default_workers(71) == min(cores, 71) and default_workers(1) == 1


def test_site_worker_and_engine_choices_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FedsegError, match="--engine simulation"):
        LocalSites(workers=2).check()
    with pytest.raises(FedsegError, match="at least 1"):
        LocalSites(engine=Engine.SIMULATION, workers=0).check()
    LocalSites(engine=Engine.SIMULATION, workers=2).check()  # ray is installed here
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not
    with pytest.raises(FedsegError, match=r"pip install 'fedseg\[simulation\]'"):
        LocalSites(engine=Engine.SIMULATION).check()


def _stopped_run(tmp_path: Path, engine: Engine | None) -> Path:
    run = write_run(tmp_path / "run", tiny_plan({"a": tmp_path / "a", "b": tmp_path / "b"}))
    with RunStore(run) as store:
        store.meta.set_created("r")
        if engine is not None:
            store.meta.set_engine(engine)
    return run


def test_resume_continues_on_the_engine_the_run_started_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _stopped_run(tmp_path, Engine.SIMULATION)
    assert (run / PLAN_FILE).is_file() and (run / STORE_FILE).is_file()
    with pytest.raises(FedsegError, match="started on the simulation engine"):
        _check_same_engine(run, Engine.DEPLOYMENT)
    _check_same_engine(run, Engine.SIMULATION)
    monkeypatch.setitem(sys.modules, "ray", None)
    # the recorded engine is the one asked for: without Ray it stops before anything starts
    with pytest.raises(FedsegError, match="fedseg\\[simulation\\]"):
        resume(run, live=False)
    assert not (run / FLWR_HOME).exists()
    old = _stopped_run(tmp_path / "old", None)  # recorded no engine: the deployment engine
    with pytest.raises(FedsegError, match="started on the deployment engine"):
        _check_same_engine(old, Engine.SIMULATION)
    with pytest.raises(FedsegError, match="--engine simulation"):
        resume(old, live=False, workers=2)


def test_simulate_engine_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"sites:\n  a: {{data: {tmp_path / 'a'}}}\n")
    for args, says in (
        (["--engine", "ray"], "use simulation or deployment"),
        (["--workers", "2"], "--engine simulation"),
        (["--engine", "simulation", "--workers", "0"], "at least 1"),
    ):
        r = run_fedseg("simulate", plan, "--out", tmp_path / "run", "--no-live", *args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and says in lines[0], r.stderr
        assert not (tmp_path / "run").exists()
    # without Ray: the extra to install, before the run folder is made
    script = "import sys; sys.modules['ray'] = None\nfrom fedseg.cli.main import main; main()"
    r = subprocess.run(
        [sys.executable, "-c", script, "simulate", str(plan), "--out", str(tmp_path / "run"),
         "--no-live", "--engine", "simulation"],
        capture_output=True, text=True, env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin"},
        timeout=300, check=False,
    )  # fmt: skip
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "pip install 'fedseg[simulation]'" in lines[0]
    assert not (tmp_path / "run").exists()
