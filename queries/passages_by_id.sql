-- name: passages_by_id
-- description: The passages with these chunk ids, with their article's metadata (approximate search fetches its k winners with it).
-- param: chunk_ids text  A list of chunk ids, e.g. ['doc-1#0', 'doc-2#3']
SELECT p.chunk_id, p.doc_id, p.ordinal, p.title, p.published, p.source_path, p.url,
       p.text, p.char_start, p.char_end
FROM passages p
WHERE p.chunk_id IN (SELECT unnest(CAST($chunk_ids AS VARCHAR[])));
