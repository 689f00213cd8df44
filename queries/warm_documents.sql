-- name: warm_documents
-- description: Every article's id and the metadata a search result shows, in doc_id order: what a warm session keeps in memory beside the passages (queries/warm.py).
-- internal: true
SELECT doc_id, title, published, source_path, url
FROM documents
ORDER BY doc_id;
