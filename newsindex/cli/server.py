"""Commands around a Prefect server: `server start/stop/status`, and `schedule`, which serves a
deployment to it."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

import click

from newsindex import config
from newsindex.cli.app import cli
from newsindex.cli.common import db_option, domain_errors, vector_file_option


@cli.group()
def server() -> None:
    """A local Prefect server (SQLite, 127.0.0.1) for scheduled runs and the UI."""


@server.command("start")
@click.option("--port", default=4200, show_default=True, help="Port for the API and the UI.")
@domain_errors
def server_start(port: int) -> None:
    """Start the server in the background and wait until it answers."""
    from newsindex.flows import server as prefect_server

    state = prefect_server.start(port=port)
    click.echo(f"Prefect server running (pid {state.pid}); UI at {state.ui_url}")
    click.echo(f"newsindex ingest and schedule use it; for other Prefect tools: export PREFECT_API_URL={state.api_url}")


@server.command("stop")
@domain_errors
def server_stop() -> None:
    """Stop the server that `newsindex server start` started."""
    from newsindex.flows import server as prefect_server

    state = prefect_server.stop()
    click.echo(f"stopped the Prefect server (pid {state.pid})" if state else "no newsindex Prefect server is running")


@server.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def server_status(as_json: bool) -> None:
    """Whether the server runs and answers; exit 1 when it does not."""
    from newsindex.flows import server as prefect_server

    state = prefect_server.recorded()
    healthy = bool(state) and prefect_server.healthy(state.api_url)
    if as_json:
        click.echo(json.dumps({"running": bool(state), "healthy": healthy, "pid": state and state.pid,
                               "api_url": state and state.api_url, "ui_url": state and state.ui_url, "log": state and state.log}))  # fmt: skip
    elif not state:
        click.echo(f"not running (start it with `newsindex server start`; home {config.prefect_home()})")
    else:
        click.echo(f"{'running' if healthy else 'not answering'}: pid {state.pid}, UI at {state.ui_url}, log {state.log}")
    sys.exit(0 if healthy else 1)


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--cron", help="Cron expression, e.g. '*/10 * * * *'.")
@click.option("--every", help="Interval, e.g. 90s, 5m, 1h30m.")
@click.option("--prune", is_flag=True, help="Also remove documents whose file under PATHS is gone.")
@click.option("--name", help="Deployment name (default: from the folder names).")
@click.option("--allow-mass-prune", is_flag=True, help="With --prune: let a run empty a folder or remove more than half of it.")
@click.option("--workers", type=click.IntRange(0, 512), default=0, help="Encode each run on a local Dask cluster of N worker processes.")
@click.option("--dask-address", metavar="tcp://HOST:PORT", help="Encode each run on the workers of this running Dask scheduler.")
@vector_file_option
@db_option
@domain_errors
def schedule(
    paths: Sequence[str], cron: str | None, every: str | None, prune: bool, name: str | None,
    allow_mass_prune: bool, workers: int, dask_address: str | None, vector_file: bool, db: str | None,
) -> None:
    """Ingest PATHS (default: seeds/) on a schedule, served until Ctrl-C or SIGTERM (which pause it).

    One process serves a deployment: a second `schedule` of the same --name is refused.
    Needs a Prefect server: `newsindex server start`, or $PREFECT_API_URL."""
    config.offline_env()
    from newsindex.flows import schedule as scheduling

    extra = {}
    if allow_mass_prune:
        extra["allow_mass_prune"] = True
    if not vector_file:
        extra["vector_file"] = False
    if workers or dask_address:
        from newsindex.flows.ingest import Cluster

        Cluster(workers, dask_address).check()
        extra.update(workers=workers, dask_address=dask_address)
    chosen = scheduling.plan(list(paths), db, prune, cron, every, name, extra)
    when = f"cron {chosen.cron}" if chosen.cron else f"every {every}"
    ui = chosen.api_url.removesuffix("/api")
    with scheduling.serving_lock(chosen):
        click.echo(f"serving deployment ingest/{chosen.name} ({when}) into {chosen.parameters['db']}")
        click.echo(f"runs show at {ui}/runs; Ctrl-C or SIGTERM stops serving and pauses the schedule")
        # An environment variable, not a setting: Prefect's logging reads the console level from
        # the environment alone (no setting holds it), in this process and in each run's process.
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "INFO")
        scheduling.serve(chosen)
    click.echo(f"stopped; deployment ingest/{chosen.name} is paused")
