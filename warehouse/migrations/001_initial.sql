-- 001_initial: the core tables.
-- documents hold one row per article with its full text (chunk offsets point into it);
-- chunks hold the embedded passages; models identify the weights behind every vector;
-- ingest_runs and ingest_errors record what each run did and which inputs it rejected.
-- Vector columns have the width of the model that creates the warehouse: `{dim}` is filled in with
-- that model's width (a checked integer, warehouse/width.py) because a column type cannot be a bound
-- parameter. Warehouses made before this was a template have FLOAT[384] and keep it; a model of
-- another width needs a new warehouse.

CREATE TABLE models (
    fingerprint   VARCHAR PRIMARY KEY,   -- SHA-256 prefix of the weights file
    name          VARCHAR NOT NULL,
    dim           INTEGER NOT NULL,
    first_used_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE documents (
    doc_id       VARCHAR PRIMARY KEY,    -- stable: from the path, or the JSON Lines `id`
    source_path  VARCHAR NOT NULL,       -- absolute path of the file it came from
    format       VARCHAR NOT NULL,       -- txt | md | jsonl
    line         INTEGER,                -- line in a JSON Lines file
    title        VARCHAR NOT NULL,
    lead         VARCHAR NOT NULL,
    published    DATE,                   -- NULL when the article has no date
    url          VARCHAR,
    text         VARCHAR NOT NULL,
    content_hash VARCHAR NOT NULL,       -- of title, lead, date, url and text
    chunk_key    VARCHAR NOT NULL,       -- chunker settings and model that made the chunks
    doc_embedding FLOAT[{dim}] NOT NULL,   -- normalised mean of its chunk vectors (for related documents)
    ingested_at  TIMESTAMP NOT NULL,     -- first stored
    updated_at   TIMESTAMP NOT NULL      -- last replaced
);

CREATE TABLE chunks (
    chunk_id    VARCHAR PRIMARY KEY,     -- doc_id || '#' || ordinal
    doc_id      VARCHAR NOT NULL,
    ordinal     INTEGER NOT NULL,
    text        VARCHAR NOT NULL,
    char_start  INTEGER NOT NULL,        -- documents.text[char_start + 1 : char_end] in SQL
    char_end    INTEGER NOT NULL,
    token_count INTEGER NOT NULL,
    embedding   FLOAT[{dim}] NOT NULL,     -- L2-normalised
    model       VARCHAR NOT NULL         -- models.fingerprint
);

CREATE TABLE ingest_runs (
    run_id          VARCHAR PRIMARY KEY,
    flow_run_id     VARCHAR,
    status          VARCHAR NOT NULL,    -- running | completed | failed
    paths           VARCHAR[] NOT NULL,
    started_at      TIMESTAMP NOT NULL,
    finished_at     TIMESTAMP,
    seen            INTEGER NOT NULL DEFAULT 0,
    added           INTEGER NOT NULL DEFAULT 0,
    updated         INTEGER NOT NULL DEFAULT 0,
    unchanged       INTEGER NOT NULL DEFAULT 0,
    failed          INTEGER NOT NULL DEFAULT 0,
    removed         INTEGER NOT NULL DEFAULT 0,
    chunks_embedded INTEGER NOT NULL DEFAULT 0,
    tokens_embedded BIGINT NOT NULL DEFAULT 0,
    parse_seconds   DOUBLE NOT NULL DEFAULT 0,
    embed_seconds   DOUBLE NOT NULL DEFAULT 0,
    write_seconds   DOUBLE NOT NULL DEFAULT 0,
    total_seconds   DOUBLE,
    model           VARCHAR
);

CREATE TABLE ingest_errors (
    run_id      VARCHAR NOT NULL,
    source_path VARCHAR NOT NULL,
    line        INTEGER,
    message     VARCHAR NOT NULL
);
