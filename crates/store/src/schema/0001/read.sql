-- The refresh's row read: `mana_ai.read_ai_rows(users, from, to)`, a `SECURITY
-- INVOKER` function (it runs with the caller's rights, so row-level security on
-- `sync_changes` applies to the service role exactly as for its own queries). For each
-- user in turn it does what a `withUser` transaction does — refuses an empty id and
-- sets `app.current_user_id` transaction-locally — and reads that user's `ai` mission
-- and agent rows in `[from, to)`; the `user_id = uid` filter also keeps rows that a
-- space-membership policy would show out of another user's answer. At the end the
-- caller's scope is restored. One call replaces two statements per user, and its
-- query is planned once per session (`plan_cache_mode = force_generic_plan`: the
-- query always pins one user, so the generic plan is the per-user index scan; the
-- session's `force_custom_plan` guard is for record-id lookups, which this is not).
CREATE OR REPLACE FUNCTION mana_ai.read_ai_rows(p_users TEXT[], p_from TIMESTAMPTZ, p_to TIMESTAMPTZ)
RETURNS TABLE (user_id TEXT, table_name TEXT, record_id TEXT, op TEXT, data JSONB,
               field_meta JSONB, created_at TIMESTAMPTZ)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  uid TEXT;
  outer_scope TEXT := pg_catalog.current_setting('app.current_user_id', true);
BEGIN
  FOREACH uid IN ARRAY coalesce(p_users, '{}'::TEXT[]) LOOP
    IF uid IS NULL OR uid = '' THEN
      RAISE EXCEPTION 'mana_ai.read_ai_rows: withUser: empty userID'
        USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_catalog.set_config('app.current_user_id', uid, true);
    RETURN QUERY
      SELECT s.user_id, s.table_name, s.record_id, s.op, s.data, s.field_meta, s.created_at
        FROM public.sync_changes s
       WHERE s.user_id = uid AND s.app_id = 'ai'
         AND s.table_name IN ('aiMissions', 'agents')
         AND s.created_at >= p_from AND s.created_at < p_to;
  END LOOP;
  PERFORM pg_catalog.set_config('app.current_user_id', coalesce(outer_scope, ''), true);
  RETURN;
END $$;
REVOKE ALL ON FUNCTION mana_ai.read_ai_rows(TEXT[], TIMESTAMPTZ, TIMESTAMPTZ) FROM PUBLIC;
