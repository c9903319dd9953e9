-- Which of the execution's events go to the tenant's webhooks (CreateExecutionRequest's
-- webhook_events, patterns such as 'execution.succeeded' or 'execution.*'); empty: all.
-- The labels filter's index is built concurrently, in 0010.
ALTER TABLE executions ADD COLUMN webhook_events text[] NOT NULL DEFAULT '{}';
