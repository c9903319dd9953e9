-- When the execution must have ended, every wait, attempt and retry included; executions
-- accepted before this column existed have none.
ALTER TABLE executions ADD COLUMN deadline_at timestamptz;
CREATE INDEX executions_deadlines ON executions (deadline_at)
    WHERE state IN ('QUEUED', 'DISPATCHED', 'RUNNING', 'RETRYING');
-- The tenant's own concurrency cap as the gateway sent it with the submission; NULL takes the
-- scheduler's default.
ALTER TABLE executions ADD COLUMN tenant_cap integer;
