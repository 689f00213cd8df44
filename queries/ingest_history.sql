-- name: ingest_history
-- description: Recent ingest runs with their counts, timings and number of rejected inputs.
-- param: limit integer = 20  How many runs
SELECT run_id, status, started_at, seen, added, updated, unchanged, failed, removed,
       chunks_embedded, tokens_embedded, round(total_seconds, 2) AS seconds, flow_run_id
FROM ingest_runs
ORDER BY started_at DESC
LIMIT $limit;
