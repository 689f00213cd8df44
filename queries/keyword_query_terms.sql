-- name: keyword_query_terms
-- description: The keyword index's term ids for a query, as bm25_chunks (migration 004) resolves them: by its Porter stems where given, else by its words as seen at ingest.
-- internal: true
-- param: query text  Keywords
-- param: stems text = null  The Porter stems of the query's words (a list), as keyword_search.sql takes them
-- This is bm25_chunks' `qterms`, word for word, so that warm keyword search (queries/warm_keyword.py)
-- scores the same terms; tests/test_warm.py compares the two answers query by query.
SELECT DISTINCT term_id FROM (
    SELECT term_id FROM kw_words
    WHERE $stems IS NULL AND key IN (SELECT md5_number_lower(word) FROM (SELECT unnest(kw_tokenize($query)) AS word))
    UNION
    SELECT term_id FROM kw_terms
    WHERE $stems IS NOT NULL AND key IN (SELECT md5_number_lower(s) FROM (SELECT unnest(CAST($stems AS VARCHAR[])) AS s))
)
ORDER BY term_id;
