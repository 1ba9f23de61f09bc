-- A token reservation in ONE statement (see budget.rs): under the (user, agent)
-- advisory lock, sum booked usage of the rolling 24 h and unexpired reservations, and
-- insert the reservation only while that sum is below the cap. SECURITY INVOKER.
-- Answers the new reservation id (NULL when denied) and the two sums.
CREATE OR REPLACE FUNCTION mana_ai.reserve_tokens(
  p_user TEXT, p_agent TEXT, p_mission TEXT, p_cap BIGINT, p_estimate BIGINT,
  p_ttl_secs FLOAT8, p_lock_seed BIGINT)
RETURNS TABLE (reservation_id BIGINT, used_24h BIGINT, reserved BIGINT)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = pg_catalog AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended(p_user || chr(31) || p_agent, p_lock_seed));
  SELECT (SELECT COALESCE(SUM(u.tokens_used), 0)::bigint FROM mana_ai.token_usage u
           WHERE u.user_id = p_user AND u.agent_id = p_agent
             AND u.ts > now() - interval '24 hours'),
         (SELECT COALESCE(SUM(r.tokens), 0)::bigint FROM mana_ai.token_reservations r
           WHERE r.user_id = p_user AND r.agent_id = p_agent AND r.expires_at > now())
    INTO used_24h, reserved;
  reservation_id := NULL;
  IF greatest(used_24h, 0) + greatest(reserved, 0) < p_cap THEN
    INSERT INTO mana_ai.token_reservations (user_id, agent_id, mission_id, tokens, expires_at)
    VALUES (p_user, p_agent, p_mission, p_estimate, now() + make_interval(secs => p_ttl_secs))
    RETURNING id INTO reservation_id;
  END IF;
  RETURN NEXT;
END $$;
REVOKE ALL ON FUNCTION mana_ai.reserve_tokens(TEXT, TEXT, TEXT, BIGINT, BIGINT, FLOAT8, BIGINT) FROM PUBLIC;

