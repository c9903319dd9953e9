-- Lists filtered by labels: `labels @> '{"env": "prod"}'` within a tenant. jsonb_path_ops
-- serves exactly containment, and is smaller and faster than the default jsonb_ops.
CREATE INDEX executions_labels ON executions USING gin (labels jsonb_path_ops);

-- Which of the execution's events go to the tenant's webhooks (CreateExecutionRequest's
-- webhook_events, patterns such as 'execution.succeeded' or 'execution.*'); empty: all.
ALTER TABLE executions ADD COLUMN webhook_events text[] NOT NULL DEFAULT '{}';
