-- name: latest_articles
-- description: The most recently published articles, newest first.
-- param: limit integer = 10  How many articles
SELECT doc_id, published, title, chunks, source_path
FROM articles
ORDER BY published DESC NULLS LAST, ingested_at DESC
LIMIT $limit;
