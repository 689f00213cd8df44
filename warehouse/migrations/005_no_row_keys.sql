-- 005_no_row_keys: documents and chunks without their PRIMARY KEY constraints.
-- DuckDB rewrites the whole primary-key (ART) index of a table at every checkpoint after the
-- table changed, so each ingest, even of one article, paid a checkpoint that grew with the
-- warehouse, holding the file for writing all the while (bench/RESULTS.md, "incremental").
-- The keys guarded nothing the writer does not already guarantee: every write deletes an
-- article's rows and inserts them again in one transaction, under the ingest lock, and refuses a
-- batch that names one id twice (warehouse/documents.py). No query looked rows up through them.
-- DuckDB cannot drop a constraint, so each table is copied, in its row order, into one made
-- without it. The views over them (articles, passages) bind by name and need no change.

CREATE TABLE documents_005 (
    doc_id       VARCHAR NOT NULL,       -- stable: from the path, or the JSON Lines `id`; unique
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
INSERT INTO documents_005 SELECT * FROM documents;
DROP TABLE documents;
ALTER TABLE documents_005 RENAME TO documents;

CREATE TABLE chunks_005 (
    chunk_id    VARCHAR NOT NULL,        -- doc_id || '#' || ordinal; unique
    doc_id      VARCHAR NOT NULL,
    ordinal     INTEGER NOT NULL,
    text        VARCHAR NOT NULL,
    char_start  INTEGER NOT NULL,        -- documents.text[char_start + 1 : char_end] in SQL
    char_end    INTEGER NOT NULL,
    token_count INTEGER NOT NULL,
    embedding   FLOAT[{dim}] NOT NULL,     -- L2-normalised
    model       VARCHAR NOT NULL         -- models.fingerprint
);
INSERT INTO chunks_005 SELECT * FROM chunks;
DROP TABLE chunks;
ALTER TABLE chunks_005 RENAME TO chunks;
