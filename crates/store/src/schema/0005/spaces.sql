-- Shared spaces (issue 15). A space record's rows come from several members (a row's
-- `user_id` is whoever pushed it), so the per-user refresh sees one partial copy per
-- member. The space step folds every row of a `(space_id, record_id)` into ONE snapshot,
-- kept under the record's owner (the member who created it) with `space_id` set; the
-- other members' copies are marked deleted.
--
-- * `mana_ai.changed_space_records(from, to)` (SECURITY DEFINER) returns only ids:
--   `(space_id, table_name, record_id, member)` for `ai` mission/agent rows with a
--   `space_id` in `[from, to)`, `member` being one user who pushed such a row.
-- * `mana_ai.read_space_record(member, space, table, record, before, limit)` (SECURITY
--   INVOKER) reads the record's rows in that space the way a member's device does: with
--   `app.current_user_id = member` and `app.current_user_space_ids = space`, so the
--   space-member policy of `sync_changes` decides what it sees.
-- * `mana_ai.write_back_run_in_space(...)`: `mana_ai.write_back_run` for a space
--   mission; the iteration row carries `space_id`, so every member's device pulls it.
ALTER TABLE mana_ai.mission_snapshots ADD COLUMN IF NOT EXISTS space_id TEXT;
ALTER TABLE mana_ai.agent_snapshots ADD COLUMN IF NOT EXISTS space_id TEXT;
CREATE INDEX IF NOT EXISTS idx_mission_snapshots_space
  ON mana_ai.mission_snapshots (space_id, mission_id) WHERE space_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_agent_snapshots_space
  ON mana_ai.agent_snapshots (space_id, agent_id) WHERE space_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS mana_ai_sync_changes_ai_space_position ON public.sync_changes (created_at)
  WHERE app_id = 'ai' AND table_name IN ('aiMissions', 'agents') AND space_id IS NOT NULL;

CREATE OR REPLACE FUNCTION mana_ai.changed_space_records(p_from TIMESTAMPTZ, p_to TIMESTAMPTZ)
RETURNS TABLE (space_id TEXT, table_name TEXT, record_id TEXT, member TEXT)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
  SELECT s.space_id, s.table_name, s.record_id, min(s.user_id)
    FROM public.sync_changes s
   WHERE s.app_id = 'ai' AND s.table_name IN ('aiMissions', 'agents')
     AND s.space_id IS NOT NULL AND s.space_id <> '' AND s.user_id <> ''
     AND s.created_at >= p_from AND s.created_at < p_to
   GROUP BY s.space_id, s.table_name, s.record_id
$$;
REVOKE ALL ON FUNCTION mana_ai.changed_space_records(TIMESTAMPTZ, TIMESTAMPTZ) FROM PUBLIC;

CREATE OR REPLACE FUNCTION mana_ai.read_space_record(
  p_member TEXT, p_space TEXT, p_table TEXT, p_record TEXT, p_before TIMESTAMPTZ, p_limit INT)
RETURNS TABLE (user_id TEXT, op TEXT, data JSONB, field_meta JSONB, created_at TIMESTAMPTZ)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = pg_catalog AS $$
DECLARE
  outer_user TEXT := pg_catalog.current_setting('app.current_user_id', true);
  outer_spaces TEXT := pg_catalog.current_setting('app.current_user_space_ids', true);
BEGIN
  IF coalesce(p_member, '') = '' THEN
    RAISE EXCEPTION 'mana_ai.read_space_record: withUser: empty userID'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF coalesce(p_space, '') = '' OR pg_catalog.strpos(p_space, ',') > 0 THEN
    RAISE EXCEPTION 'mana_ai.read_space_record: one non-empty space id expected'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM pg_catalog.set_config('app.current_user_id', p_member, true);
  PERFORM pg_catalog.set_config('app.current_user_space_ids', p_space, true);
  RETURN QUERY
    SELECT s.user_id, s.op, s.data, s.field_meta, s.created_at
      FROM public.sync_changes s
     WHERE s.app_id = 'ai' AND s.table_name = p_table AND s.record_id = p_record
       AND s.space_id = p_space AND s.created_at < p_before
     ORDER BY s.created_at DESC
     LIMIT p_limit;
  PERFORM pg_catalog.set_config('app.current_user_space_ids', coalesce(outer_spaces, ''), true);
  PERFORM pg_catalog.set_config('app.current_user_id', coalesce(outer_user, ''), true);
  RETURN;
END $$;
REVOKE ALL ON FUNCTION mana_ai.read_space_record(TEXT, TEXT, TEXT, TEXT, TIMESTAMPTZ, INT) FROM PUBLIC;

CREATE OR REPLACE FUNCTION mana_ai.write_back_run_in_space(
  p_space TEXT, p_user TEXT, p_mission TEXT, p_due TIMESTAMPTZ, p_runner TEXT, p_status TEXT,
  p_error TEXT, p_data JSONB, p_field_meta JSONB, p_actor JSONB, p_client_id TEXT)
RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = pg_catalog AS $$
BEGIN
  IF coalesce(p_user, '') = '' THEN
    RAISE EXCEPTION 'withUser: empty userID' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF coalesce(p_space, '') = '' THEN
    RAISE EXCEPTION 'mana_ai.write_back_run_in_space: empty space id'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_status IS NULL OR p_status NOT IN ('written', 'failed') THEN
    RAISE EXCEPTION 'mana_ai.write_back_run_in_space: bad status %', p_status
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM set_config('app.current_user_id', p_user, true);
  UPDATE mana_ai.mission_runs r
     SET status = p_status, finished_at = now(), error = p_error
   WHERE r.user_id = p_user AND r.mission_id = p_mission AND r.due_at = p_due
     AND r.status = 'running' AND r.runner_id = p_runner;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  INSERT INTO public.sync_changes
      (app_id, table_name, record_id, user_id, op, data, field_meta, client_id,
       schema_version, actor, origin, space_id)
  VALUES ('ai', 'aiMissions', p_mission, p_user, 'update', p_data, p_field_meta, p_client_id,
          1, p_actor, 'agent', p_space);
  RETURN true;
END $$;
REVOKE ALL ON FUNCTION mana_ai.write_back_run_in_space(TEXT, TEXT, TEXT, TIMESTAMPTZ, TEXT, TEXT, TEXT, JSONB, JSONB, JSONB, TEXT) FROM PUBLIC;
