-- Privileged part: the `SECURITY DEFINER` change-discovery functions. Their index on
-- `sync_changes` is built by its own step, `CREATE INDEX CONCURRENTLY` outside any
-- transaction (see `sync_changes_index.sql`).
--
-- * `mana_ai.change_horizon()` returns the instant before which every transaction that
--   could still insert into `sync_changes` has finished: the oldest `xact_start` of any
--   other open transaction in this database (capped at `clock_timestamp()` minus a
--   safety margin). `created_at` defaults to `now()`, the transaction start, so a row
--   whose `created_at` lies before the horizon is either already visible or never will
--   be. It reads only start times from `pg_stat_activity`, nothing else.
-- * `mana_ai.changed_ai_records(from, to)` returns only `(user_id, table_name,
--   record_id, last_at)` for `app_id = 'ai'` missions and agents with
--   `from <= created_at < to` — ids and positions, never contents.
-- * `mana_ai.changed_ai_users(from, to)` returns only `(user_id, row_count)` for the
--   same rows — which users to read, and how many rows each, never contents.
-- * `mana_ai.change_batch_end(from, to, n)` bounds one refresh window to about `n` rows.
DROP FUNCTION IF EXISTS mana_ai.change_horizon();
CREATE OR REPLACE FUNCTION mana_ai.change_horizon(p_margin INTERVAL) RETURNS TIMESTAMPTZ
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  oldest TIMESTAMPTZ;
  -- Read the clock BEFORE the activity snapshot: a transaction that starts after this
  -- instant stamps its rows later than any horizon returned here.
  clock TIMESTAMPTZ := pg_catalog.clock_timestamp();
BEGIN
  IF current_setting('track_activities')::boolean IS NOT TRUE THEN
    RAISE EXCEPTION 'mana_ai.change_horizon: track_activities is off; change discovery cannot prove that no open transaction will still insert rows';
  END IF;
  SELECT min(a.xact_start) INTO oldest
    FROM pg_catalog.pg_stat_activity a
   WHERE a.datname = current_database()
     AND a.pid <> pg_catalog.pg_backend_pid()
     AND a.backend_type = 'client backend'
     AND a.xact_start IS NOT NULL;
  -- The margin covers the microseconds between a backend taking its start time and
  -- publishing it in pg_stat_activity.
  RETURN least(clock - greatest(p_margin, interval '0'), oldest);
END $$;

CREATE OR REPLACE FUNCTION mana_ai.changed_ai_records(p_from TIMESTAMPTZ, p_to TIMESTAMPTZ)
RETURNS TABLE (user_id TEXT, table_name TEXT, record_id TEXT, last_at TIMESTAMPTZ)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
  SELECT s.user_id, s.table_name, s.record_id, max(s.created_at)
    FROM public.sync_changes s
   WHERE s.app_id = 'ai' AND s.table_name IN ('aiMissions', 'agents')
     AND s.created_at >= p_from AND s.created_at < p_to
   GROUP BY s.user_id, s.table_name, s.record_id
$$;

CREATE OR REPLACE FUNCTION mana_ai.changed_ai_users(p_from TIMESTAMPTZ, p_to TIMESTAMPTZ)
RETURNS TABLE (user_id TEXT, row_count BIGINT)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
  SELECT s.user_id, count(*)
    FROM public.sync_changes s
   WHERE s.app_id = 'ai' AND s.table_name IN ('aiMissions', 'agents')
     AND s.created_at >= p_from AND s.created_at < p_to
   GROUP BY s.user_id
$$;

CREATE OR REPLACE FUNCTION mana_ai.change_batch_end(p_from TIMESTAMPTZ, p_to TIMESTAMPTZ, p_rows INT)
RETURNS TIMESTAMPTZ
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  cut TIMESTAMPTZ;
BEGIN
  SELECT s.created_at INTO cut
    FROM public.sync_changes s
   WHERE s.app_id = 'ai' AND s.table_name IN ('aiMissions', 'agents')
     AND s.created_at >= p_from AND s.created_at < p_to
   ORDER BY s.created_at
  OFFSET p_rows LIMIT 1;
  IF cut IS NULL THEN
    RETURN p_to;
  END IF;
  IF cut = p_from THEN
    -- one instant holds more than p_rows rows: take that instant whole
    SELECT min(s.created_at) INTO cut
      FROM public.sync_changes s
     WHERE s.app_id = 'ai' AND s.table_name IN ('aiMissions', 'agents')
       AND s.created_at > p_from AND s.created_at < p_to;
    RETURN coalesce(cut, p_to);
  END IF;
  RETURN cut;
END $$;

REVOKE ALL ON FUNCTION mana_ai.change_horizon(INTERVAL) FROM PUBLIC;
REVOKE ALL ON FUNCTION mana_ai.changed_ai_records(TIMESTAMPTZ, TIMESTAMPTZ) FROM PUBLIC;
REVOKE ALL ON FUNCTION mana_ai.change_batch_end(TIMESTAMPTZ, TIMESTAMPTZ, INT) FROM PUBLIC;
REVOKE ALL ON FUNCTION mana_ai.changed_ai_users(TIMESTAMPTZ, TIMESTAMPTZ) FROM PUBLIC;
