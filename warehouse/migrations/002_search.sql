-- 002_search: stable views for SQL users, and the state of the full-text index.
-- `articles` and `passages` are the documented surface for any DuckDB client; the tables under
-- them may change shape in later migrations, these views keep their columns.

CREATE VIEW articles AS
SELECT
    d.doc_id, d.title, d.published, d.lead, d.url, d.source_path, d.format,
    length(d.text) AS characters,
    (SELECT count(*) FROM chunks c WHERE c.doc_id = d.doc_id) AS chunks,
    d.ingested_at, d.updated_at
FROM documents d;

CREATE VIEW passages AS
SELECT
    c.chunk_id, c.doc_id, c.ordinal, d.title, d.published, d.source_path, d.url,
    c.text, c.char_start, c.char_end, c.token_count, c.embedding
FROM chunks c
JOIN documents d USING (doc_id);

-- The search filters shared by semantic_search, keyword_search and hybrid_search (queries/).
-- A NULL argument means no filter; a source glob that is not absolute matches anywhere in the path.
CREATE MACRO passage_filter(published, source_path, doc_id, since, until, source, doc) AS
    (since IS NULL OR published >= since)
    AND (until IS NULL OR published <= until)
    AND (source IS NULL OR source_path GLOB (CASE WHEN starts_with(source, '/') THEN source ELSE '*' || source END))
    AND (doc IS NULL OR doc_id = doc);

-- Which set of chunks the BM25 index (schema fts_main_chunks) was built from: ingestion
-- rebuilds it whenever this differs from the chunks table, so it is never left stale.
CREATE TABLE search_index_state (
    name       VARCHAR PRIMARY KEY,
    chunk_set  UBIGINT NOT NULL,        -- bit_xor(hash(chunk_id || model)) over chunks
    chunks     BIGINT NOT NULL,
    built_at   TIMESTAMP NOT NULL
);
