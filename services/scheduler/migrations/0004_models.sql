-- The models the workflow needs, resolved by the models service at submit time and pinned
-- to one version each: [{"name", "folder", "sha256", "size_bytes"}].
ALTER TABLE executions ADD COLUMN models jsonb NOT NULL DEFAULT '[]';
