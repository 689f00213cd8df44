-- name: filtered_documents
-- description: The ids of the articles that pass the search filters, in doc_id order (warm search turns them into a mask).
-- internal: true
-- param: since date = null  Only articles published on or after this date
-- param: until date = null  Only articles published on or before this date
-- param: source text = null  Glob on the article's source path (a relative glob matches anywhere)
-- param: doc text = null  Only this document id
SELECT doc_id
FROM documents
WHERE passage_filter(published, source_path, doc_id, $since, $until, $source, $doc)
ORDER BY doc_id;
