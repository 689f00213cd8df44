-- name: search_vectors
-- description: Every chunk's id, its article's position in doc_id order, publication day and vector: what a warm session loads into memory once (queries/warm.py).
-- internal: true
-- The article is an integer position (not its id) so per-article filters and grouping are array
-- operations; the day is days since 1970-01-01, NULL when the article has no date.
WITH docs AS (
    SELECT doc_id, (row_number() OVER (ORDER BY doc_id) - 1)::INTEGER AS doc_index,
           date_diff('day', DATE '1970-01-01', published)::INTEGER AS day
    FROM documents
)
SELECT c.chunk_id, docs.doc_index, docs.day, c.embedding
FROM chunks c
JOIN docs ON docs.doc_id = c.doc_id;
