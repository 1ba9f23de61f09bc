-- The write-back's write, in one statement (see write_back.rs), the one owner of the
-- stamps it writes, and generic plans for every function a mission run calls.

-- The `field_meta` stamp of a runner write: the database clock (the transaction start,
-- like `created_at`), but never earlier than `p_floor` (the stamp of the value merged in,
-- plus 1 ms), in the web app's ISO form (`2026-12-02T04:28:24.123Z`: UTC, milliseconds
-- truncated, as `Date.toISOString` and the runner's `to_iso_ms` write).
-- (plpgsql: its expression is planned once per session; a SQL function with a SET clause
-- would be planned on every call.)
CREATE OR REPLACE FUNCTION mana_ai.write_stamp(p_floor TIMESTAMPTZ)
RETURNS TEXT
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
BEGIN
  RETURN to_char(greatest(now(), p_floor) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"');
END $$;
REVOKE ALL ON FUNCTION mana_ai.write_stamp(TIMESTAMPTZ) FROM PUBLIC;

-- Closes this runner's `running` claim and inserts the mission row `p_data` (the merged
-- `iterations` and/or `nextRunAt`), stamped by `mana_ai.write_stamp` for each of those two
-- fields present in `p_data`; `p_space` set: the row carries that `space_id` (a shared-space
-- mission). Answers:
--   'written' — done;
--   'lost'    — the claim is not this runner's any more: nothing written;
--   'stale'   — only with `p_version` set: the mission changed since the runner loaded
--               its snapshot (the snapshot's `updated_at` is not `p_version`, or the log
--               holds a row of the mission the snapshot has not folded in, i.e. newer than
--               its `last_applied_at`): nothing written; the caller merges instead.
-- With `p_version` NULL the caller has already merged inside this transaction
-- (`mana_ai.write_back_current` holds the claim and snapshot locks).
-- Locks in the same order as `write_back_current` (claim, then snapshot), so two
-- write-backs of one mission run one after the other; each statement below sees rows
-- committed before it started (READ COMMITTED), so a write-back that waited on the
-- snapshot lock sees the other's row and answers 'stale'.
CREATE OR REPLACE FUNCTION mana_ai.write_back_commit(
  p_user TEXT, p_mission TEXT, p_due TIMESTAMPTZ, p_runner TEXT, p_status TEXT,
  p_error TEXT, p_data JSONB, p_iterations_floor TIMESTAMPTZ, p_next_floor TIMESTAMPTZ,
  p_actor JSONB, p_client_id TEXT, p_space TEXT, p_version TIMESTAMPTZ)
RETURNS TEXT
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog SET plan_cache_mode = force_generic_plan AS $$
DECLARE
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
    PERFORM 1 FROM public.sync_changes x
     WHERE x.table_name = 'aiMissions' AND x.record_id = p_mission
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

-- The functions of one mission run look rows up by key only, so one generic plan per
-- statement serves every call. PostgreSQL would otherwise re-plan their statements on
-- every call (a custom plan with the call's values, costed against the generic one),
-- which took more time than running them: claim_run 557 → 183 µs per call measured
-- (docs/benchmarks.md).
ALTER FUNCTION mana_ai.claim_run(TEXT, TEXT, TIMESTAMPTZ, TEXT, TEXT, BIGINT, TEXT, FLOAT8)
  SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION mana_ai.reserve_tokens(TEXT, TEXT, TEXT, BIGINT, BIGINT, FLOAT8, BIGINT)
  SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION mana_ai.write_back_current(TEXT, TEXT, TIMESTAMPTZ, TEXT)
  SET plan_cache_mode = force_generic_plan;
