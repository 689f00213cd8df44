-- name: keyword_search
-- description: Passages ranked by BM25 over their words (DuckDB full-text index, Porter stemming); filters apply before ranking.
-- param: query text  Keywords
-- param: k integer = 10  How many results
-- param: since date = null  Only articles published on or after this date
-- param: until date = null  Only articles published on or before this date
-- param: source text = null  Glob on the article's source path (a relative glob matches anywhere)
-- param: doc text = null  Only this document id
-- param: per_doc boolean = false  Only the best passage of each article
WITH scored AS (
    -- Narrow rows (id and score) for every match; text is fetched for the k winners only.
    SELECT chunk_id, doc_id, score
    FROM (
        -- Two branches so that an unfiltered query skips the semi-join on documents entirely.
        SELECT c.chunk_id, c.doc_id, fts_main_chunks.match_bm25(c.chunk_id, $query) AS score
        FROM chunks c
        WHERE $since IS NULL AND $until IS NULL AND $source IS NULL AND $doc IS NULL
        UNION ALL
        SELECT c.chunk_id, c.doc_id, fts_main_chunks.match_bm25(c.chunk_id, $query) AS score
        FROM chunks c
        WHERE NOT ($since IS NULL AND $until IS NULL AND $source IS NULL AND $doc IS NULL) AND c.doc_id IN (
            SELECT d.doc_id FROM documents d
            WHERE passage_filter(d.published, d.source_path, d.doc_id, $since, $until, $source, $doc)
        )
    )
    WHERE score IS NOT NULL
),
best AS (
    SELECT chunk_id, score FROM scored WHERE NOT $per_doc
    UNION ALL
    SELECT arg_max(chunk_id, score), max(score) FROM scored WHERE $per_doc GROUP BY doc_id
)
SELECT p.chunk_id, p.doc_id, p.ordinal, p.title, p.published, p.source_path, p.url,
       p.text, p.char_start, p.char_end, b.score
FROM (SELECT * FROM best ORDER BY score DESC, chunk_id LIMIT $k) b
JOIN passages p USING (chunk_id)
ORDER BY b.score DESC, p.chunk_id;
