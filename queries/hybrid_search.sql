-- name: hybrid_search
-- description: Reciprocal-rank fusion of semantic and BM25 ranks, each side filtered before ranking; shows both ranks.
-- param: query text  The question or keywords
-- param: k integer = 10  How many results
-- param: since date = null  Only articles published on or after this date
-- param: until date = null  Only articles published on or before this date
-- param: source text = null  Glob on the article's source path (a relative glob matches anywhere)
-- param: doc text = null  Only this document id
-- param: per_doc boolean = false  Rank articles (each by its best passage on each side) instead of passages
-- param: depth integer = 100  Candidates taken from each side before fusing
-- param: rrf_k integer = 60  Fusion constant: score = sum over both sides of weight / (rrf_k + rank)
-- param: keyword_weight float = 0.5  Weight of the keyword side (the semantic side has weight 1)
-- param: vector text = null  The query's embedding as a list literal; `newsindex query` fills it in from query
-- param: stems text = null  The Porter stems of the query's words (a list); `newsindex search` fills it in, else the words are looked up among those seen at ingest
-- The vector is a bound text parameter cast to a constant FLOAT[384] (see semantic_search.sql).
WITH filtered AS (
    -- Two branches so that an unfiltered query skips the semi-join on documents entirely.
    SELECT c.chunk_id, c.doc_id, c.embedding
    FROM chunks c
    WHERE $since IS NULL AND $until IS NULL AND $source IS NULL AND $doc IS NULL
    UNION ALL
    SELECT c.chunk_id, c.doc_id, c.embedding
    FROM chunks c
    WHERE NOT ($since IS NULL AND $until IS NULL AND $source IS NULL AND $doc IS NULL) AND c.doc_id IN (
        SELECT d.doc_id FROM documents d
        WHERE passage_filter(d.published, d.source_path, d.doc_id, $since, $until, $source, $doc)
    )
),
semantic_scores AS (
    SELECT chunk_id, doc_id, array_inner_product(embedding, CAST($vector AS FLOAT[384])) AS score FROM filtered
),
keyword_scores AS (
    -- BM25 from the postings (bm25_chunks, migration 004) under the same filters as `filtered`:
    -- dates inside the macro, which then keeps the best $depth itself where nothing else filters.
    SELECT chunk_id, doc_id, score
    FROM bm25_chunks($query, since := $since, until := $until, stems := $stems,
                     top := CASE WHEN $source IS NULL AND $doc IS NULL AND NOT $per_doc THEN $depth END)
    WHERE ($source IS NULL AND $doc IS NULL) OR doc_id IN (
        SELECT d.doc_id FROM documents d
        WHERE passage_filter(d.published, d.source_path, d.doc_id, NULL, NULL, $source, $doc)
    )
),
-- The unit that is ranked: a passage, or with per_doc a whole article (by its best passage), so an
-- article that is first on one side and close on the other is not beaten by one middling on both.
semantic AS (
    SELECT unit, best_chunk AS semantic_chunk, score AS semantic_score,
           row_number() OVER (ORDER BY score DESC, unit) AS semantic_rank
    FROM (
        SELECT unit, best_chunk, score FROM (
            SELECT chunk_id AS unit, chunk_id AS best_chunk, score FROM semantic_scores WHERE NOT $per_doc
            UNION ALL
            SELECT doc_id, arg_max(chunk_id, score), max(score) FROM semantic_scores WHERE $per_doc GROUP BY doc_id
        )
        ORDER BY score DESC, unit
        LIMIT $depth
    )
),
keyword AS (
    SELECT unit, best_chunk AS keyword_chunk, score AS keyword_score,
           row_number() OVER (ORDER BY score DESC, unit) AS keyword_rank
    FROM (
        SELECT unit, best_chunk, score FROM (
            SELECT chunk_id AS unit, chunk_id AS best_chunk, score FROM keyword_scores WHERE NOT $per_doc
            UNION ALL
            SELECT doc_id, arg_max(chunk_id, score), max(score) FROM keyword_scores WHERE $per_doc GROUP BY doc_id
        )
        ORDER BY score DESC, unit
        LIMIT $depth
    )
),
fused AS (
    SELECT
        coalesce(semantic_chunk, keyword_chunk) AS chunk_id,
        semantic_rank, semantic_score, keyword_rank, keyword_score,
        coalesce(1.0 / ($rrf_k + semantic_rank), 0) + coalesce($keyword_weight / ($rrf_k + keyword_rank), 0) AS score
    FROM semantic FULL OUTER JOIN keyword USING (unit)
)
SELECT
    p.chunk_id, p.doc_id, p.ordinal, p.title, p.published, p.source_path, p.url,
    p.text, p.char_start, p.char_end,
    f.score, f.semantic_rank, f.semantic_score, f.keyword_rank, f.keyword_score
FROM (SELECT * FROM fused ORDER BY score DESC, semantic_score DESC NULLS LAST, chunk_id LIMIT $k) f
JOIN passages p USING (chunk_id)
-- A clear error, not NULL scores, when run without the vector (a CASE in the scan would copy it per row).
WHERE $vector IS NOT NULL OR error('no vector given for the query ' || $query || '; newsindex fills it in')
ORDER BY f.score DESC, f.semantic_score DESC NULLS LAST, p.chunk_id;
