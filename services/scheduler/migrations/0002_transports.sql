-- How the scheduler reaches an executor: "grpc" for executors that register themselves,
-- "runpod" for a RunPod serverless endpoint the scheduler registers on its own behalf.
ALTER TABLE executors ADD COLUMN transport text NOT NULL DEFAULT 'grpc';
ALTER TABLE attempts ADD COLUMN transport text NOT NULL DEFAULT 'grpc';
-- The executor's GPU when the attempt was dispatched: what its time is priced at.
ALTER TABLE attempts ADD COLUMN gpu_name text NOT NULL DEFAULT '';
