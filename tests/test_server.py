"""The local Prefect server: status, idempotent start, stopping only our own process, and ingest
runs that use it (visible through its API) or fall back to a temporary one when it is gone."""

from __future__ import annotations

import http.server
import json
import os
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from newsindex.cli import cli
from newsindex.flows import server
from conftest import SEED_FILE, free_port, write

NEWSINDEX = [str(Path(sys.executable).with_name("newsindex"))]


def test_status_reports_the_running_server(prefect_server):
    result = CliRunner().invoke(cli, ["server", "status", "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["healthy"] is True
    assert status["pid"] == prefect_server.pid
    assert status["api_url"] == prefect_server.api_url


def test_start_again_reuses_the_running_server(prefect_server):
    result = CliRunner().invoke(cli, ["server", "start", "--port", str(prefect_server.port)])
    assert result.exit_code == 0, result.output
    assert f"pid {prefect_server.pid}" in result.output
    assert prefect_server.ui_url in result.output


def test_status_without_a_server(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSINDEX_PREFECT_HOME", str(tmp_path / "empty-home"))
    result = CliRunner().invoke(cli, ["server", "status"])
    assert result.exit_code == 1
    assert "not running" in result.output and "newsindex server start" in result.output


def test_stop_leaves_a_process_it_did_not_start(tmp_path):
    # A state file whose pid now belongs to something else (pid reuse after a crash or reboot).
    stranger = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        home = tmp_path / "home"
        write(home / "server.json", json.dumps(
            {"pid": stranger.pid, "port": free_port(), "home": str(home), "log": str(home / "server.log"), "started_at": 0}
        ))  # fmt: skip
        assert server.recorded(home) is None
        assert server.stop(home) is None
        assert stranger.poll() is None, "stop must not signal a process it did not start"
        assert not (home / "server.json").exists()
    finally:
        stranger.communicate(b"")


def test_ingest_runs_on_the_server_and_leaves_its_summary_there(prefect_server, ingest, db):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    summary = ingest(SEED_FILE)
    con = duckdb.connect(str(db), read_only=True)
    try:
        (flow_run_id,) = con.execute("SELECT flow_run_id FROM ingest_runs WHERE run_id = ?", [summary["run_id"]]).fetchone()
    finally:
        con.close()
    with get_client(sync_client=True) as client:
        assert str(client.api_url).rstrip("/") == prefect_server.api_url
        run = client.read_flow_run(flow_run_id)
        assert run.state.is_completed()
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    assert [a.key for a in artifacts] == ["ingest-summary"]
    rows = {row["measure"]: row["value"] for row in _table(artifacts[0])}
    assert rows["added"] == 1 and rows["failed"] == 0


def test_a_crashed_run_is_a_failed_flow_run(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from newsindex.flows.ingest import ingest as ingest_flow
    from newsindex.warehouse.connection import WarehouseError

    not_a_database = write(tmp_path / "notes.duckdb", "this is not a DuckDB file\n")
    run_name = f"crash-{tmp_path.name}"
    with pytest.raises(WarehouseError, match="notes.duckdb"):
        ingest_flow.with_options(flow_run_name=run_name)(paths=[str(SEED_FILE)], db=str(not_a_database))
    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run_name])))
    assert run.state.is_failed()
    assert not_a_database.read_text() == "this is not a DuckDB file\n"


def test_ingest_falls_back_to_a_temporary_server(tmp_path):
    env = {**os.environ, "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"}
    db = tmp_path / "fallback.duckdb"
    done = subprocess.run(
        [*NEWSINDEX, "ingest", str(SEED_FILE), "--db", str(db), "--json"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"no Prefect server answers at {env['PREFECT_API_URL']}; using a temporary one" in done.stderr
    assert json.loads(done.stdout)["added"] == 1


def _table(artifact) -> list[dict]:
    data = artifact.data
    return json.loads(data) if isinstance(data, str) else data


def test_server_state_file_lives_in_the_prefect_home(prefect_server):
    home = Path(os.environ["NEWSINDEX_PREFECT_HOME"])
    assert json.loads((home / "server.json").read_text())["pid"] == prefect_server.pid
    assert (home / "prefect.db").exists(), "the server keeps its SQLite database in its own home"


def test_the_ui_asks_the_api_on_the_servers_own_port(prefect_server):
    # The session's server runs on a free port, never Prefect's default 4200 (issue 16).
    assert prefect_server.port != server.DEFAULT_PORT
    with urllib.request.urlopen(f"{prefect_server.ui_url}/ui-settings", timeout=30) as response:
        settings = json.load(response)
    assert settings["api_url"] == prefect_server.api_url


def test_a_stale_record_neither_blocks_start_nor_lets_stop_signal_another_server(prefect_server, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    # An already migrated database: this start then takes seconds, not the minute migrations can.
    with sqlite3.connect(Path(prefect_server.home) / "prefect.db") as source, sqlite3.connect(home / "prefect.db") as copy:
        source.backup(copy)
    # Another process whose command line reads like a Prefect server, under a reused pid.
    stranger = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()", "-m", "prefect", "server", "start"], stdin=subprocess.PIPE
    )
    stale = {"pid": stranger.pid, "port": free_port(), "home": str(home), "log": str(home / "server.log"),
             "started_at": 0, "start_ticks": 1}  # fmt: skip
    try:
        write(home / "server.json", json.dumps(stale))
        assert server.recorded(home) is None
        state = server.start(port=free_port(), home=home, timeout=240)
        try:
            assert state.pid != stranger.pid and server.recorded(home) == state
            with urllib.request.urlopen(f"{state.ui_url}/ui-settings", timeout=30) as response:
                assert json.load(response)["api_url"] == state.api_url
        finally:
            assert server.stop(home) == state
        assert not server.healthy(state.api_url)
        write(home / "server.json", json.dumps(stale))
        assert server.stop(home) is None
        assert stranger.poll() is None, "neither start nor stop may signal a process it did not start"
    finally:
        stranger.communicate(b"")


class _SlowHealth(http.server.BaseHTTPRequestHandler):
    """A real HTTP server whose health endpoint answers late, as a server busy with runs does."""

    delay = 0.0
    second_request: threading.Event | None = None

    def do_GET(self):
        if self.second_request is not None and not self.second_request.is_set():
            type(self).second_request.set()
            threading.Event().wait(5)  # the first request stalls past the client's timeout
        else:
            threading.Event().wait(self.delay)
        try:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"true")
        except OSError:
            pass  # the client gave up on the stalled request; that is the case under test

    def log_message(self, *args):
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    # A handler error must not print a traceback into a later test's captured output.
    def handle_error(self, request, client_address):
        pass


@pytest.fixture
def slow_health():
    def serve(delay: float = 0.0, stall_first: bool = False) -> str:
        handler = type("Handler", (_SlowHealth,), {"delay": delay, "second_request": threading.Event() if stall_first else None})
        httpd = _QuietServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/api"

    servers: list = []
    yield serve
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def test_a_busy_server_is_not_declared_unreachable(slow_health):
    assert server.healthy(slow_health(delay=1.5))


def test_a_health_check_that_times_out_is_tried_again(slow_health):
    assert server.healthy(slow_health(stall_first=True), timeout=0.5)
    assert not server.healthy(slow_health(stall_first=True), timeout=0.5, attempts=1)
