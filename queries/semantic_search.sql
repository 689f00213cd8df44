-- name: semantic_search
-- description: Passages ranked by cosine similarity to the query (exact scan); filters apply before ranking.
-- param: query text  The question, in plain words
-- param: k integer = 10  How many results
-- param: since date = null  Only articles published on or after this date
-- param: until date = null  Only articles published on or before this date
-- param: source text = null  Glob on the article's source path (a relative glob matches anywhere)
-- param: doc text = null  Only this document id
-- param: per_doc boolean = false  Only the best passage of each article
WITH q AS MATERIALIZED (SELECT embed($query) AS v)
SELECT
    p.chunk_id, p.doc_id, p.ordinal, p.title, p.published, p.source_path, p.url,
    p.text, p.char_start, p.char_end,
    -- Vectors are L2-normalised, so the inner product is the cosine similarity.
    array_inner_product(p.embedding, (SELECT v FROM q)) AS score
FROM passages p
WHERE passage_filter(p.published, p.source_path, p.doc_id, $since, $until, $source, $doc)
QUALIFY NOT $per_doc OR row_number() OVER (PARTITION BY p.doc_id ORDER BY score DESC, p.chunk_id) = 1
ORDER BY score DESC, p.chunk_id
LIMIT $k;
