-- name: warm_passages
-- description: Every chunk's passage (text and offsets) and its article's position in doc_id order, by chunk id: what a warm session keeps in memory to show its winners (queries/warm.py).
-- internal: true
-- Without a key on chunk_id (migration 005), fetching k passages by id is a scan of chunks; in
-- chunk_id order a winner's row is found by bisection instead.
WITH docs AS (
    SELECT doc_id, (row_number() OVER (ORDER BY doc_id) - 1)::INTEGER AS doc_index
    FROM documents
)
SELECT c.chunk_id, docs.doc_index, c.ordinal, c.char_start, c.char_end, c.text
FROM chunks c
JOIN docs ON docs.doc_id = c.doc_id
ORDER BY c.chunk_id;
