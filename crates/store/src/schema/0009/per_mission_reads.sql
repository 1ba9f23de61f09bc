-- The statements a mission run sends besides the migration-8 functions, as functions with
-- generic plans. Sent as plain prepared statements, PostgreSQL planned them anew on every
-- call (it kept choosing custom plans), which cost about as much as running them.

-- The due mission's snapshot, when it is still active, live and due at `p_due`
-- (`Store::load_due_mission`).
CREATE OR REPLACE FUNCTION mana_ai.load_due_mission(p_user TEXT, p_mission TEXT, p_due TIMESTAMPTZ)
RETURNS TABLE (record JSONB, updated_at TIMESTAMPTZ)
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog SET plan_cache_mode = force_generic_plan AS $$
BEGIN
  RETURN QUERY
    SELECT s.record, s.updated_at FROM mana_ai.mission_snapshots s
     WHERE s.user_id = p_user AND s.mission_id = p_mission AND s.state = 'active'
       AND NOT s.deleted AND s.next_run_at = p_due;
END $$;
REVOKE ALL ON FUNCTION mana_ai.load_due_mission(TEXT, TEXT, TIMESTAMPTZ) FROM PUBLIC;

-- Booked usage (24 h) and unexpired reservations of one agent (`Store::agent_budget_use`).
CREATE OR REPLACE FUNCTION mana_ai.committed_tokens(p_user TEXT, p_agent TEXT)
RETURNS TABLE (used_24h BIGINT, reserved BIGINT)
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog SET plan_cache_mode = force_generic_plan AS $$
BEGIN
  RETURN QUERY
    SELECT (SELECT COALESCE(SUM(u.tokens_used), 0)::bigint FROM mana_ai.token_usage u
             WHERE u.user_id = p_user AND u.agent_id = p_agent
               AND u.ts > now() - interval '24 hours'),
           (SELECT COALESCE(SUM(r.tokens), 0)::bigint FROM mana_ai.token_reservations r
             WHERE r.user_id = p_user AND r.agent_id = p_agent AND r.expires_at > now());
END $$;
REVOKE ALL ON FUNCTION mana_ai.committed_tokens(TEXT, TEXT) FROM PUBLIC;

-- Replaces a reservation by the real usage of its call, atomically: the reservation (if
-- given and still present) goes, `p_tokens` (if > 0) are booked (`Store::settle_tokens`).
CREATE OR REPLACE FUNCTION mana_ai.settle_tokens(
  p_reservation BIGINT, p_user TEXT, p_agent TEXT, p_mission TEXT, p_tokens INT)
RETURNS VOID
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog SET plan_cache_mode = force_generic_plan AS $$
BEGIN
  DELETE FROM mana_ai.token_reservations WHERE id = p_reservation;
  IF p_tokens > 0 THEN
    INSERT INTO mana_ai.token_usage (user_id, agent_id, mission_id, tokens_used)
    VALUES (p_user, p_agent, p_mission, p_tokens);
  END IF;
END $$;
REVOKE ALL ON FUNCTION mana_ai.settle_tokens(BIGINT, TEXT, TEXT, TEXT, INT) FROM PUBLIC;
