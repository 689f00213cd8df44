-- name: document_chunks
-- description: The chunks of one document in order, with their offsets into its text and token counts.
-- param: doc text  Document id
SELECT chunk_id, ordinal, char_start, char_end, token_count, text
FROM chunks
WHERE doc_id = $doc
ORDER BY ordinal;
