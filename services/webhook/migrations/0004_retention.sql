-- migrate: no-transaction
-- Finished deliveries are pruned once older than the retention period: find them by age
-- without walking pending ones. Built CONCURRENTLY so that a large deliveries table keeps
-- taking deliveries meanwhile; dropped first so a build cut short starts over.
DROP INDEX CONCURRENTLY IF EXISTS deliveries_finished;
CREATE INDEX CONCURRENTLY deliveries_finished ON deliveries (update_time) WHERE state <> 'pending';
