"""`newsindex serve`: the search page and the JSON API of newsindex/web."""

from __future__ import annotations

import click

from newsindex import config
from newsindex.cli.app import cli
from newsindex.cli.common import db_option, domain_errors


@cli.command()
@db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; anything but 127.0.0.1 exposes the warehouse to the network.")
@click.option("--port", default=8750, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--cors-origin", "cors_origins", multiple=True, help="Allow browser pages from this origin to call the API (repeat for more); off by default.")
@domain_errors
def serve(db: str | None, host: str, port: int, cors_origins: tuple[str, ...]) -> None:
    """Serve the search page at / and the JSON API at /api (docs at /docs) until Ctrl-C.

    Answers from a private snapshot of the warehouse (vectors in memory) and never keeps the
    file open, so ingests run meanwhile; their changes show within seconds."""
    from newsindex.web.app import serve as run_server

    config.offline_env()

    def ready(path, loaded) -> None:
        click.echo(f"newsindex: {path}: {loaded}", err=True)
        click.echo(f"serving http://{host}:{port}/ (API docs at /docs); Ctrl-C stops", err=True)

    try:
        run_server(db, host=host, port=port, cors_origins=list(cors_origins) or None, on_ready=ready)
    except KeyboardInterrupt:
        pass
