-- The keys `p_keys` of a JSON object (NULL when `p_obj` is not an object or has none of
-- them): the projection `write_back_current` applies to data, field_meta and snapshots.
CREATE OR REPLACE FUNCTION mana_ai.write_back_fields(p_obj JSONB, p_keys TEXT[])
RETURNS JSONB
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog AS $$
  SELECT CASE WHEN jsonb_typeof(p_obj) = 'object' THEN
           (SELECT jsonb_object_agg(k, p_obj -> k) FROM unnest(p_keys) AS k WHERE p_obj ? k)
         END
$$;
REVOKE ALL ON FUNCTION mana_ai.write_back_fields(JSONB, TEXT[]) FROM PUBLIC;

-- The merging write-back's read (see runs.rs): inside the write-back transaction,
-- `mana_ai.write_back_current` scopes the transaction to the user (the withUser rule:
-- an empty id is refused, `app.current_user_id` is set transaction-locally), locks this
-- runner's `running` claim (FOR UPDATE: the claim cannot be taken over or closed until
-- the transaction ends) and returns what the merge needs, as rows of
-- (kind, op, data, field_meta, row_at):
--   'lost'     — the claim is not this runner's any more: nothing else follows;
--   'now'      — `row_at` is the database clock (the transaction start, like created_at);
--   'snapshot' — the mission snapshot, projected to the fields the merge reads
--                (`op` 'delete' for a deleted snapshot); its row is locked until the
--                transaction ends, so two write-backs of one mission (runs of different
--                due times) merge one after the other, never over each other;
--   'row'      — every sync_changes row of the mission at or after the refresh cursor
--                (the snapshot holds everything before it; overlap is harmless, the merge
--                is idempotent), projected the same way.
-- The projection keeps `iterations`, `nextRunAt` and `deletedAt` of `data` (and of the
-- snapshot record) and their `field_meta` stamps; the LWW merge of those fields is the
-- same as over whole rows, because every field is merged on its own. SECURITY INVOKER:
-- row-level security applies to the read exactly as to a withUser transaction.
CREATE OR REPLACE FUNCTION mana_ai.write_back_current(
  p_user TEXT, p_mission TEXT, p_due TIMESTAMPTZ, p_runner TEXT)
RETURNS TABLE (kind TEXT, op TEXT, data JSONB, field_meta JSONB, row_at TIMESTAMPTZ)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = pg_catalog AS $$
DECLARE
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
  RETURN QUERY
    SELECT 'row'::TEXT, x.op,
           mana_ai.write_back_fields(x.data, ARRAY['iterations', 'nextRunAt', 'deletedAt']),
           mana_ai.write_back_fields(x.field_meta, ARRAY['iterations', 'nextRunAt']),
           x.created_at
      FROM public.sync_changes x
     WHERE x.user_id = p_user AND x.app_id = 'ai' AND x.table_name = 'aiMissions'
       AND x.record_id = p_mission
       AND x.created_at >= coalesce(v_cursor, '-infinity'::TIMESTAMPTZ);
END $$;
REVOKE ALL ON FUNCTION mana_ai.write_back_current(TEXT, TEXT, TIMESTAMPTZ, TEXT) FROM PUBLIC;

