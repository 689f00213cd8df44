-- name: recent_semantic_search
-- description: Semantic search over articles published since a date, best passage per article.
-- param: query text  The question, in plain words
-- param: since date  Only articles published on or after this date
-- param: k integer = 10  How many articles
SELECT doc_id, published, title, max(array_cosine_similarity(embedding, (SELECT embed($query)))) AS score
FROM passages
WHERE published >= $since
GROUP BY doc_id, published, title
ORDER BY score DESC
LIMIT $k;
