"""Scheduled ingestion: `newsindex schedule` serves a deployment on the real Prefect server, picks up
files dropped into the watched folder, reports each run through Prefect, and pauses on Ctrl-C."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import free_port, write

from newsindex.cli import cli
from newsindex.flows.schedule import ScheduleError, check_cron, deployment_name, parse_duration
from newsindex.warehouse import connection

NEWSINDEX = str(Path(sys.executable).with_name("newsindex"))


def article(day: str, text: str) -> str:
    return f"date {day}\n{text}\n"


def wait_for(condition, timeout: float, what: str):
    """Poll a real condition until it holds; fail naming it if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def stored_files(db: Path) -> set[str]:
    if not db.exists():
        return set()
    try:
        con = connection.connect(db, read_only=True, wait=5)
    except connection.WarehouseError:
        return set()  # a run holds the file or has not created the schema yet; ask again
    try:
        return {Path(p).name for (p,) in con.execute("SELECT source_path FROM documents").fetchall()}
    except Exception:
        return set()
    finally:
        con.close()


def test_a_served_schedule_ingests_dropped_files_and_pauses_on_ctrl_c(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterDeploymentId,
    )

    inbox = tmp_path / "inbox"
    write(inbox / "harbour-crane.txt", article("2024-05-02", "A harbour crane collapsed in Gdansk overnight. Nobody was hurt."))
    db = tmp_path / "scheduled.duckdb"
    name = f"inbox-{os.getpid()}"
    log = (tmp_path / "schedule.log").open("w")
    served = subprocess.Popen(
        [NEWSINDEX, "schedule", str(inbox), "--every", "2s", "--db", str(db), "--name", name],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
    )  # fmt: skip
    try:
        wait_for(lambda: "harbour-crane.txt" in stored_files(db), 300, "the first scheduled run")
        write(inbox / "glacier-lake.txt", article("2024-05-03", "A glacier lake burst its banks in Nepal. Villages were evacuated."))
        write(inbox / "empty.txt", "")
        wait_for(lambda: "glacier-lake.txt" in stored_files(db), 300, "a run that finds the dropped file")

        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(f"ingest/{name}")
            assert deployment.parameters == {"paths": [str(inbox.resolve())], "db": str(db.resolve()), "prune": False}

            def reported_failure() -> bool:
                # A run's rows commit before Prefect records its final state, so ask until it has.
                runs = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id]))
                )
                completed = [run.id for run in runs if run.state.is_completed()]
                summaries = client.read_artifacts(
                    artifact_filter=ArtifactFilter(
                        key=ArtifactFilterKey(any_=["ingest-summary"]), flow_run_id=ArtifactFilterFlowRunId(any_=completed)
                    )
                ) if completed else []
                rows = [row for artifact in summaries for row in _table(artifact)]
                # The empty file makes a run that still completes, with the failure in its summary.
                return len(completed) >= 2 and any(
                    row["measure"] == "failure" and "empty.txt" in str(row["value"]) for row in rows
                )

            wait_for(reported_failure, 120, "a completed run whose summary lists the empty file")

        served.send_signal(signal.SIGINT)
        assert served.wait(timeout=120) == 0
        with get_client(sync_client=True) as client:
            assert client.read_deployment(deployment.id).paused
    finally:
        if served.poll() is None:
            served.kill()
        log.close()
    output = (tmp_path / "schedule.log").read_text()
    assert f"serving deployment ingest/{name} (every 2s)" in output
    assert f"stopped; deployment ingest/{name} is paused" in output
    assert stored_files(db) == {"harbour-crane.txt", "glacier-lake.txt"}


def _table(artifact) -> list[dict]:
    return json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data


def test_schedule_needs_a_reachable_server(tmp_path, monkeypatch):
    dead = f"http://127.0.0.1:{free_port()}/api"
    monkeypatch.setenv("PREFECT_API_URL", dead)
    result = CliRunner().invoke(cli, ["schedule", str(tmp_path), "--every", "5m"])
    assert result.exit_code == 1
    assert f"no Prefect server is reachable at {dead}; start one with `newsindex server start`" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--every", "5m", "--cron", "* * * * *"], "give exactly one of --cron EXPR or --every DURATION"),
        ([], "give exactly one of --cron EXPR or --every DURATION"),
        (["--every", "soon"], "--every 'soon': expected a duration like 90s, 5m, 1h30m or 2d"),
        (["--cron", "every tuesday"], "--cron 'every tuesday': not a valid cron expression"),
        # croniter reads a sixth field as seconds and a seventh as years: every second.
        (["--cron", "* * * * * * *"], "--cron '* * * * * * *': not a valid cron expression: expected five fields"),
        (["--cron", "*/5 * * * * *"], "--cron '*/5 * * * * *': not a valid cron expression: expected five fields"),
        (["--cron", "61 * * * *"], "--cron '61 * * * *': not a valid cron expression"),
        (["--every", "400d"], "--every '400d': the interval may be at most 365 days"),
        (["--every", "9" * 400], "the interval may be at most 365 days"),
        (["--every", "5m", "--name", "news/wires"], "--name 'news/wires': use up to 100 letters, digits and . _ + -"),
        (["--every", "5m", "--name", ".."], "--name '..': use up to 100 letters"),
    ],
)
def test_schedule_rejects_bad_schedules(prefect_server, tmp_path, args, message):
    result = CliRunner().invoke(cli, ["schedule", str(tmp_path), *args])
    assert result.exit_code == 1
    assert message in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


@pytest.mark.parametrize("expression", ["*/10 * * * *", "0 6 * * mon-fri", "@hourly", "@daily"])
def test_check_cron_accepts_standard_cron(expression):
    assert check_cron(expression) == expression


def test_schedule_rejects_a_missing_folder(prefect_server, tmp_path):
    result = CliRunner().invoke(cli, ["schedule", str(tmp_path / "nowhere"), "--every", "1m"])
    assert result.exit_code == 1
    assert "nowhere: no such file or directory" in result.output


@pytest.mark.parametrize(
    "text, seconds",
    [("90", 90), ("90s", 90), ("5m", 300), ("1h30m", 5400), ("2d", 172800), ("1.5h", 5400), (" 10 m ", 600)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "0", "0.5s", "5 minutes", "m5", "-5m"])
def test_parse_duration_rejects(text):
    with pytest.raises(ScheduleError):
        parse_duration(text)


def test_deployment_name_comes_from_the_folders(tmp_path):
    assert deployment_name([str(tmp_path / "news"), str(tmp_path / "wires")]) == "news+wires"
    assert deployment_name([str(tmp_path / "my news")]) == "my-news"


def test_sigterm_with_a_run_in_flight_pauses_and_a_second_server_of_it_is_refused(prefect_server, subprocess_env, tmp_path):
    """What `systemctl stop` does: SIGTERM to the whole process group while a run is going. Here
    the run waits for the warehouse's ingest lock, which this test holds."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    inbox = tmp_path / "inbox"
    write(inbox / "harbour-crane.txt", article("2024-05-02", "A harbour crane collapsed in Gdansk overnight."))
    db = tmp_path / "held.duckdb"
    name = f"held-{os.getpid()}"
    command = [NEWSINDEX, "schedule", str(inbox), "--every", "2s", "--db", str(db), "--name", name]
    env = {**subprocess_env, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    log = (tmp_path / "schedule.log").open("w")
    with connection.ingest_lock(db), get_client(sync_client=True) as client:
        served = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:

            def run_in_flight():
                try:
                    deployment = client.read_deployment_by_name(f"ingest/{name}")
                except Exception:
                    return None  # not registered yet
                runs = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id]))
                )
                return next((run for run in runs if run.state.is_running()), None)

            run = wait_for(run_in_flight, 300, "a scheduled run waiting for the ingest lock")

            second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
            assert second.returncode == 1
            assert second.stderr.strip() == (
                f"Error: deployment ingest/{name} is already served by `newsindex schedule` (pid {served.pid});"
                " stop that one first, or serve this one under another --name"
            )
            assert "serving deployment" not in second.stdout
            assert served.poll() is None, "the first one serves on"

            os.killpg(served.pid, signal.SIGTERM)
            assert served.wait(timeout=60) == 0
            deployment = client.read_deployment(run.deployment_id)
            assert deployment.paused
            state = client.read_flow_run(run.id).state
            assert state.is_final() and not state.is_completed(), state
        finally:
            if served.poll() is None:
                os.killpg(served.pid, signal.SIGKILL)
            log.close()
    output = (tmp_path / "schedule.log").read_text()
    assert f"stopped; deployment ingest/{name} is paused" in output
    assert "Traceback" not in output
    assert not db.exists() or stored_files(db) == set(), "the cancelled run stored nothing"
