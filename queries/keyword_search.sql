-- name: keyword_search
-- description: Passages ranked by BM25 over their words (the warehouse's postings, Porter stemming); filters apply before ranking.
-- param: query text  Keywords
-- param: k integer = 10  How many results
-- param: since date = null  Only articles published on or after this date
-- param: until date = null  Only articles published on or before this date
-- param: source text = null  Glob on the article's source path (a relative glob matches anywhere)
-- param: doc text = null  Only this document id
-- param: per_doc boolean = false  Only the best passage of each article
-- param: stems text = null  The Porter stems of the query's words (a list); `newsindex search` fills it in, else the words are looked up among those seen at ingest
-- bm25_chunks (migration 004) scores only the chunks that hold a query term, and applies date
-- filters inside; narrow rows (id and score), text is fetched for the k winners only.
WITH scored AS (
    SELECT b.chunk_id, b.doc_id, b.score
    -- Without a source or document filter or per_doc it keeps the best k itself, before looking up
    -- their ids (most of the cost of a long answer).
    FROM bm25_chunks($query, since := $since, until := $until, stems := $stems,
                     top := CASE WHEN $source IS NULL AND $doc IS NULL AND NOT $per_doc THEN $k END) b
    WHERE ($source IS NULL AND $doc IS NULL) OR b.doc_id IN (
        SELECT d.doc_id FROM documents d
        WHERE passage_filter(d.published, d.source_path, d.doc_id, NULL, NULL, $source, $doc)
    )
),
best AS (
    SELECT chunk_id, score FROM scored WHERE NOT $per_doc
    UNION ALL
    SELECT arg_max(chunk_id, score), max(score) FROM scored WHERE $per_doc GROUP BY doc_id
)
-- The k winners are the build side of the joins (as in passages_by_id.sql), so DuckDB pushes a
-- join filter on chunk_id into the scan of chunks; joining the `passages` view instead joined
-- every chunk to its document first.
SELECT c.chunk_id, c.doc_id, c.ordinal, d.title, d.published, d.source_path, d.url,
       c.text, c.char_start, c.char_end, b.score
FROM (SELECT * FROM best ORDER BY score DESC, chunk_id LIMIT $k) b
JOIN chunks c ON c.chunk_id = b.chunk_id
JOIN documents d ON d.doc_id = c.doc_id
ORDER BY b.score DESC, c.chunk_id;
