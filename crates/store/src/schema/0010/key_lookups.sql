-- Per-mission statements that scanned every due mission, or every write-back since the
-- last refresh, instead of one mission's rows. A generic plan is made without the call's
-- values, and where a partial index matched the statement's constants PostgreSQL picked
-- it over the key index (both costed at one row):
--   * the due mission's load used the due-time index `idx_mission_snapshots_due_at`:
--     every mission due at the same instant (every mission of an hourly cadence) was
--     read for each load;
--   * the claim's count of the agent's older due runs used the same index (ANDed with
--     the user's): every due mission of every user was read for each claim;
--   * the probes of `sync_changes` for one mission's rows newer than a point in time
--     used the change-discovery index `mana_ai_sync_changes_ai_position` (created_at
--     only): every runner write since that point was read for each write-back.
-- The load now looks the snapshot up by its key alone and checks state, deletion and due
-- time on the row it found. The claim names the state `active` through a plpgsql
-- constant (`v_active`), a parameter of the generic plan: the due-time index (partial on
-- `state = 'active'`) cannot be proven to apply, so the count reads the user's snapshots
-- only. The probes name the table through a plpgsql constant
-- (`v_table`), a parameter of the generic plan: the partial indexes on
-- `table_name IN ('aiMissions', 'agents')` cannot be proven to apply, so the plan uses an
-- index on the mission's or the user's rows (`idx_sync_changes_table_record` or
-- `idx_sync_changes_since`). The three functions are otherwise unchanged (migrations 1, 7
-- and 8; `claim_run`, `write_back_current` keep the generic plans of migration 8).

-- The due mission's snapshot, when it is still active, live and due at `p_due`
-- (`Store::load_due_mission`).
CREATE OR REPLACE FUNCTION mana_ai.load_due_mission(p_user TEXT, p_mission TEXT, p_due TIMESTAMPTZ)
RETURNS TABLE (record JSONB, updated_at TIMESTAMPTZ)
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  v_record JSONB;
  v_updated TIMESTAMPTZ;
  v_state TEXT;
  v_deleted BOOLEAN;
  v_next TIMESTAMPTZ;
BEGIN
  -- By the key only (see the top of this file).
  SELECT s.record, s.updated_at, s.state, s.deleted, s.next_run_at
    INTO v_record, v_updated, v_state, v_deleted, v_next
    FROM mana_ai.mission_snapshots s
   WHERE s.user_id = p_user AND s.mission_id = p_mission;
  IF FOUND AND v_state = 'active' AND NOT v_deleted AND v_next = p_due THEN
    record := v_record;
    updated_at := v_updated;
    RETURN NEXT;
  END IF;
END $$;
REVOKE ALL ON FUNCTION mana_ai.load_due_mission(TEXT, TEXT, TIMESTAMPTZ) FROM PUBLIC;

-- The one-statement write-back (migration 8, write_back_commit.sql).
CREATE OR REPLACE FUNCTION mana_ai.write_back_commit(
  p_user TEXT, p_mission TEXT, p_due TIMESTAMPTZ, p_runner TEXT, p_status TEXT,
  p_error TEXT, p_data JSONB, p_iterations_floor TIMESTAMPTZ, p_next_floor TIMESTAMPTZ,
  p_actor JSONB, p_client_id TEXT, p_space TEXT, p_version TIMESTAMPTZ)
RETURNS TEXT
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  v_table CONSTANT TEXT := 'aiMissions';
  v_updated TIMESTAMPTZ;
  v_applied TIMESTAMPTZ;
BEGIN
  IF coalesce(p_user, '') = '' THEN
    RAISE EXCEPTION 'withUser: empty userID' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_status IS NULL OR p_status NOT IN ('written', 'failed') THEN
    RAISE EXCEPTION 'mana_ai.write_back_commit: bad status %', p_status
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_space = '' THEN
    RAISE EXCEPTION 'mana_ai.write_back_commit: empty space id'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF jsonb_typeof(p_data) IS DISTINCT FROM 'object' THEN
    RAISE EXCEPTION 'mana_ai.write_back_commit: data is not an object'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM set_config('app.current_user_id', p_user, true);
  PERFORM 1 FROM mana_ai.mission_runs r
   WHERE r.user_id = p_user AND r.mission_id = p_mission AND r.due_at = p_due
     AND r.status = 'running' AND r.runner_id = p_runner
     FOR UPDATE;
  IF NOT FOUND THEN
    RETURN 'lost';
  END IF;
  IF p_version IS NOT NULL THEN
    SELECT s.updated_at, s.last_applied_at INTO v_updated, v_applied
      FROM mana_ai.mission_snapshots s
     WHERE s.user_id = p_user AND s.mission_id = p_mission
       FOR UPDATE;
    IF NOT FOUND OR v_updated IS DISTINCT FROM p_version THEN
      RETURN 'stale';
    END IF;
    -- `v_table`, not a literal: see the top of this file.
    PERFORM 1 FROM public.sync_changes x
     WHERE x.table_name = v_table AND x.record_id = p_mission
       AND x.user_id = p_user AND x.app_id = 'ai'
       AND x.created_at > v_applied
     LIMIT 1;
    IF FOUND THEN
      RETURN 'stale';
    END IF;
  END IF;
  UPDATE mana_ai.mission_runs r
     SET status = p_status, finished_at = now(), error = p_error
   WHERE r.user_id = p_user AND r.mission_id = p_mission AND r.due_at = p_due
     AND r.status = 'running' AND r.runner_id = p_runner;
  INSERT INTO public.sync_changes
      (app_id, table_name, record_id, user_id, op, data, field_meta, client_id,
       schema_version, actor, origin, space_id)
  VALUES ('ai', 'aiMissions', p_mission, p_user, 'update', p_data,
          jsonb_strip_nulls(jsonb_build_object(
            'iterations', CASE WHEN p_data ? 'iterations'
                               THEN mana_ai.write_stamp(p_iterations_floor) END,
            'nextRunAt', CASE WHEN p_data ? 'nextRunAt'
                              THEN mana_ai.write_stamp(p_next_floor) END)),
          p_client_id, 1, p_actor, 'agent', p_space);
  RETURN 'written';
END $$;
REVOKE ALL ON FUNCTION mana_ai.write_back_commit(TEXT, TEXT, TIMESTAMPTZ, TEXT, TEXT, TEXT, JSONB, TIMESTAMPTZ, TIMESTAMPTZ, JSONB, TEXT, TEXT, TIMESTAMPTZ) FROM PUBLIC;

-- The merging write-back's read (migration 7, write_back.sql).
CREATE OR REPLACE FUNCTION mana_ai.write_back_current(
  p_user TEXT, p_mission TEXT, p_due TIMESTAMPTZ, p_runner TEXT)
RETURNS TABLE (kind TEXT, op TEXT, data JSONB, field_meta JSONB, row_at TIMESTAMPTZ)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  v_table CONSTANT TEXT := 'aiMissions';
  v_cursor TIMESTAMPTZ;
BEGIN
  IF coalesce(p_user, '') = '' THEN
    RAISE EXCEPTION 'withUser: empty userID' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM set_config('app.current_user_id', p_user, true);
  PERFORM 1 FROM mana_ai.mission_runs r
   WHERE r.user_id = p_user AND r.mission_id = p_mission AND r.due_at = p_due
     AND r.status = 'running' AND r.runner_id = p_runner
     FOR UPDATE;
  IF NOT FOUND THEN
    RETURN QUERY SELECT 'lost'::TEXT, NULL::TEXT, NULL::JSONB, NULL::JSONB, now();
    RETURN;
  END IF;
  RETURN QUERY SELECT 'now'::TEXT, NULL::TEXT, NULL::JSONB, NULL::JSONB, now();
  RETURN QUERY
    SELECT 'snapshot'::TEXT,
           CASE WHEN s.deleted THEN 'delete' ELSE 'insert' END,
           coalesce(mana_ai.write_back_fields(s.record,
                      ARRAY['iterations', 'nextRunAt', 'deletedAt']), '{}'::JSONB)
             || jsonb_build_object('__fieldMeta', coalesce(mana_ai.write_back_fields(
                  s.record -> '__fieldMeta', ARRAY['iterations', 'nextRunAt']), '{}'::JSONB)),
           NULL::JSONB, s.last_applied_at
      FROM mana_ai.mission_snapshots s
     WHERE s.user_id = p_user AND s.mission_id = p_mission
       FOR UPDATE;
  SELECT c.position INTO v_cursor FROM mana_ai.refresh_cursor c WHERE c.stream = 'ai';
  -- `v_table`, not a literal: see the top of this file.
  RETURN QUERY
    SELECT 'row'::TEXT, x.op,
           mana_ai.write_back_fields(x.data, ARRAY['iterations', 'nextRunAt', 'deletedAt']),
           mana_ai.write_back_fields(x.field_meta, ARRAY['iterations', 'nextRunAt']),
           x.created_at
      FROM public.sync_changes x
     WHERE x.user_id = p_user AND x.app_id = 'ai' AND x.table_name = v_table
       AND x.record_id = p_mission
       AND x.created_at >= coalesce(v_cursor, '-infinity'::TIMESTAMPTZ);
END $$;
REVOKE ALL ON FUNCTION mana_ai.write_back_current(TEXT, TEXT, TIMESTAMPTZ, TEXT) FROM PUBLIC;

-- The claim on one due run (migration 1, runs.sql; the lock seed is filled in).
CREATE OR REPLACE FUNCTION mana_ai.claim_run(
  p_user TEXT, p_mission TEXT, p_due TIMESTAMPTZ, p_iteration TEXT, p_agent TEXT,
  p_max_concurrent BIGINT, p_runner TEXT, p_lease_secs FLOAT8)
RETURNS TEXT
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  v_active CONSTANT TEXT := 'active';
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
  -- `v_active`, not a literal: see the top of this file.
  SELECT count(*) INTO v_older FROM (
    SELECT 1 FROM mana_ai.mission_snapshots s
     WHERE s.user_id = p_user AND s.state = v_active AND NOT s.deleted
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
