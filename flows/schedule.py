"""Serve the ingest flow as a scheduled deployment on a running Prefect server.

`serve` registers (or updates) a deployment with the folder, warehouse and schedule as its default
parameters, then polls the server for due runs and executes each in a fresh subprocess, as
Prefect's `Flow.serve` does. Each run is an ordinary ingest: unchanged files cost a hash, new and
changed ones are embedded. Stopping the process (Ctrl-C or SIGTERM) pauses the deployment.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from newsindex.errors import NewsindexError
from newsindex import config
from newsindex.flows import server

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|m|s)", re.IGNORECASE)
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


class ScheduleError(NewsindexError):
    """The schedule cannot be served as asked."""


def parse_duration(text: str) -> dt.timedelta:
    """'90s', '5m', '1h30m', '2d' or a plain number of seconds."""
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
    return dt.timedelta(seconds=seconds)


def check_cron(expression: str) -> str:
    # Prefect's own validator, so what passes here is what the server accepts.
    from prefect._internal.schemas.validators import validate_cron_string

    try:
        return validate_cron_string(expression)
    except ValueError:
        raise ScheduleError(f"--cron {expression!r}: not a valid cron expression (e.g. '*/10 * * * *')") from None


def deployment_name(paths: list[str]) -> str:
    """A stable default name from the folders served: 'seeds', 'news+wires'."""
    names = [Path(p).resolve().name or "root" for p in paths]
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", "+".join(names))[:60] or "newsindex"


@dataclass(frozen=True)
class Plan:
    name: str
    api_url: str
    parameters: dict
    cron: str | None
    every: dt.timedelta | None


def plan(paths: list[str], db: str | None, prune: bool, cron: str | None, every: str | None, name: str | None) -> Plan:
    """Check everything that can be checked before talking to Prefect, and fix absolute paths:
    the runs execute in another process, possibly from another working directory."""
    if (cron is None) == (every is None):
        raise ScheduleError("give exactly one of --cron EXPR or --every DURATION")
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
        parameters={"paths": folders, "db": str(config.db_path(db).resolve()), "prune": prune},
        cron=check_cron(cron) if cron else None,
        every=parse_duration(every) if every else None,
    )


def serve(chosen: Plan) -> None:
    """Register the deployment and run its schedule until interrupted (blocks)."""
    os.environ["PREFECT_API_URL"] = chosen.api_url
    os.environ.setdefault(*config.PREFECT_EXTRA_LOGGERS)  # inherited by each run's process
    from prefect.deployments.runner import EntrypointType

    # Prefect 3.8's SIGTERM handler (systemd's stop) pauses the deployment correctly but warns
    # about a coroutine it never awaits; the warning would read like a failure in the journal.
    warnings.filterwarnings("ignore", message="coroutine 'Runner.astop' was never awaited")

    from newsindex.flows.ingest import ingest

    ingest.serve(
        name=chosen.name,
        cron=chosen.cron,
        interval=chosen.every,
        parameters=chosen.parameters,
        description=f"Ingest {', '.join(chosen.parameters['paths'])} into {chosen.parameters['db']}",
        tags=["newsindex"],
        pause_on_shutdown=True,
        # A slow run is not joined by the next one; the ingest lock covers manual runs too.
        limit=1,
        # Runs import the installed package rather than a file path relative to this directory.
        entrypoint_type=EntrypointType.MODULE_PATH,
        print_starting_message=False,
    )
