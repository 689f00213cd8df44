-- name: keyword_postings
-- description: Every posting of the keyword index (term, chunk, term frequency): what a warm session loads into memory once (queries/warm_keyword.py).
-- internal: true
-- Unordered: the warm loader sorts by term in memory (a radix sort of integers), cheaper than an
-- ORDER BY over every posting here.
SELECT term_id, chunk_no, tf FROM kw_postings;
