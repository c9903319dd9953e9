-- migrate: no-transaction
-- Claims walk each environment's waiting executions in queue order, so that a long queue of
-- an environment no executor serves is never read by a claim for another. Built
-- CONCURRENTLY (executions may be large), dropped first so a build cut short starts over.
DROP INDEX CONCURRENTLY IF EXISTS executions_waiting_by_environment;
CREATE INDEX CONCURRENTLY executions_waiting_by_environment
    ON executions (environment, priority DESC, created_at, id)
    WHERE state IN ('QUEUED', 'RETRYING');
