-- migrate: no-transaction
-- Both indexes are built CONCURRENTLY: on a large executions table a plain CREATE INDEX
-- would block every submit and dispatch while it builds. A build cut short leaves an
-- INVALID index behind, so each is dropped first: running this file again after a crash
-- starts that index over.

-- Lists filtered by labels: `labels @> '{"env": "prod"}'` within a tenant. jsonb_path_ops
-- serves exactly containment, and is smaller and faster than the default jsonb_ops.
DROP INDEX CONCURRENTLY IF EXISTS executions_labels;
CREATE INDEX CONCURRENTLY executions_labels ON executions USING gin (labels jsonb_path_ops);

-- When the first retry backoff ends: the dispatcher asks each time it finds nothing to claim,
-- and without an index that reads every waiting execution (100k queued: milliseconds a time).
DROP INDEX CONCURRENTLY IF EXISTS executions_waiting_not_before;
CREATE INDEX CONCURRENTLY executions_waiting_not_before ON executions (not_before)
    WHERE state IN ('QUEUED', 'RETRYING');
