-- name: hybrid_search
-- description: Articles ranked by a convex combination of their best passage's semantic and BM25 scores (each side min-max normalised, weighted by the query); shows both sides' ranks and scores and the best-answering passage.
-- param: query text  The question or keywords
-- param: k integer = 10  How many articles (hybrid always ranks articles, each by its best passage)
-- param: since date = null  Only articles published on or after this date
-- param: until date = null  Only articles published on or before this date
-- param: source text = null  Glob on the article's source path (a relative glob matches anywhere)
-- param: doc text = null  Only this document id
-- param: depth integer = 100  Articles taken from each side before fusing (their scores set the normalisation)
-- param: short_words integer = 3  Queries of at most this many words count as short (names, keywords)
-- param: short_semantic_weight float = 0.3  The most weight the semantic side gets for a short query
-- param: semantic_weight float = null  A fixed weight of the semantic side instead of the query-dependent one
-- param: vector text = null  The query's embedding as a list literal; `newsindex query` fills it in from query
-- param: stems text = null  The Porter stems of the query's words (a list); `newsindex search` fills it in, else the words are looked up among those seen at ingest
-- param: semantic_best text = null  Warm sessions only (queries/warm_hybrid.py): JSON [{doc_id, score}], each candidate article's best passage score, instead of the semantic scan
-- param: semantic_passages text = null  Warm and one-shot searches: JSON [{chunk_id, doc_id, score}], the semantic scores of every passage of some candidate articles (those of any other winner are computed here)
-- param: keyword_passages text = null  Warm sessions only: JSON [{chunk_id, doc_id, score}], the BM25 passages of the candidate articles, instead of bm25_chunks
-- Fusion (Bruch, Gai and Ingber, TOIS 2023): each side ranks articles by their best passage; each
-- side's scores are min-max normalised over its top `depth` articles (an article the side did not
-- return counts 0 there), then score = w * semantic + (1 - w) * keyword. bench/fusion.py compares
-- this with RRF and other weights; bench/RESULTS.md has the figures. The passage shown for an
-- article is its passage with the highest fused score under the same normalisation.
-- The vector is a bound text parameter cast to a constant FLOAT[{dim}], the warehouse's width
-- filled in before the query runs (see semantic_search.sql).
-- A warm session (queries/warm_hybrid.py) computes both sides' candidates from memory and fuses
-- them in Python with these same expressions. Given them as JSON text (semantic_best,
-- semantic_passages, keyword_passages), this query skips every scan and fuses them itself:
-- tests/test_warm.py checks the two fusions against each other that way.
WITH filtered AS (
    -- Two branches so that an unfiltered query skips the semi-join on documents entirely.
    SELECT c.chunk_id, c.doc_id, c.embedding
    FROM chunks c
    WHERE $since IS NULL AND $until IS NULL AND $source IS NULL AND $doc IS NULL AND $semantic_best IS NULL
    UNION ALL
    SELECT c.chunk_id, c.doc_id, c.embedding
    FROM chunks c
    WHERE NOT ($since IS NULL AND $until IS NULL AND $source IS NULL AND $doc IS NULL) AND $semantic_best IS NULL AND c.doc_id IN (
        SELECT d.doc_id FROM documents d
        WHERE passage_filter(d.published, d.source_path, d.doc_id, $since, $until, $source, $doc)
    )
),
semantic_scores AS (
    SELECT chunk_id, doc_id, array_inner_product(embedding, CAST($vector AS FLOAT[{dim}])) AS score FROM filtered
),
-- The keyword side, (chunk_id, doc_id, score) for each matching passage: the one place BM25 is
-- asked, from the postings (bm25_chunks, migration 004) under the same filters as `filtered`:
-- dates inside the macro, which then keeps the best 4 × $depth passages itself where nothing else
-- filters (enough for $depth articles: most articles match in one or two passages).
-- Materialised: it is read twice (articles, then passages) and is no bigger than the matches.
keyword_scores AS MATERIALIZED (
    SELECT chunk_id, doc_id, score
    FROM bm25_chunks($query, since := $since, until := $until, stems := $stems,
                     top := CASE WHEN $source IS NULL AND $doc IS NULL THEN 4 * $depth END)
    WHERE $keyword_passages IS NULL AND (($source IS NULL AND $doc IS NULL) OR doc_id IN (
        SELECT d.doc_id FROM documents d
        WHERE passage_filter(d.published, d.source_path, d.doc_id, NULL, NULL, $source, $doc)
    ))
    UNION ALL
    SELECT p.chunk_id, p.doc_id, p.score
    FROM (SELECT unnest(CAST(CAST($keyword_passages AS JSON) AS STRUCT(chunk_id VARCHAR, doc_id VARCHAR, score DOUBLE)[])) AS p)
),
semantic AS (
    SELECT doc_id, score, row_number() OVER (ORDER BY score DESC, doc_id) AS rank
    FROM (SELECT doc_id, max(score) AS score FROM semantic_scores GROUP BY doc_id
          UNION ALL
          SELECT s.doc_id, s.score FROM (SELECT unnest(CAST(CAST($semantic_best AS JSON) AS STRUCT(doc_id VARCHAR, score FLOAT)[])) AS s))
    ORDER BY score DESC, doc_id
    LIMIT $depth
),
keyword AS (
    SELECT doc_id, score, row_number() OVER (ORDER BY score DESC, doc_id) AS rank
    FROM (SELECT doc_id, max(score) AS score FROM keyword_scores GROUP BY doc_id)
    ORDER BY score DESC, doc_id
    LIMIT $depth
),
-- The keyword side's best article's best passage, and the share of the query's terms it holds
-- (Porter stems, as BM25 matches them; the stopwords are search.py's _STOP).
keyword_best AS (
    SELECT ks.chunk_id FROM keyword_scores ks
    WHERE ks.doc_id = (SELECT doc_id FROM keyword WHERE rank = 1)
    ORDER BY ks.score DESC, ks.chunk_id LIMIT 1
),
coverage AS (
    SELECT CASE WHEN len(q.terms) = 0 THEN 0.0 ELSE len(list_intersect(q.terms, p.terms)) / len(q.terms) END AS share
    FROM (SELECT list_distinct(list_transform(list_filter(regexp_extract_all(lower(strip_accents($query)), '[\p{L}\p{N}]+'),
                                                          w -> NOT list_contains(['a', 'about', 'after', 'all', 'also', 'an', 'and', 'any', 'are', 'as', 'at', 'be', 'been', 'but', 'by', 'can', 'could', 'did', 'do', 'does', 'for', 'from', 'had', 'has', 'have', 'he', 'her', 'his', 'how', 'i', 'if', 'in', 'into', 'is', 'it', 'its', 'me', 'my', 'no', 'not', 'of', 'on', 'or', 'our', 'she', 'so', 'than', 'that', 'the', 'their', 'them', 'then', 'there', 'these', 'they', 'this', 'those', 'to', 'up', 'us', 'was', 'we', 'were', 'what', 'when', 'where', 'which', 'while', 'who', 'whom', 'whose', 'why', 'will', 'with', 'would', 'you', 'your'], w)),
                                              w -> stem(w, 'porter'))) AS terms) q,
         (SELECT list_distinct(list_transform(regexp_extract_all(lower(strip_accents(c.text)), '[\p{L}\p{N}]+'), w -> stem(w, 'porter'))) AS terms
          FROM chunks c WHERE c.chunk_id = (SELECT chunk_id FROM keyword_best)) p
),
-- Each side's range over its candidates (a side with one distinct score maps it to 1), and the
-- semantic weight: 1 minus the keyword side's confidence (its margin times its coverage), at most
-- short_semantic_weight for a short query.
ranges AS (
    SELECT
        (SELECT min(score) FROM semantic) AS semantic_low, (SELECT max(score) FROM semantic) AS semantic_high,
        (SELECT min(score) FROM keyword) AS keyword_low, (SELECT max(score) FROM keyword) AS keyword_high,
        coalesce($semantic_weight, least(
            CASE WHEN len(regexp_extract_all($query, '[\p{L}\p{N}]+')) <= $short_words THEN $short_semantic_weight ELSE 1.0 END,
            1.0 - (SELECT CASE WHEN count(*) = 0 OR max(score) <= 0 THEN 0.0
                               WHEN count(*) = 1 THEN 1.0
                               ELSE (max(score) - max(score) FILTER (WHERE rank = 2)) / max(score) END
                   FROM keyword) * coalesce((SELECT share FROM coverage), 0.0)
        )) AS w
),
fused AS (
    SELECT
        doc_id, s.rank AS semantic_rank, s.score AS semantic_score, k.rank AS keyword_rank, k.score AS keyword_score,
        r.w * CASE WHEN s.score IS NULL THEN 0 WHEN r.semantic_high > r.semantic_low
                   THEN (s.score - r.semantic_low) / (r.semantic_high - r.semantic_low) ELSE 1 END
        + (1 - r.w) * CASE WHEN k.score IS NULL THEN 0 WHEN r.keyword_high > r.keyword_low
                           THEN (k.score - r.keyword_low) / (r.keyword_high - r.keyword_low) ELSE 1 END AS score
    FROM semantic s FULL OUTER JOIN keyword k USING (doc_id), ranges r
),
top AS (
    SELECT * FROM fused ORDER BY score DESC, semantic_score DESC NULLS LAST, doc_id LIMIT $k
),
-- The winners' passages with their semantic scores: those given, and for any other winner
-- recomputed here for its passages only (cheaper than keeping every chunk's score from the scan
-- above; no scan at all where every winner's passages are given).
given_passages AS (
    SELECT p.chunk_id, p.doc_id, p.score
    FROM (SELECT unnest(CAST(CAST($semantic_passages AS JSON) AS STRUCT(chunk_id VARCHAR, doc_id VARCHAR, score FLOAT)[])) AS p)
),
winner_passages AS (
    SELECT c.chunk_id, c.doc_id, array_inner_product(c.embedding, CAST($vector AS FLOAT[{dim}])) AS score
    FROM chunks c WHERE c.doc_id IN (SELECT doc_id FROM top EXCEPT SELECT doc_id FROM given_passages)
    UNION ALL
    SELECT chunk_id, doc_id, score FROM given_passages WHERE doc_id IN (SELECT doc_id FROM top)
),
-- The best-answering passage of each winner: its highest fused score, passage by passage.
best_passage AS (
    SELECT wp.doc_id, arg_max(wp.chunk_id, (
        r.w * CASE WHEN r.semantic_high > r.semantic_low THEN (wp.score - r.semantic_low) / (r.semantic_high - r.semantic_low) ELSE 1 END
        + (1 - r.w) * CASE WHEN ks.score IS NULL THEN 0 WHEN r.keyword_high > r.keyword_low
                           THEN (ks.score - r.keyword_low) / (r.keyword_high - r.keyword_low) ELSE 1 END,
        wp.score)) AS chunk_id
    FROM winner_passages wp LEFT JOIN keyword_scores ks USING (chunk_id), ranges r
    GROUP BY wp.doc_id
)
-- Chunks and documents joined to the k winners directly (as in passages_by_id.sql): the `passages`
-- view joined every chunk to its document first.
SELECT
    c.chunk_id, c.doc_id, c.ordinal, d.title, d.published, d.source_path, d.url,
    c.text, c.char_start, c.char_end,
    t.score, t.semantic_rank, t.semantic_score, t.keyword_rank, t.keyword_score
FROM top t
JOIN best_passage b USING (doc_id)
JOIN chunks c ON c.chunk_id = b.chunk_id
JOIN documents d ON d.doc_id = c.doc_id
-- A clear error, not NULL scores, when run without the vector (a CASE in the scan would copy it per row).
WHERE $vector IS NOT NULL OR error('no vector given for the query ' || $query || '; newsindex fills it in')
ORDER BY t.score DESC, t.semantic_score DESC NULLS LAST, c.doc_id;
