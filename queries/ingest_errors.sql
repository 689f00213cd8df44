-- name: ingest_errors
-- description: Inputs rejected by recent ingest runs, with the reason for each.
-- param: limit integer = 50  How many errors
SELECT r.started_at, e.source_path, e.line, e.message
FROM ingest_errors e
JOIN ingest_runs r USING (run_id)
ORDER BY r.started_at DESC, e.source_path, e.line
LIMIT $limit;
