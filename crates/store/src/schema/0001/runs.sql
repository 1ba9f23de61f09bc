-- The claim on one due run, in ONE statement (see runs.rs for the rules). SECURITY
-- INVOKER: it runs with the caller's privileges, so row-level security and grants apply
-- exactly as to the statements it replaces. Serialised per (user, agent) by a
-- transaction-level advisory lock; every statement after the lock takes a fresh
-- snapshot (VOLATILE, READ COMMITTED), so it sees the previous holder's claim.
-- Answers 'claimed', 'done' (written back or failed), 'held' (another runner's
-- unexpired claim) or 'busy' (no free agent slot, or older due runs come first).
-- `p_agent` is the resolved agent id: the snapshots' `agent_id` column holds the same
-- (the default agent's id for missions without `agentId`), so one comparison finds the
-- agent's missions. The lock seed is store::locks::CLAIM_SEED, formatted in by the
-- migration. The version with a `p_explicit_agent` flag is replaced.
DROP FUNCTION IF EXISTS mana_ai.claim_run(TEXT, TEXT, TIMESTAMPTZ, TEXT, TEXT, BIGINT, BOOLEAN, TEXT, FLOAT8);
CREATE OR REPLACE FUNCTION mana_ai.claim_run(
  p_user TEXT, p_mission TEXT, p_due TIMESTAMPTZ, p_iteration TEXT, p_agent TEXT,
  p_max_concurrent BIGINT, p_runner TEXT, p_lease_secs FLOAT8)
RETURNS TEXT
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = pg_catalog AS $$
DECLARE
  v_status TEXT;
  v_runner TEXT;
  v_expired BOOLEAN;
  v_free BIGINT;
  v_older BIGINT;
BEGIN
  IF coalesce(p_user, '') = '' THEN
    RAISE EXCEPTION 'mana_ai.claim_run: empty user id' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM pg_advisory_xact_lock(hashtextextended(p_user || chr(31) || p_agent, {claim_seed}));
  SELECT r.status, r.runner_id, r.lease_until < now()
    INTO v_status, v_runner, v_expired
    FROM mana_ai.mission_runs r
   WHERE r.user_id = p_user AND r.mission_id = p_mission AND r.due_at = p_due
     FOR UPDATE;
  IF FOUND THEN
    IF v_status <> 'running' THEN
      RETURN 'done';
    END IF;
    IF v_runner <> p_runner AND NOT v_expired THEN
      RETURN 'held';
    END IF;
  END IF;
  -- Free slots: the agent's limit minus its other unexpired running claims.
  SELECT p_max_concurrent - count(*) INTO v_free
    FROM mana_ai.mission_runs r
   WHERE r.user_id = p_user AND r.agent_id = p_agent AND r.status = 'running'
     AND r.lease_until >= now()
     AND NOT (r.mission_id = p_mission AND r.due_at = p_due);
  IF v_free <= 0 THEN
    RETURN 'busy';
  END IF;
  -- Oldest due first: the slot goes to this run only if fewer older due runs of the
  -- same agent wait (due, unclaimed or with an expired claim) than there are free
  -- slots. Missions waiting for a deep-research job do not hold others back. Counting
  -- stops at v_free: more cannot change the answer.
  SELECT count(*) INTO v_older FROM (
    SELECT 1 FROM mana_ai.mission_snapshots s
     WHERE s.user_id = p_user AND s.state = 'active' AND NOT s.deleted
       AND s.next_run_at IS NOT NULL
       AND (s.next_run_at, s.mission_id) < (p_due, p_mission)
       AND s.agent_id = p_agent
       AND NOT EXISTS (
           SELECT 1 FROM mana_ai.mission_runs r
            WHERE r.user_id = s.user_id AND r.mission_id = s.mission_id
              AND r.due_at = s.next_run_at
              AND (r.status <> 'running' OR r.lease_until >= now()))
       AND NOT EXISTS (
           SELECT 1 FROM mana_ai.mission_research_jobs j
            WHERE j.user_id = s.user_id AND j.mission_id = s.mission_id)
     LIMIT v_free) older;
  IF v_older >= v_free THEN
    RETURN 'busy';
  END IF;
  INSERT INTO mana_ai.mission_runs
      (user_id, mission_id, due_at, iteration_id, agent_id, status, runner_id, lease_until)
  VALUES (p_user, p_mission, p_due, p_iteration, p_agent, 'running', p_runner,
          now() + make_interval(secs => p_lease_secs))
  ON CONFLICT (user_id, mission_id, due_at) DO UPDATE
    SET runner_id = EXCLUDED.runner_id, lease_until = EXCLUDED.lease_until,
        started_at = now();
  RETURN 'claimed';
END $$;
REVOKE ALL ON FUNCTION mana_ai.claim_run(TEXT, TEXT, TIMESTAMPTZ, TEXT, TEXT, BIGINT, TEXT, FLOAT8) FROM PUBLIC;

-- The exactly-once write-back in ONE statement: scopes the transaction to the user
-- (`app.current_user_id`, transaction-local, as a withUser transaction does; an empty
-- user id is refused), closes this runner's `running` claim and inserts the iteration
-- row. SECURITY INVOKER, so the insert passes the sync_changes RLS policy as the service
-- role. The UPDATE takes the claim's row lock and re-checks ownership on the newest row
-- version, so a claim taken over in the meantime writes nothing (returns false).
CREATE OR REPLACE FUNCTION mana_ai.write_back_run(
  p_user TEXT, p_mission TEXT, p_due TIMESTAMPTZ, p_runner TEXT, p_status TEXT,
  p_error TEXT, p_data JSONB, p_field_meta JSONB, p_actor JSONB, p_client_id TEXT)
RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = pg_catalog AS $$
BEGIN
  IF coalesce(p_user, '') = '' THEN
    RAISE EXCEPTION 'withUser: empty userID' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_status IS NULL OR p_status NOT IN ('written', 'failed') THEN
    RAISE EXCEPTION 'mana_ai.write_back_run: bad status %', p_status
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
       schema_version, actor, origin)
  VALUES ('ai', 'aiMissions', p_mission, p_user, 'update', p_data, p_field_meta, p_client_id,
          1, p_actor, 'agent');
  RETURN true;
END $$;
REVOKE ALL ON FUNCTION mana_ai.write_back_run(TEXT, TEXT, TIMESTAMPTZ, TEXT, TEXT, TEXT, JSONB, JSONB, JSONB, TEXT) FROM PUBLIC;

