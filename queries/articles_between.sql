-- name: articles_between
-- description: Articles published in a date range (inclusive), oldest first.
-- param: since date  First day
-- param: until date  Last day
SELECT doc_id, published, title, lead, source_path
FROM articles
WHERE published BETWEEN $since AND $until
ORDER BY published, title;
