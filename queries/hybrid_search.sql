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
WITH q AS MATERIALIZED (SELECT embed($query) AS v),
filtered AS MATERIALIZED (
    -- The unit that is ranked: a passage, or with per_doc a whole article, so an article that is
    -- first on one side and close on the other is not beaten by one that is middling on both.
    SELECT p.chunk_id, p.embedding, CASE WHEN $per_doc THEN p.doc_id ELSE p.chunk_id END AS unit
    FROM passages p
    WHERE passage_filter(p.published, p.source_path, p.doc_id, $since, $until, $source, $doc)
),
semantic AS (
    SELECT unit, best_chunk AS semantic_chunk, score AS semantic_score,
           row_number() OVER (ORDER BY score DESC, unit) AS semantic_rank
    FROM (
        SELECT unit, arg_max(chunk_id, s) AS best_chunk, max(s) AS score
        FROM (SELECT unit, chunk_id, array_inner_product(embedding, (SELECT v FROM q)) AS s FROM filtered)
        GROUP BY unit
        ORDER BY score DESC, unit
        LIMIT $depth
    )
),
keyword AS (
    SELECT unit, best_chunk AS keyword_chunk, score AS keyword_score,
           row_number() OVER (ORDER BY score DESC, unit) AS keyword_rank
    FROM (
        SELECT unit, arg_max(chunk_id, s) AS best_chunk, max(s) AS score
        FROM (SELECT unit, chunk_id, fts_main_chunks.match_bm25(chunk_id, $query) AS s FROM filtered)
        WHERE s IS NOT NULL
        GROUP BY unit
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
FROM fused f
JOIN passages p USING (chunk_id)
ORDER BY f.score DESC, f.semantic_score DESC NULLS LAST, p.chunk_id
LIMIT $k;
