-- name: keyword_chunks
-- description: Every indexed chunk in chunk_no order with its length in terms, its id, its article's position in doc_id order and publication day (queries/warm_keyword.py).
-- internal: true
-- The article's position is the one search_vectors.sql gives (row_number over doc_id), so both warm
-- structures share filtered_documents' masks; the day is days since 1970-01-01, NULL when undated.
-- An indexed chunk whose article is gone keeps a NULL position (bm25_chunks still scores it, as
-- keyword_search.sql then drops it at the join with documents).
WITH docs AS (
    SELECT doc_id, (row_number() OVER (ORDER BY doc_id) - 1)::INTEGER AS doc_index,
           date_diff('day', DATE '1970-01-01', published)::INTEGER AS day
    FROM documents
)
SELECT k.chunk_no, k.chunk_id, k.len, docs.doc_index, docs.day
FROM kw_chunks k
LEFT JOIN docs ON docs.doc_id = k.doc_id
ORDER BY k.chunk_no;
