-- When the first retry backoff ends: the dispatcher asks each time it finds nothing to claim,
-- and without an index that reads every waiting execution (100k queued: milliseconds a time).
CREATE INDEX executions_waiting_not_before ON executions (not_before)
    WHERE state IN ('QUEUED', 'RETRYING');
