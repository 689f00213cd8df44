-- name: semantic_search
-- description: Passages ranked by cosine similarity to the query (exact scan); filters apply before ranking.
-- param: query text  The question, in plain words
-- param: k integer = 10  How many results
-- param: since date = null  Only articles published on or after this date
-- param: until date = null  Only articles published on or before this date
-- param: source text = null  Glob on the article's source path (a relative glob matches anywhere)
-- param: doc text = null  Only this document id
-- param: per_doc boolean = false  Only the best passage of each article
-- param: vector text = null  The query's embedding as a list literal; `newsindex query` fills it in from query
-- The query vector arrives as a bound text parameter cast to FLOAT[{dim}]: DuckDB folds the cast to
-- a constant, while embed() in a CTE or subquery is joined onto every row (3-5x slower scan) and a
-- bound FLOAT[n] list costs ~25 ms to bind. `{dim}` is the warehouse's vector width, filled in
-- before the query runs (a type cannot be a bound parameter; warehouse/width.py checks it is an
-- integer and fills in nothing else).
WITH scored AS (
    -- Narrow rows (id and score) for every candidate; text is fetched for the k winners only.
    -- Vectors are L2-normalised, so the inner product is the cosine similarity.
    -- Two branches so that an unfiltered query skips the semi-join on documents entirely.
    SELECT c.chunk_id, c.doc_id, array_inner_product(c.embedding, CAST($vector AS FLOAT[{dim}])) AS score
    FROM chunks c
    WHERE $since IS NULL AND $until IS NULL AND $source IS NULL AND $doc IS NULL
    UNION ALL
    SELECT c.chunk_id, c.doc_id, array_inner_product(c.embedding, CAST($vector AS FLOAT[{dim}])) AS score
    FROM chunks c
    WHERE NOT ($since IS NULL AND $until IS NULL AND $source IS NULL AND $doc IS NULL) AND c.doc_id IN (
        SELECT d.doc_id FROM documents d
        WHERE passage_filter(d.published, d.source_path, d.doc_id, $since, $until, $source, $doc)
    )
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
-- A clear error, not NULL scores, when run without the vector (a CASE in the scan would copy it per row).
WHERE $vector IS NOT NULL OR error('no vector given for the query ' || $query || '; newsindex fills it in')
ORDER BY b.score DESC, p.chunk_id;
