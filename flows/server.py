"""A local Prefect server for scheduled ingestion: start it, find it, stop it.

The server is Prefect's own `prefect server start` (SQLite, 127.0.0.1), run as a child detached
into its own session, with its PREFECT_HOME, log and a small state file inside the project's data
directory. This module adds only what `prefect server start --background` and `prefect server stop`
lack in Prefect 3.8 (see README, "Prefect server"): a log, detaching from the terminal, waiting until
the server answers, and a record that names the process exactly (pid and start time), so that a
stale record neither blocks a start nor makes `stop` signal another process. Nothing here imports
Prefect: the CLI can ask for status in milliseconds.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from newsindex.errors import NewsindexError
from newsindex import config

DEFAULT_PORT = 4200
_STATE_FILE = "server.json"
# A server busy with a burst of runs can take seconds to answer; one slow answer is retried once.
HEALTH_TIMEOUT_S = 5.0


class ServerError(NewsindexError):
    """The Prefect server could not be started, found or stopped."""


@dataclass(frozen=True)
class ServerState:
    pid: int
    port: int
    home: str
    log: str
    started_at: float
    # The kernel's start time of `pid` (clock ticks since boot): a reused pid has another one.
    start_ticks: int | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def healthy(api_url: str, timeout: float = HEALTH_TIMEOUT_S, attempts: int = 2) -> bool:
    """True when a Prefect API answers its health endpoint at `api_url`. A refused connection is
    an answer (nobody there); only a timeout is tried again."""
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as response:
                return response.status == 200
        except (TimeoutError, socket.timeout):
            continue
        except urllib.error.URLError as err:
            if isinstance(err.reason, (TimeoutError, socket.timeout)):
                continue
            return False
        except (OSError, ValueError):
            return False
    return False


def recorded(home: Path | None = None) -> ServerState | None:
    """The server this project started, if its state file names that very process, still alive."""
    home = home or config.prefect_home()
    try:
        state = ServerState(**json.loads((home / _STATE_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return state if _is_our_server(state) else None


def _is_our_server(state: ServerState) -> bool:
    # A recorded pid may have been reused after a reboot or a crash, even by another Prefect server.
    try:
        cmdline = Path(f"/proc/{state.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        try:
            os.kill(state.pid, 0)
        except OSError:
            return False
        return True  # no /proc (macOS): trust a live pid
    looks_like_it = b"prefect" in b" ".join(cmdline) and b"server" in cmdline and b"start" in cmdline
    if state.start_ticks is None:  # a record written before start times were kept
        return looks_like_it
    return looks_like_it and _start_ticks(state.pid) == state.start_ticks


def _start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces or parentheses.
    return int(stat.rsplit(")", 1)[1].split()[19])


def _prefect_env(home: Path, port: int) -> dict[str, str]:
    # The server is another process: the environment is how its settings reach it.
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        # The UI asks /ui-settings where the API is. Prefect derives that from PREFECT_API_URL or
        # PREFECT_SERVER_API_PORT, not from --port, so without this a UI on 4311 talks to 4200.
        PREFECT_UI_API_URL=f"http://127.0.0.1:{port}/api",
    )
    # The server must not try to talk to itself through a stale client setting.
    env.pop("PREFECT_API_URL", None)
    return env


def start(port: int = DEFAULT_PORT, home: Path | None = None, timeout: float = 120.0) -> ServerState:
    """Start the server in the background and wait until its health endpoint answers."""
    home = (home or config.prefect_home()).resolve()
    running = recorded(home)
    if running:
        if healthy(running.api_url):
            return running
        raise ServerError(f"server pid {running.pid} is starting or stuck; see {running.log}")
    state_url = f"http://127.0.0.1:{port}/api"
    if healthy(state_url):
        raise ServerError(f"port {port} already has a Prefect server that newsindex did not start; use --port")
    home.mkdir(parents=True, exist_ok=True)
    log = home / "server.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=_prefect_env(home, port),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives this command and the terminal; stopped as a group
        )
    state = ServerState(
        pid=process.pid, port=port, home=str(home), log=str(log), started_at=time.time(),
        start_ticks=_start_ticks(process.pid),
    )  # fmt: skip
    (home / _STATE_FILE).write_text(json.dumps(asdict(state)))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            (home / _STATE_FILE).unlink(missing_ok=True)
            raise ServerError(f"server exited with status {process.returncode} while starting: {_last_line(log)}")
        if healthy(state.api_url, timeout=0.5, attempts=1):
            return state
        time.sleep(0.2)
    stop(home)
    raise ServerError(f"server did not answer within {timeout:.0f}s; see {log}")


def stop(home: Path | None = None, timeout: float = 20.0) -> ServerState | None:
    """Stop the server this project started; returns it, or None when none was running."""
    home = (home or config.prefect_home()).resolve()
    state = recorded(home)
    state_file = home / _STATE_FILE
    if state is None:
        state_file.unlink(missing_ok=True)
        return None
    _signal_group(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(state.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(state.pid):
        _signal_group(state.pid, signal.SIGKILL)
    state_file.unlink(missing_ok=True)
    return state


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # the server was started as its own session leader
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        # Reap it if it is our child (tests start and stop in one process); harmless otherwise.
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        return "\nState:\tZ" not in status.read_text()
    return True


def _last_line(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "no output"


def configured_api_url() -> str | None:
    """The Prefect API asked for: $PREFECT_API_URL, else the server `newsindex server start` recorded."""
    explicit = os.environ.get("PREFECT_API_URL")
    if explicit:
        return explicit
    state = recorded()
    return state.api_url if state else None


def api_url_for_run() -> str | None:
    """The Prefect API an ingest should use, or None for Prefect's temporary server.

    A configured but dead URL is dropped rather than failing the ingest: the run still works, it
    just pays for a temporary server.
    """
    url = configured_api_url()
    return url if url and healthy(url) else None
