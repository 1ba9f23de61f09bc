-- The change-discovery index on the sync server's table. The migration runs this ONE
-- statement on its own, outside any transaction, and only when no valid index of this
-- name exists (an INVALID leftover of an interrupted build is dropped CONCURRENTLY
-- first), so it never blocks a device's push: CONCURRENTLY takes only a SHARE UPDATE
-- EXCLUSIVE lock on `sync_changes`.
CREATE INDEX CONCURRENTLY IF NOT EXISTS mana_ai_sync_changes_ai_position ON public.sync_changes (created_at)
  WHERE app_id = 'ai' AND table_name IN ('aiMissions', 'agents')
