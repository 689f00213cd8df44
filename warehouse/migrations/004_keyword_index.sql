-- 004_keyword_index: BM25 postings inside the warehouse, kept up to date by every write.
-- Replaces the fts extension's index (schema fts_main_chunks), which could only be rebuilt whole.
-- Ingest adds and removes the postings of the chunks it writes in the same transaction as the
-- chunks, so the index can never disagree with them, and a query reads only the postings of its
-- own terms. Text handling is the fts index's as it was configured (stemmer 'porter', stopwords
-- 'english', ignore '(\.|[^\p{L}\p{N}])+', strip_accents, lower): words are runs of letters and
-- digits of any script, a stop word is dropped before stemming, stems come from the fts
-- extension's stem() at ingest (warehouse/keyword.py) and are stored, so that queries need no
-- extension: bm25_chunks() works in any DuckDB client.

DROP SCHEMA IF EXISTS fts_main_chunks CASCADE;
DROP TABLE search_index_state;

-- fts's 'english' list, each word with its Porter stem: a stop word in a query still finds the
-- other words that share its stem, as match_bm25 did ('wanted' is indexed as 'want').
CREATE TABLE kw_stopwords (word VARCHAR NOT NULL, term VARCHAR NOT NULL);
INSERT INTO kw_stopwords SELECT DISTINCT word, term FROM (VALUES
    ('a', 'a'), ('a''s', 'a'''), ('able', 'abl'), ('about', 'about'), ('above', 'abov'),
    ('according', 'accord'), ('accordingly', 'accordingli'), ('across', 'across'),
    ('actually', 'actual'), ('after', 'after'), ('afterwards', 'afterward'), ('again', 'again'),
    ('against', 'against'), ('ain''t', 'ain''t'), ('all', 'all'), ('allow', 'allow'),
    ('allows', 'allow'), ('almost', 'almost'), ('alone', 'alon'), ('along', 'along'),
    ('already', 'alreadi'), ('also', 'also'), ('although', 'although'), ('always', 'alwai'),
    ('am', 'am'), ('among', 'among'), ('amongst', 'amongst'), ('an', 'an'), ('and', 'and'),
    ('another', 'anoth'), ('any', 'ani'), ('anybody', 'anybodi'), ('anyhow', 'anyhow'),
    ('anyone', 'anyon'), ('anything', 'anyth'), ('anyway', 'anywai'), ('anyways', 'anywai'),
    ('anywhere', 'anywher'), ('apart', 'apart'), ('appear', 'appear'), ('appreciate', 'appreci'),
    ('appropriate', 'appropri'), ('are', 'ar'), ('aren''t', 'aren''t'), ('around', 'around'),
    ('as', 'a'), ('aside', 'asid'), ('ask', 'ask'), ('asking', 'ask'), ('associated', 'associ'),
    ('at', 'at'), ('available', 'avail'), ('away', 'awai'), ('awfully', 'awfulli'), ('b', 'b'),
    ('be', 'be'), ('became', 'becam'), ('because', 'becaus'), ('become', 'becom'),
    ('becomes', 'becom'), ('becoming', 'becom'), ('been', 'been'), ('before', 'befor'),
    ('beforehand', 'beforehand'), ('behind', 'behind'), ('being', 'be'), ('believe', 'believ'),
    ('below', 'below'), ('beside', 'besid'), ('besides', 'besid'), ('best', 'best'),
    ('better', 'better'), ('between', 'between'), ('beyond', 'beyond'), ('both', 'both'),
    ('brief', 'brief'), ('but', 'but'), ('by', 'by'), ('c', 'c'), ('c''mon', 'c''mon'),
    ('c''s', 'c'''), ('came', 'came'), ('can', 'can'), ('can''t', 'can''t'), ('cannot', 'cannot'),
    ('cant', 'cant'), ('cause', 'caus'), ('causes', 'caus'), ('certain', 'certain'),
    ('certainly', 'certainli'), ('changes', 'chang'), ('clearly', 'clearli'), ('co', 'co'),
    ('com', 'com'), ('come', 'come'), ('comes', 'come'), ('concerning', 'concern'),
    ('consequently', 'consequ'), ('consider', 'consid'), ('considering', 'consid'),
    ('contain', 'contain'), ('containing', 'contain'), ('contains', 'contain'),
    ('corresponding', 'correspond'), ('could', 'could'), ('couldn''t', 'couldn''t'),
    ('course', 'cours'), ('currently', 'current'), ('d', 'd'), ('definitely', 'definit'),
    ('described', 'describ'), ('despite', 'despit'), ('did', 'did'), ('didn''t', 'didn''t'),
    ('different', 'differ'), ('do', 'do'), ('does', 'doe'), ('doesn''t', 'doesn''t'),
    ('doing', 'do'), ('don''t', 'don''t'), ('done', 'done'), ('down', 'down'),
    ('downwards', 'downward'), ('during', 'dure'), ('e', 'e'), ('each', 'each'), ('edu', 'edu'),
    ('eg', 'eg'), ('eight', 'eight'), ('either', 'either'), ('else', 'els'),
    ('elsewhere', 'elsewher'), ('enough', 'enough'), ('entirely', 'entir'),
    ('especially', 'especi'), ('et', 'et'), ('etc', 'etc'), ('even', 'even'), ('ever', 'ever'),
    ('every', 'everi'), ('everybody', 'everybodi'), ('everyone', 'everyon'),
    ('everything', 'everyth'), ('everywhere', 'everywher'), ('ex', 'ex'), ('exactly', 'exactli'),
    ('example', 'exampl'), ('except', 'except'), ('f', 'f'), ('far', 'far'), ('few', 'few'),
    ('fifth', 'fifth'), ('first', 'first'), ('five', 'five'), ('followed', 'follow'),
    ('following', 'follow'), ('follows', 'follow'), ('for', 'for'), ('former', 'former'),
    ('formerly', 'formerli'), ('forth', 'forth'), ('four', 'four'), ('from', 'from'),
    ('further', 'further'), ('furthermore', 'furthermor'), ('g', 'g'), ('get', 'get'),
    ('gets', 'get'), ('getting', 'get'), ('given', 'given'), ('gives', 'give'), ('go', 'go'),
    ('goes', 'goe'), ('going', 'go'), ('gone', 'gone'), ('got', 'got'), ('gotten', 'gotten'),
    ('greetings', 'greet'), ('h', 'h'), ('had', 'had'), ('hadn''t', 'hadn''t'),
    ('happens', 'happen'), ('hardly', 'hardli'), ('has', 'ha'), ('hasn''t', 'hasn''t'),
    ('have', 'have'), ('haven''t', 'haven''t'), ('having', 'have'), ('he', 'he'),
    ('he''s', 'he'''), ('hello', 'hello'), ('help', 'help'), ('hence', 'henc'), ('her', 'her'),
    ('here', 'here'), ('here''s', 'here'''), ('hereafter', 'hereaft'), ('hereby', 'herebi'),
    ('herein', 'herein'), ('hereupon', 'hereupon'), ('hers', 'her'), ('herself', 'herself'),
    ('hi', 'hi'), ('him', 'him'), ('himself', 'himself'), ('his', 'hi'), ('hither', 'hither'),
    ('hopefully', 'hopefulli'), ('how', 'how'), ('howbeit', 'howbeit'), ('however', 'howev'),
    ('i', 'i'), ('i''d', 'i''d'), ('i''ll', 'i''ll'), ('i''m', 'i''m'), ('i''ve', 'i''v'),
    ('ie', 'ie'), ('if', 'if'), ('ignored', 'ignor'), ('immediate', 'immedi'), ('in', 'in'),
    ('inasmuch', 'inasmuch'), ('inc', 'inc'), ('indeed', 'inde'), ('indicate', 'indic'),
    ('indicated', 'indic'), ('indicates', 'indic'), ('inner', 'inner'), ('insofar', 'insofar'),
    ('instead', 'instead'), ('into', 'into'), ('inward', 'inward'), ('is', 'i'),
    ('isn''t', 'isn''t'), ('it', 'it'), ('it''d', 'it''d'), ('it''ll', 'it''ll'),
    ('it''s', 'it'''), ('its', 'it'), ('itself', 'itself'), ('j', 'j'), ('just', 'just'),
    ('k', 'k'), ('keep', 'keep'), ('keeps', 'keep'), ('kept', 'kept'), ('know', 'know'),
    ('knows', 'know'), ('known', 'known'), ('l', 'l'), ('last', 'last'), ('lately', 'late'),
    ('later', 'later'), ('latter', 'latter'), ('latterly', 'latterli'), ('least', 'least'),
    ('less', 'less'), ('lest', 'lest'), ('let', 'let'), ('let''s', 'let'''), ('like', 'like'),
    ('liked', 'like'), ('likely', 'like'), ('little', 'littl'), ('look', 'look'),
    ('looking', 'look'), ('looks', 'look'), ('ltd', 'ltd'), ('m', 'm'), ('mainly', 'mainli'),
    ('many', 'mani'), ('may', 'mai'), ('maybe', 'mayb'), ('me', 'me'), ('mean', 'mean'),
    ('meanwhile', 'meanwhil'), ('merely', 'mere'), ('might', 'might'), ('more', 'more'),
    ('moreover', 'moreov'), ('most', 'most'), ('mostly', 'mostli'), ('much', 'much'),
    ('must', 'must'), ('my', 'my'), ('myself', 'myself'), ('n', 'n'), ('name', 'name'),
    ('namely', 'name'), ('nd', 'nd'), ('near', 'near'), ('nearly', 'nearli'),
    ('necessary', 'necessari'), ('need', 'need'), ('needs', 'need'), ('neither', 'neither'),
    ('never', 'never'), ('nevertheless', 'nevertheless'), ('new', 'new'), ('next', 'next'),
    ('nine', 'nine'), ('no', 'no'), ('nobody', 'nobodi'), ('non', 'non'), ('none', 'none'),
    ('noone', 'noon'), ('nor', 'nor'), ('normally', 'normal'), ('not', 'not'), ('nothing', 'noth'),
    ('novel', 'novel'), ('now', 'now'), ('nowhere', 'nowher'), ('o', 'o'),
    ('obviously', 'obvious'), ('of', 'of'), ('off', 'off'), ('often', 'often'), ('oh', 'oh'),
    ('ok', 'ok'), ('okay', 'okai'), ('old', 'old'), ('on', 'on'), ('once', 'onc'), ('one', 'on'),
    ('ones', 'on'), ('only', 'onli'), ('onto', 'onto'), ('or', 'or'), ('other', 'other'),
    ('others', 'other'), ('otherwise', 'otherwis'), ('ought', 'ought'), ('our', 'our'),
    ('ours', 'our'), ('ourselves', 'ourselv'), ('out', 'out'), ('outside', 'outsid'),
    ('over', 'over'), ('overall', 'overal'), ('own', 'own'), ('p', 'p'),
    ('particular', 'particular'), ('particularly', 'particularli'), ('per', 'per'),
    ('perhaps', 'perhap'), ('placed', 'place'), ('please', 'pleas'), ('plus', 'plu'),
    ('possible', 'possibl'), ('presumably', 'presum'), ('probably', 'probabl'),
    ('provides', 'provid'), ('q', 'q'), ('que', 'que'), ('quite', 'quit'), ('qv', 'qv'),
    ('r', 'r'), ('rather', 'rather'), ('rd', 'rd'), ('re', 're'), ('really', 'realli'),
    ('reasonably', 'reason'), ('regarding', 'regard'), ('regardless', 'regardless'),
    ('regards', 'regard'), ('relatively', 'rel'), ('respectively', 'respect'), ('right', 'right'),
    ('s', ''), ('said', 'said'), ('same', 'same'), ('saw', 'saw'), ('say', 'sai'),
    ('saying', 'sai'), ('says', 'sai'), ('second', 'second'), ('secondly', 'secondli'),
    ('see', 'see'), ('seeing', 'see'), ('seem', 'seem'), ('seemed', 'seem'), ('seeming', 'seem'),
    ('seems', 'seem'), ('seen', 'seen'), ('self', 'self'), ('selves', 'selv'),
    ('sensible', 'sensibl'), ('sent', 'sent'), ('serious', 'seriou'), ('seriously', 'serious'),
    ('seven', 'seven'), ('several', 'sever'), ('shall', 'shall'), ('she', 'she'),
    ('should', 'should'), ('shouldn''t', 'shouldn''t'), ('since', 'sinc'), ('six', 'six'),
    ('so', 'so'), ('some', 'some'), ('somebody', 'somebodi'), ('somehow', 'somehow'),
    ('someone', 'someon'), ('something', 'someth'), ('sometime', 'sometim'),
    ('sometimes', 'sometim'), ('somewhat', 'somewhat'), ('somewhere', 'somewher'),
    ('soon', 'soon'), ('sorry', 'sorri'), ('specified', 'specifi'), ('specify', 'specifi'),
    ('specifying', 'specifi'), ('still', 'still'), ('sub', 'sub'), ('such', 'such'),
    ('sup', 'sup'), ('sure', 'sure'), ('t', 't'), ('t''s', 't'''), ('take', 'take'),
    ('taken', 'taken'), ('tell', 'tell'), ('tends', 'tend'), ('th', 'th'), ('than', 'than'),
    ('thank', 'thank'), ('thanks', 'thank'), ('thanx', 'thanx'), ('that', 'that'),
    ('that''s', 'that'''), ('thats', 'that'), ('the', 'the'), ('their', 'their'),
    ('theirs', 'their'), ('them', 'them'), ('themselves', 'themselv'), ('then', 'then'),
    ('thence', 'thenc'), ('there', 'there'), ('there''s', 'there'''), ('thereafter', 'thereaft'),
    ('thereby', 'therebi'), ('therefore', 'therefor'), ('therein', 'therein'), ('theres', 'there'),
    ('thereupon', 'thereupon'), ('these', 'these'), ('they', 'thei'), ('they''d', 'they''d'),
    ('they''ll', 'they''ll'), ('they''re', 'they''r'), ('they''ve', 'they''v'), ('think', 'think'),
    ('third', 'third'), ('this', 'thi'), ('thorough', 'thorough'), ('thoroughly', 'thoroughli'),
    ('those', 'those'), ('though', 'though'), ('three', 'three'), ('through', 'through'),
    ('throughout', 'throughout'), ('thru', 'thru'), ('thus', 'thu'), ('to', 'to'),
    ('together', 'togeth'), ('too', 'too'), ('took', 'took'), ('toward', 'toward'),
    ('towards', 'toward'), ('tried', 'tri'), ('tries', 'tri'), ('truly', 'truli'), ('try', 'try'),
    ('trying', 'try'), ('twice', 'twice'), ('two', 'two'), ('u', 'u'), ('un', 'un'),
    ('under', 'under'), ('unfortunately', 'unfortun'), ('unless', 'unless'), ('unlikely', 'unlik'),
    ('until', 'until'), ('unto', 'unto'), ('up', 'up'), ('upon', 'upon'), ('us', 'u'),
    ('use', 'us'), ('used', 'us'), ('useful', 'us'), ('uses', 'us'), ('using', 'us'),
    ('usually', 'usual'), ('uucp', 'uucp'), ('v', 'v'), ('value', 'valu'), ('various', 'variou'),
    ('very', 'veri'), ('via', 'via'), ('viz', 'viz'), ('vs', 'v'), ('w', 'w'), ('want', 'want'),
    ('wants', 'want'), ('was', 'wa'), ('wasn''t', 'wasn''t'), ('way', 'wai'), ('we', 'we'),
    ('we''d', 'we''d'), ('we''ll', 'we''ll'), ('we''re', 'we''r'), ('we''ve', 'we''v'),
    ('welcome', 'welcom'), ('well', 'well'), ('went', 'went'), ('were', 'were'),
    ('weren''t', 'weren''t'), ('what', 'what'), ('what''s', 'what'''), ('whatever', 'whatev'),
    ('when', 'when'), ('whence', 'whenc'), ('whenever', 'whenev'), ('where', 'where'),
    ('where''s', 'where'''), ('whereafter', 'whereaft'), ('whereas', 'wherea'),
    ('whereby', 'wherebi'), ('wherein', 'wherein'), ('whereupon', 'whereupon'),
    ('wherever', 'wherev'), ('whether', 'whether'), ('which', 'which'), ('while', 'while'),
    ('whither', 'whither'), ('who', 'who'), ('who''s', 'who'''), ('whoever', 'whoever'),
    ('whole', 'whole'), ('whom', 'whom'), ('whose', 'whose'), ('why', 'why'), ('will', 'will'),
    ('willing', 'will'), ('wish', 'wish'), ('with', 'with'), ('within', 'within'),
    ('without', 'without'), ('won''t', 'won''t'), ('wonder', 'wonder'), ('would', 'would'),
    ('would', 'would'), ('wouldn''t', 'wouldn''t'), ('x', 'x'), ('y', 'y'), ('yes', 'ye'),
    ('yet', 'yet'), ('you', 'you'), ('you''d', 'you''d'), ('you''ll', 'you''ll'),
    ('you''re', 'you''r'), ('you''ve', 'you''v'), ('your', 'your'), ('yours', 'your'),
    ('yourself', 'yourself'), ('yourselves', 'yourselv'), ('z', 'z'), ('zero', 'zero')
) AS t(word, term);

CREATE SEQUENCE kw_term_ids;
CREATE SEQUENCE kw_chunk_nos;
-- One row per stem; `key` is md5_number_lower(term), for lookups by integer (see kw_words).
CREATE TABLE kw_terms (term_id INTEGER NOT NULL, term VARCHAR NOT NULL, key UBIGINT NOT NULL);
-- Every word form seen at ingest (and every stop word) with its stem: how a query's words become
-- terms without stem(). `key` (md5_number_lower(word)) is what queries look words up by: an integer
-- scan, where comparing the words themselves costs a string scan of the whole vocabulary.
CREATE TABLE kw_words (key UBIGINT NOT NULL, word VARCHAR NOT NULL, term_id INTEGER NOT NULL);
-- One row per indexed chunk: its number in the postings, and its length in terms (BM25's |d|).
CREATE TABLE kw_chunks (chunk_no BIGINT NOT NULL, chunk_id VARCHAR NOT NULL, doc_id VARCHAR NOT NULL, len INTEGER NOT NULL);
-- (term, chunk, term frequency, chunk length, article date). Kept sorted by term where possible (a
-- full build, warehouse/keyword.py's compaction), so the min/max of each row group lets a query
-- skip the postings of other terms; len and published are repeated here so that scoring and date
-- filters need no join.
CREATE TABLE kw_postings (term_id INTEGER NOT NULL, chunk_no BIGINT NOT NULL, tf INTEGER NOT NULL, len INTEGER NOT NULL, published DATE);
-- One row once the index covers every chunk; `appended` counts postings written since the last
-- sort, so compaction knows when the unsorted tail is worth sorting.
CREATE TABLE kw_state (built_at TIMESTAMP NOT NULL, appended BIGINT NOT NULL);
-- A warehouse without chunks is trivially indexed; one with chunks is indexed by its next ingest.
INSERT INTO kw_state SELECT current_timestamp, 0 WHERE NOT EXISTS (SELECT 1 FROM chunks);

INSERT INTO kw_terms SELECT nextval('kw_term_ids'), term, md5_number_lower(term) FROM (SELECT DISTINCT term FROM kw_stopwords ORDER BY term);
INSERT INTO kw_words SELECT md5_number_lower(s.word), s.word, t.term_id FROM kw_stopwords s JOIN kw_terms t USING (term);

-- fts_main_chunks.tokenize as create_fts_index generated it for this warehouse.
CREATE MACRO kw_tokenize(s) AS
    string_split_regex(regexp_replace(lower(strip_accents(CAST(s AS VARCHAR))), '(\.|[^\p{L}\p{N}])+', ' ', 'g'), '\s+');

-- BM25 of the chunks that hold a term of `query`, as fts's match_bm25 scored them (same formula,
-- k1 = 1.2, b = 0.75, base-10 log; document frequencies over all chunks, before the date filter):
--     SELECT * FROM bm25_chunks('flood relief', top := 10) ORDER BY score DESC;
--     SELECT * FROM bm25_chunks('flood', since := DATE '2024-01-01');
-- Only the postings of the query's terms are read. `top` keeps the best n (ties by chunk_no, the
-- order of indexing) before their ids are looked up, which is most of the cost of a big answer.
-- The query's words become terms through kw_words, so a word never seen at ingest matches nothing
-- even where another form of it was seen; match_bm25 stemmed the query ('floods' found 'flood').
-- Where the fts extension is loaded, pass the stems to do the same:
--     bm25_chunks(q, stems := (SELECT list(stem(w, 'porter')) FROM (SELECT unnest(kw_tokenize(q)) AS w)))
-- (newsindex search does).
CREATE MACRO bm25_chunks(query, since := NULL, until := NULL, top := NULL, stems := NULL, k := 1.2, b := 0.75) AS TABLE
WITH qterms AS (
    SELECT DISTINCT term_id FROM kw_words
    WHERE stems IS NULL AND key IN (SELECT md5_number_lower(word) FROM (SELECT unnest(kw_tokenize(query)) AS word))
    UNION
    SELECT term_id FROM kw_terms
    WHERE stems IS NOT NULL AND key IN (SELECT md5_number_lower(s) FROM (SELECT unnest(CAST(stems AS VARCHAR[])) AS s))
),
hits AS (SELECT term_id, chunk_no, tf, len, published FROM kw_postings WHERE term_id IN (SELECT term_id FROM qterms)),
df AS (SELECT term_id, count(*) AS df FROM hits GROUP BY term_id),
stats AS (SELECT count(*) AS n, avg(len) AS avgdl FROM kw_chunks),
scores AS (
    SELECT h.chunk_no,
           sum(log((s.n - df.df + 0.5) / (df.df + 0.5) + 1) * (h.tf * (k + 1) / (h.tf + k * (1 - b + b * (h.len / s.avgdl))))) AS score
    FROM hits h JOIN df USING (term_id) CROSS JOIN stats s
    WHERE (since IS NULL OR h.published >= since) AND (until IS NULL OR h.published <= until)
    GROUP BY h.chunk_no
    ORDER BY score DESC, h.chunk_no
    LIMIT top
)
SELECT c.chunk_id, c.doc_id, s.score FROM scores s JOIN kw_chunks c USING (chunk_no);
