-- 003_run_owner: the process behind each ingest run, so that a run whose process died (killed,
-- power cut) can be told from one still going: the next ingest marks it 'crashed'
-- (see store.mark_crashed_runs). Status is now running | completed | failed | crashed.

ALTER TABLE ingest_runs ADD COLUMN pid INTEGER;
ALTER TABLE ingest_runs ADD COLUMN host VARCHAR;
