-- name: related_documents
-- description: Documents most similar to a given one, comparing document vectors (the normalised mean of each document's chunk vectors).
-- param: doc text  Document id to start from
-- param: k integer = 10  How many documents
SELECT d.doc_id, d.title, d.published, d.source_path,
       array_inner_product(d.doc_embedding, (SELECT doc_embedding FROM documents WHERE doc_id = $doc)) AS score
FROM documents d
WHERE d.doc_id <> $doc
ORDER BY score DESC, d.doc_id
LIMIT $k;
