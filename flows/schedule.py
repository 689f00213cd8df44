"""Serve the ingest flow as a scheduled deployment on a running Prefect server.

`serve` registers (or updates) a deployment with the folder, warehouse and schedule as its default
parameters, then polls the server for due runs and executes each in a fresh subprocess, as
Prefect's `Flow.serve` does. Each run is an ordinary ingest: unchanged files cost a hash, new and
changed ones are embedded. Stopping the process (Ctrl-C or SIGTERM) pauses the deployment.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import os
import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from newsindex.errors import NewsindexError
from newsindex import config
from newsindex.flows import server

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|m|s)", re.IGNORECASE)
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
MAX_EVERY = dt.timedelta(days=365)
# crontab(5)'s nicknames that name a time (not @reboot); croniter, behind Prefect's CronSchedule,
# reads them the same way.
_CRON_NICKNAMES = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")
# After SIGTERM or Ctrl-C, how long the runner may take to pause and wind down before the process leaves anyway.
STOP_GRACE_S = 20.0


class ScheduleError(NewsindexError):
    """The schedule cannot be served as asked."""


def parse_duration(text: str) -> dt.timedelta:
    """'90s', '5m', '1h30m', '2d' or a plain number of seconds, from one second to MAX_EVERY."""
    value = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        seconds = float(value)
    else:
        parts = _DURATION.findall(value)
        if not parts or _DURATION.sub("", value).strip():
            raise ScheduleError(f"--every {text!r}: expected a duration like 90s, 5m, 1h30m or 2d")
        seconds = sum(float(amount) * _UNITS[unit.lower()] for amount, unit in parts)
    if seconds < 1:
        raise ScheduleError(f"--every {text!r}: the interval must be at least one second")
    if seconds > MAX_EVERY.total_seconds():
        raise ScheduleError(f"--every {text!r}: the interval may be at most {MAX_EVERY.days} days")
    from prefect.client.schemas.schedules import IntervalSchedule

    return IntervalSchedule(interval=dt.timedelta(seconds=seconds)).interval


def check_cron(expression: str) -> str:
    """A standard five-field cron line (or a crontab nickname such as @hourly), checked by Prefect's
    public CronSchedule, so what passes here is what the server accepts. croniter, underneath,
    also reads a sixth field as seconds and a seventh as years; those are refused, because
    `* * * * * * *` would fire every second."""
    value = expression.strip()
    if value.lower() not in _CRON_NICKNAMES and len(value.split()) != 5:
        raise ScheduleError(
            f"--cron {expression!r}: not a valid cron expression: expected five fields"
            " (minute hour day-of-month month day-of-week), e.g. '*/10 * * * *'"
        )
    from prefect.client.schemas.schedules import CronSchedule

    try:
        return CronSchedule(cron=value).cron
    except ValueError:  # pydantic's ValidationError is one
        raise ScheduleError(f"--cron {expression!r}: not a valid cron expression (e.g. '*/10 * * * *')") from None


def check_name(name: str) -> str:
    # The name is a URL path segment (ingest/NAME) and part of the lock file's name.
    if not _NAME.fullmatch(name):
        raise ScheduleError(
            f"--name {name!r}: use up to 100 letters, digits and . _ + - (starting with a letter or digit)"
        )
    return name


def deployment_name(paths: list[str]) -> str:
    """A stable default name from the folders served: 'seeds', 'news+wires'."""
    names = [Path(p).resolve().name or "root" for p in paths]
    name = re.sub(r"[^A-Za-z0-9_.+-]+", "-", "+".join(names))[:60].lstrip("_.+-")
    return name or "newsindex"


@dataclass(frozen=True)
class Plan:
    name: str
    api_url: str
    parameters: dict
    cron: str | None
    every: dt.timedelta | None


def plan(
    paths: list[str], db: str | None, prune: bool, cron: str | None, every: str | None, name: str | None,
    extra: dict | None = None,
) -> Plan:
    """Check everything that can be checked before talking to Prefect, and fix absolute paths:
    the runs execute in another process, possibly from another working directory."""
    if (cron is None) == (every is None):
        raise ScheduleError("give exactly one of --cron EXPR or --every DURATION")
    checked_cron = check_cron(cron) if cron else None
    checked_every = parse_duration(every) if every else None
    if name is not None:
        check_name(name)
    folders = [str(Path(p).resolve()) for p in (paths or [str(config.DEFAULT_SEEDS)])]
    for folder in folders:
        if not Path(folder).exists():
            raise ScheduleError(f"{folder}: no such file or directory")
    api_url = server.configured_api_url()
    if not api_url or not server.healthy(api_url):
        where = f" at {api_url}" if api_url else ""
        raise ScheduleError(f"no Prefect server is reachable{where}; start one with `newsindex server start`")
    return Plan(
        name=name or deployment_name(folders),
        api_url=api_url,
        # `extra`: further ingest-flow parameters given on the command line (mass prune, Dask).
        parameters={"paths": folders, "db": str(config.db_path(db).resolve()), "prune": prune, **(extra or {})},
        cron=checked_cron,
        every=checked_every,
    )


@contextmanager
def serving_lock(chosen: Plan) -> Iterator[None]:
    """One `newsindex schedule` per deployment and server on this machine.

    Two processes serving one deployment share its pause flag: when one stops, it pauses the
    deployment, and the other keeps polling a schedule that no longer produces runs. So a second
    one is refused. The flock goes with the process, however it ends, so a crash leaves no stale lock.
    """
    server_key = hashlib.sha256(chosen.api_url.rstrip("/").encode()).hexdigest()[:12]
    folder = config.prefect_home() / "schedules"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{chosen.name}@{server_key}.lock"
    # No O_TRUNC and no following a planted symlink: the pid is written only once the lock is held.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise ScheduleError(
                f"deployment ingest/{chosen.name} is already served by `newsindex schedule` (pid {holder});"
                " stop that one first, or serve this one under another --name"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def serve(chosen: Plan) -> None:
    """Register the deployment and run its schedule until Ctrl-C or SIGTERM (blocks); on either, the
    deployment is paused before this returns. Call it inside `serving_lock(chosen)`."""
    import asyncio

    from prefect.deployments.runner import EntrypointType
    from prefect.settings import PREFECT_API_URL, PREFECT_LOGGING_EXTRA_LOGGERS, temporary_settings

    from newsindex.flows.ingest import ingest

    settings = {PREFECT_API_URL: chosen.api_url, PREFECT_LOGGING_EXTRA_LOGGERS: config.PREFECT_EXTRA_LOGGERS[1]}
    # The runner hands the current settings to each run's process, so these reach the runs too.
    with temporary_settings(settings):
        # limit=1: a slow run is not joined by the next; the ingest lock covers manual runs too.
        runner = _stoppable_runner()(name=chosen.name, pause_on_shutdown=True, limit=1)
        # Until the runner installs its own handler, SIGTERM leaves the way Ctrl-C does.
        previous = signal.signal(signal.SIGTERM, _interrupt)
        previous_int = signal.signal(signal.SIGINT, runner.handle_sigint)
        deployment_id = None
        try:
            deployment_id = runner.add_flow(
                ingest,
                name=chosen.name,
                cron=chosen.cron,
                interval=chosen.every,
                parameters=chosen.parameters,
                description=f"Ingest {', '.join(chosen.parameters['paths'])} into {chosen.parameters['db']}",
                tags=["newsindex"],
                # Runs import the installed package rather than a file path relative to this directory.
                entrypoint_type=EntrypointType.MODULE_PATH,
            )
            runner.deployment_id = deployment_id
            asyncio.run(runner.start())
        except KeyboardInterrupt:
            pass  # Ctrl-C, or SIGTERM turned into it: the runner has wound down
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
            try:
                if deployment_id is not None:
                    _ensure_paused(deployment_id)
            except Exception as err:  # the server went away meanwhile
                raise ScheduleError(f"could not pause deployment ingest/{chosen.name}: {_first_line(err)}") from None
            finally:
                if runner.deadline is not None:  # wound down in time (and this may be a host process)
                    runner.deadline.cancel()


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _stoppable_runner() -> type:
    # Prefect is imported only once a schedule is really served.
    import asyncio

    from prefect.runner import Runner

    class StoppableRunner(Runner):
        """Prefect's Runner, with a SIGTERM handler that does what Prefect's meant to.

        Prefect 3.8's own handler calls the async `stop` from sync code, so the coroutine is never
        awaited, and then `sys.exit` inside the event loop: the deployment stays unpaused and a
        traceback lands in the journal. Here SIGTERM schedules `astop`, which cancels the runs in
        flight (Prefect marks them Cancelled, "Runner is shutting down.") and ends the polling loop;
        the runner's exit then pauses the deployment. A timer makes sure the process leaves within
        STOP_GRACE_S even if winding down stalls, pausing the deployment itself first.
        """

        deployment_id = None
        deadline: threading.Timer | None = None

        def start_deadline(self) -> None:
            if self.deadline is None:
                self.deadline = threading.Timer(STOP_GRACE_S, _leave_now, args=(self.deployment_id, self.name))
                self.deadline.daemon = True
                self.deadline.start()

        def handle_sigint(self, signum, frame) -> None:
            # Ctrl-C winds down as Python's default does (KeyboardInterrupt), within the same
            # bound as SIGTERM: a run or an API call that stalls must not keep the process.
            self.start_deadline()
            raise KeyboardInterrupt

        def handle_sigterm(self, *args) -> None:
            self._logger.info("SIGTERM received: cancelling runs in flight, pausing the deployment")
            self.start_deadline()
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not serving yet: leave the way Ctrl-C does
                signal.raise_signal(signal.SIGINT)
                return
            # From a signal handler, only the thread-safe entry into the loop is safe.
            loop.call_soon_threadsafe(self._begin_stop)

        def _begin_stop(self) -> None:
            self._stop_task = asyncio.ensure_future(self._stop())

        async def _stop(self) -> None:
            try:
                await self.astop()
            except RuntimeError:  # "Runner has not yet started", or a second SIGTERM
                signal.raise_signal(signal.SIGINT)

    return StoppableRunner


def _ensure_paused(deployment_id) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        if not client.read_deployment(deployment_id).paused:
            client.pause_deployment(deployment_id)


def _leave_now(deployment_id, name: str) -> None:
    code = 0
    try:
        if deployment_id is not None:
            _ensure_paused(deployment_id)
    except Exception as err:  # the server may be gone; say so, and leave all the same
        os.write(2, f"Error: could not pause the deployment: {_first_line(err)}\n".encode())
        code = 1
    else:
        os.write(1, f"stopped; deployment ingest/{name} is paused (winding down took over {STOP_GRACE_S:g}s)\n".encode())
    os._exit(code)
