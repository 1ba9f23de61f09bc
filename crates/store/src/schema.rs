//! Schema management: the `mana_ai` schema (idempotent, versioned migration), the
//! privileged change-discovery functions, and — for dev and tests only — the
//! `sync_changes` table that normally belongs to the sync server.
//!
//! Two roles are involved:
//! * the **migration role** (superuser or `BYPASSRLS` + `pg_read_all_stats`) owns the
//!   `SECURITY DEFINER` functions that let the service discover *which* records changed
//!   across users without reading their contents;
//! * the **service role** (ordinary, no `BYPASSRLS`) does everything else, always inside
//!   a `withUser` scope when it touches a user's rows — a [`crate::UserTx`], or for the
//!   refresh's bulk read the `SECURITY INVOKER` function `mana_ai.read_ai_rows`, which
//!   sets that scope per user inside the database (row-level security stays in force).
//!
//! When both are the same role (the original's single-DSN deployment) the migration
//! still works if that role is privileged; if it is not, [`verify_discovery`] fails boot
//! with a clear message instead of letting the service silently see nothing.

use tokio_postgres::Client;

use crate::StoreError;

/// DDL of `sync_changes` exactly as the sync server creates it (data-model §1.1).
/// Only `mana-ai dev` and the tests run this; in production the sync server owns it.
pub const SYNC_CHANGES_DDL: &str = r#"
CREATE TABLE IF NOT EXISTS sync_changes (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  app_id TEXT NOT NULL,
  table_name TEXT NOT NULL,
  record_id TEXT NOT NULL,
  user_id TEXT NOT NULL,
  op TEXT NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
  data JSONB,
  field_meta JSONB DEFAULT '{}',
  client_id TEXT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  schema_version INT NOT NULL DEFAULT 1,
  actor JSONB,
  origin TEXT,
  space_id TEXT
);
ALTER TABLE sync_changes ADD COLUMN IF NOT EXISTS schema_version INT NOT NULL DEFAULT 1;
ALTER TABLE sync_changes ADD COLUMN IF NOT EXISTS actor JSONB;
ALTER TABLE sync_changes ADD COLUMN IF NOT EXISTS origin TEXT;
ALTER TABLE sync_changes ADD COLUMN IF NOT EXISTS space_id TEXT;
CREATE INDEX IF NOT EXISTS idx_sync_changes_user_app ON sync_changes (user_id, app_id, created_at);
CREATE INDEX IF NOT EXISTS idx_sync_changes_table_record ON sync_changes (table_name, record_id, created_at);
CREATE INDEX IF NOT EXISTS idx_sync_changes_since ON sync_changes (user_id, app_id, table_name, created_at);
CREATE INDEX IF NOT EXISTS idx_sync_changes_user_space_app_since ON sync_changes (user_id, space_id, app_id, created_at) WHERE space_id IS NOT NULL;
ALTER TABLE sync_changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE sync_changes FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS sync_changes_user_isolation ON sync_changes;
CREATE POLICY sync_changes_user_isolation ON sync_changes
  USING (user_id = current_setting('app.current_user_id', true))
  WITH CHECK (user_id = current_setting('app.current_user_id', true));
DROP POLICY IF EXISTS sync_changes_space_member_read ON sync_changes;
CREATE POLICY sync_changes_space_member_read ON sync_changes FOR SELECT
  USING (space_id IS NOT NULL AND space_id = ANY(string_to_array(coalesce(current_setting('app.current_user_space_ids', true), ''), ',')));
"#;

/// Current schema version written to `mana_ai.schema_migrations`.
pub const SCHEMA_VERSION: i32 = 1;

/// Plain part of the migration: tables the original created (same names and columns)
/// plus our additive columns, indexes and tables. Safe to run as the service role when it
/// owns the schema, and as the migration role otherwise.
const MANA_AI_DDL: &str = r#"
CREATE SCHEMA IF NOT EXISTS mana_ai;

CREATE TABLE IF NOT EXISTS mana_ai.schema_migrations (
  version INT PRIMARY KEY,
  applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS mana_ai.mission_snapshots (
  user_id TEXT NOT NULL,
  mission_id TEXT NOT NULL,
  record JSONB NOT NULL,
  last_applied_at TIMESTAMPTZ NOT NULL DEFAULT 'epoch',
  updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, mission_id)
);
ALTER TABLE mana_ai.mission_snapshots ADD COLUMN IF NOT EXISTS deleted BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE mana_ai.mission_snapshots ADD COLUMN IF NOT EXISTS state TEXT;
ALTER TABLE mana_ai.mission_snapshots ADD COLUMN IF NOT EXISTS next_run_at TIMESTAMPTZ;
ALTER TABLE mana_ai.mission_snapshots ADD COLUMN IF NOT EXISTS agent_id TEXT;
CREATE INDEX IF NOT EXISTS idx_mission_snapshots_user ON mana_ai.mission_snapshots (user_id, last_applied_at);
CREATE INDEX IF NOT EXISTS idx_mission_snapshots_due_at ON mana_ai.mission_snapshots (next_run_at)
  WHERE state = 'active' AND NOT deleted AND next_run_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS mana_ai.agent_snapshots (
  user_id TEXT NOT NULL,
  agent_id TEXT NOT NULL,
  record JSONB NOT NULL,
  last_applied_at TIMESTAMPTZ NOT NULL DEFAULT 'epoch',
  updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, agent_id)
);
ALTER TABLE mana_ai.agent_snapshots ADD COLUMN IF NOT EXISTS deleted BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS idx_agent_snapshots_user ON mana_ai.agent_snapshots (user_id, last_applied_at);

CREATE TABLE IF NOT EXISTS mana_ai.decrypt_audit (
  id BIGSERIAL PRIMARY KEY,
  user_id TEXT NOT NULL,
  mission_id TEXT NOT NULL,
  iteration_id TEXT,
  table_name TEXT NOT NULL,
  record_id TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'scope-violation')),
  reason TEXT,
  ts TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_decrypt_audit_mission ON mana_ai.decrypt_audit (user_id, mission_id, ts DESC);
ALTER TABLE mana_ai.decrypt_audit ENABLE ROW LEVEL SECURITY;
ALTER TABLE mana_ai.decrypt_audit FORCE ROW LEVEL SECURITY;
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'mana_ai'
                 AND tablename = 'decrypt_audit' AND policyname = 'decrypt_audit_user_scope') THEN
    CREATE POLICY decrypt_audit_user_scope ON mana_ai.decrypt_audit
      USING (user_id = current_setting('app.current_user_id', true));
  END IF;
END $$;

CREATE TABLE IF NOT EXISTS mana_ai.mission_research_jobs (
  user_id TEXT NOT NULL,
  mission_id TEXT NOT NULL,
  task_id TEXT NOT NULL,
  provider_id TEXT NOT NULL,
  submitted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  last_polled_at TIMESTAMPTZ,
  PRIMARY KEY (user_id, mission_id)
);
CREATE INDEX IF NOT EXISTS idx_mission_research_jobs_user ON mana_ai.mission_research_jobs (user_id, submitted_at DESC);
-- Deep-research jobs answer one due run (`due_at`), are submitted idempotently (the row
-- is written first, in state 'submitting', with its idempotency key) and stay, in a
-- terminal state, until that due run is over. Rows of the original service become
-- 'pending' jobs without a due run.
ALTER TABLE mana_ai.mission_research_jobs ADD COLUMN IF NOT EXISTS due_at TIMESTAMPTZ;
ALTER TABLE mana_ai.mission_research_jobs ADD COLUMN IF NOT EXISTS idempotency_key TEXT;
ALTER TABLE mana_ai.mission_research_jobs ADD COLUMN IF NOT EXISTS state TEXT NOT NULL DEFAULT 'pending';
ALTER TABLE mana_ai.mission_research_jobs ADD COLUMN IF NOT EXISTS poll_failures INT NOT NULL DEFAULT 0;
ALTER TABLE mana_ai.mission_research_jobs ADD COLUMN IF NOT EXISTS result TEXT;
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_constraint
                  WHERE conname = 'mission_research_jobs_state_check'
                    AND conrelid = 'mana_ai.mission_research_jobs'::regclass) THEN
    ALTER TABLE mana_ai.mission_research_jobs ADD CONSTRAINT mission_research_jobs_state_check
      CHECK (state IN ('submitting', 'pending', 'completed', 'failed', 'abandoned')
             AND (state <> 'submitting' OR idempotency_key IS NOT NULL));
  END IF;
END $$;

CREATE TABLE IF NOT EXISTS mana_ai.token_usage (
  id BIGSERIAL PRIMARY KEY,
  user_id TEXT NOT NULL,
  agent_id TEXT NOT NULL,
  mission_id TEXT NOT NULL,
  tokens_used INT NOT NULL,
  ts TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_token_usage_agent_window ON mana_ai.token_usage (user_id, agent_id, ts DESC);

CREATE TABLE IF NOT EXISTS mana_ai.refresh_cursor (
  stream TEXT PRIMARY KEY,
  position TIMESTAMPTZ NOT NULL,
  updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per (mission, due run): the claim that makes every due run planned and
-- written back at most once, across crashes, retries and runner instances.
CREATE TABLE IF NOT EXISTS mana_ai.mission_runs (
  user_id TEXT NOT NULL,
  mission_id TEXT NOT NULL,
  due_at TIMESTAMPTZ NOT NULL,
  iteration_id TEXT NOT NULL,
  agent_id TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('running', 'written', 'failed')),
  runner_id TEXT NOT NULL,
  lease_until TIMESTAMPTZ NOT NULL,
  started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  finished_at TIMESTAMPTZ,
  error TEXT,
  PRIMARY KEY (user_id, mission_id, due_at),
  CHECK ((status = 'running') = (finished_at IS NULL))
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_mission_runs_user_iteration ON mana_ai.mission_runs (user_id, iteration_id);
CREATE INDEX IF NOT EXISTS idx_mission_runs_running_agent ON mana_ai.mission_runs (user_id, agent_id)
  WHERE status = 'running';

-- Token budget: estimates held by LLM calls in flight (replaced by the real usage in
-- token_usage after the call); the expiry bounds what a crashed runner can hold.
CREATE TABLE IF NOT EXISTS mana_ai.token_reservations (
  id BIGSERIAL PRIMARY KEY,
  user_id TEXT NOT NULL,
  agent_id TEXT NOT NULL,
  mission_id TEXT NOT NULL,
  tokens BIGINT NOT NULL CHECK (tokens >= 0),
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_token_reservations_agent ON mana_ai.token_reservations (user_id, agent_id, expires_at);
CREATE INDEX IF NOT EXISTS idx_token_reservations_expiry ON mana_ai.token_reservations (expires_at);
-- Pruning deletes usage older than 48 h once per tick.
CREATE INDEX IF NOT EXISTS idx_token_usage_ts ON mana_ai.token_usage (ts);

CREATE OR REPLACE FUNCTION mana_ai.try_timestamptz(p TEXT) RETURNS TIMESTAMPTZ
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  RETURN p::timestamptz;
EXCEPTION WHEN others THEN
  RETURN NULL;
END $$;

-- The claim on one due run, in ONE statement (see runs.rs for the rules). SECURITY
-- INVOKER: it runs with the caller's privileges, so row-level security and grants apply
-- exactly as to the statements it replaces. Serialised per (user, agent) by a
-- transaction-level advisory lock; every statement after the lock takes a fresh
-- snapshot (VOLATILE, READ COMMITTED), so it sees the previous holder's claim.
-- Answers 'claimed', 'done' (written back or failed), 'held' (another runner's
-- unexpired claim) or 'busy' (no free agent slot, or older due runs come first).
CREATE OR REPLACE FUNCTION mana_ai.claim_run(
  p_user TEXT, p_mission TEXT, p_due TIMESTAMPTZ, p_iteration TEXT, p_agent TEXT,
  p_max_concurrent BIGINT, p_explicit_agent BOOLEAN, p_runner TEXT, p_lease_secs FLOAT8)
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
  PERFORM pg_advisory_xact_lock(hashtextextended(p_user || chr(31) || p_agent, 7366720003));
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
       AND CASE WHEN p_explicit_agent THEN s.agent_id = p_agent
                ELSE s.agent_id IS NULL OR s.agent_id = '' END
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
REVOKE ALL ON FUNCTION mana_ai.claim_run(TEXT, TEXT, TIMESTAMPTZ, TEXT, TEXT, BIGINT, BOOLEAN, TEXT, FLOAT8) FROM PUBLIC;

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

-- Snapshots written by the original service lack our derived columns: fill them once.
UPDATE mana_ai.mission_snapshots
   SET state = record->>'state',
       next_run_at = mana_ai.try_timestamptz(record->>'nextRunAt'),
       agent_id = record->>'agentId',
       deleted = (record->>'deletedAt') IS NOT NULL
 WHERE state IS NULL AND record ? 'state';
"#;

/// Privileged part: the change-discovery index and the two `SECURITY DEFINER`
/// functions. `{role}` is replaced by the quoted service role.
///
/// * `mana_ai.change_horizon()` returns the instant before which every transaction that
///   could still insert into `sync_changes` has finished: the oldest `xact_start` of any
///   other open transaction in this database (capped at `clock_timestamp()` minus a
///   safety margin). `created_at` defaults to `now()`, the transaction start, so a row
///   whose `created_at` lies before the horizon is either already visible or never will
///   be. It reads only start times from `pg_stat_activity`, nothing else.
/// * `mana_ai.changed_ai_records(from, to)` returns only `(user_id, table_name,
///   record_id, last_at)` for `app_id = 'ai'` missions and agents with
///   `from <= created_at < to` — ids and positions, never contents.
/// * `mana_ai.changed_ai_users(from, to)` returns only `(user_id, row_count)` for the
///   same rows — which users to read, and how many rows each, never contents.
/// * `mana_ai.change_batch_end(from, to, n)` bounds one refresh window to about `n` rows.
const DISCOVERY_DDL: &str = r#"
CREATE INDEX IF NOT EXISTS mana_ai_sync_changes_ai_position ON public.sync_changes (created_at)
  WHERE app_id = 'ai' AND table_name IN ('aiMissions', 'agents');

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
"#;

/// The refresh's row read: `mana_ai.read_ai_rows(users, from, to)`, a `SECURITY
/// INVOKER` function (it runs with the caller's rights, so row-level security on
/// `sync_changes` applies to the service role exactly as for its own queries). For each
/// user in turn it does what a `withUser` transaction does — refuses an empty id and
/// sets `app.current_user_id` transaction-locally — and reads that user's `ai` mission
/// and agent rows in `[from, to)`; the `user_id = uid` filter also keeps rows that a
/// space-membership policy would show out of another user's answer. At the end the
/// caller's scope is restored. One call replaces two statements per user, and its
/// query is planned once per session (`plan_cache_mode = force_generic_plan`: the
/// query always pins one user, so the generic plan is the per-user index scan; the
/// session's `force_custom_plan` guard is for record-id lookups, which this is not).
const READ_DDL: &str = r#"
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
"#;

/// Grants the service role what it needs — and nothing more: no UPDATE/DELETE on the
/// audit log, no BYPASSRLS, only SELECT/INSERT on `sync_changes`.
const GRANTS_DDL: &str = r#"
GRANT USAGE ON SCHEMA mana_ai TO {role};
GRANT SELECT, INSERT ON public.sync_changes TO {role};
GRANT SELECT, INSERT, UPDATE, DELETE ON mana_ai.mission_snapshots, mana_ai.agent_snapshots,
  mana_ai.mission_research_jobs, mana_ai.token_usage, mana_ai.refresh_cursor,
  mana_ai.mission_runs TO {role};
GRANT SELECT ON mana_ai.schema_migrations TO {role};
GRANT SELECT, INSERT ON mana_ai.decrypt_audit TO {role};
GRANT USAGE ON ALL SEQUENCES IN SCHEMA mana_ai TO {role};
GRANT EXECUTE ON FUNCTION mana_ai.change_horizon(INTERVAL) TO {role};
GRANT EXECUTE ON FUNCTION mana_ai.changed_ai_records(TIMESTAMPTZ, TIMESTAMPTZ) TO {role};
GRANT EXECUTE ON FUNCTION mana_ai.change_batch_end(TIMESTAMPTZ, TIMESTAMPTZ, INT) TO {role};
GRANT EXECUTE ON FUNCTION mana_ai.changed_ai_users(TIMESTAMPTZ, TIMESTAMPTZ) TO {role};
GRANT EXECUTE ON FUNCTION mana_ai.read_ai_rows(TEXT[], TIMESTAMPTZ, TIMESTAMPTZ) TO {role};
GRANT SELECT, INSERT, UPDATE, DELETE ON mana_ai.token_reservations TO {role};
GRANT EXECUTE ON FUNCTION mana_ai.claim_run(TEXT, TEXT, TIMESTAMPTZ, TEXT, TEXT, BIGINT, BOOLEAN, TEXT, FLOAT8) TO {role};
GRANT EXECUTE ON FUNCTION mana_ai.write_back_run(TEXT, TEXT, TIMESTAMPTZ, TEXT, TEXT, TEXT, JSONB, JSONB, JSONB, TEXT) TO {role};
GRANT EXECUTE ON FUNCTION mana_ai.reserve_tokens(TEXT, TEXT, TEXT, BIGINT, BIGINT, FLOAT8, BIGINT) TO {role};
"#;

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Creates `sync_changes` exactly as the sync server does. Dev and tests only.
pub async fn create_sync_changes_for_dev(client: &Client) -> Result<(), StoreError> {
    client
        .batch_execute(SYNC_CHANGES_DDL)
        .await
        .map_err(|e| StoreError::migration("create sync_changes (dev)", e))
}

/// Runs the whole idempotent migration on `client` (which should be the migration
/// role). When `service_role` is given and differs from the connected role, grants it
/// the least privileges it needs. Serialised across instances by an advisory lock.
pub async fn migrate(client: &Client, service_role: Option<&str>) -> Result<(), StoreError> {
    client
        .batch_execute("SELECT pg_advisory_lock(7366720001)")
        .await
        .map_err(|e| StoreError::migration("lock", e))?;
    let result = migrate_locked(client, service_role).await;
    let _ = client
        .batch_execute("SELECT pg_advisory_unlock(7366720001)")
        .await;
    result
}

async fn migrate_locked(client: &Client, service_role: Option<&str>) -> Result<(), StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('public.sync_changes') IS NOT NULL", &[])
        .await
        .map_err(|e| StoreError::migration("check sync_changes", e))?
        .get(0);
    if !exists {
        return Err(StoreError::Config(
            "table public.sync_changes does not exist: point SYNC_DATABASE_URL at the mana_sync database (or use `mana-ai dev`)".into(),
        ));
    }
    client
        .batch_execute(MANA_AI_DDL)
        .await
        .map_err(|e| StoreError::migration("mana_ai schema", e))?;
    client
        .batch_execute(DISCOVERY_DDL)
        .await
        .map_err(|e| StoreError::migration(
            "change discovery (needs a role that owns sync_changes or is superuser; set MANA_AI_MIGRATION_DATABASE_URL)",
            e,
        ))?;
    client
        .batch_execute(READ_DDL)
        .await
        .map_err(|e| StoreError::migration("refresh read function", e))?;
    if let Some(role) = service_role {
        grant_to_service_role(client, role, GRANTS_DDL, "grants for the service role").await?;
    }
    harden_audit(client, service_role).await?;
    client
        .execute(
            "INSERT INTO mana_ai.schema_migrations (version) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&SCHEMA_VERSION],
        )
        .await
        .map_err(|e| StoreError::migration("record version", e))?;
    Ok(())
}

/// Checks, as the service role, that change discovery can really see across users:
/// the owner of `mana_ai.changed_ai_records` must bypass row-level security, and the
/// owner of `mana_ai.change_horizon` must be able to read other sessions' start times.
/// Without this check a non-privileged deployment would see zero missions, silently.
pub async fn verify_discovery(client: &Client) -> Result<(), StoreError> {
    let row = client
        .query_opt(
            "SELECT r.rolname::text, (r.rolsuper OR r.rolbypassrls) AS bypass,
                    (r.rolsuper OR pg_has_role(r.oid, 'pg_read_all_stats', 'MEMBER')) AS stats
               FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
              WHERE p.oid = to_regprocedure('mana_ai.changed_ai_records(timestamptz,timestamptz)')",
            &[],
        )
        .await
        .map_err(|e| StoreError::migration("verify discovery", e))?;
    let Some(row) = row else {
        return Err(StoreError::Config(
            "mana_ai.changed_ai_records is missing: the migration did not run".into(),
        ));
    };
    let owner: String = row.get(0);
    let bypass: bool = row.get(1);
    let stats: bool = row.get(2);
    if !bypass {
        return Err(StoreError::Config(format!(
            "change discovery is owned by role {owner:?}, which is subject to row-level security on sync_changes and would see no missions; run the migration as a superuser or BYPASSRLS role (MANA_AI_MIGRATION_DATABASE_URL)"
        )));
    }
    if !stats {
        return Err(StoreError::Config(format!(
            "change discovery is owned by role {owner:?}, which cannot read other sessions' transaction start times; grant it pg_read_all_stats or migrate as a superuser"
        )));
    }
    Ok(())
}

/// Creates (or updates the password of) an ordinary login role for the service:
/// NOSUPERUSER, NOBYPASSRLS. Dev and tests use it to run as least privilege.
pub async fn ensure_service_role(
    admin: &Client,
    role: &str,
    password: &str,
) -> Result<(), StoreError> {
    let exists = admin
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
        .await
        .map_err(|e| StoreError::migration("look up role", e))?
        .is_some();
    let verb = if exists { "ALTER" } else { "CREATE" };
    let sql = format!(
        "{verb} ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD {}",
        quote_ident(role),
        quote_literal(password)
    );
    match admin.batch_execute(&sql).await {
        Ok(()) => Ok(()),
        // Two test binaries may race to create the same cluster-wide role.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_OBJECT) => Ok(()),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => Ok(()),
        Err(e) => Err(StoreError::migration("create service role", e)),
    }
}

/// Hardening of the decrypt audit, run by the migration role on every boot:
///
/// * `mana_ai.prune_decrypt_audit(days)` — the ONLY way rows leave the table: deletes
///   rows older than `days` (all users) and returns how many. `SECURITY DEFINER`, owned by
///   the migration role (superuser/`BYPASSRLS`, so FORCE RLS does not hide other users'
///   rows), refuses fewer than 7 days so even a compromised service role can never erase
///   the recent trail. The service role may only EXECUTE it.
/// * an append-only trigger: UPDATE and TRUNCATE always fail, DELETE fails unless the
///   prune function is running (transaction-local flag `mana_ai.audit_prune`, reset when it
///   returns). This guards against accidents by the table owner in single-DSN deployments;
///   the real boundary is the service role's missing UPDATE/DELETE privileges.
/// * policy `decrypt_audit_prune` (DELETE only, while that flag is on), so pruning also
///   works when the owner is not `BYPASSRLS`.
const AUDIT_HARDENING_DDL: &str = r#"
CREATE OR REPLACE FUNCTION mana_ai.decrypt_audit_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
  IF TG_OP = 'DELETE' AND coalesce(pg_catalog.current_setting('mana_ai.audit_prune', true), '') = 'on' THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'mana_ai.decrypt_audit is append-only: % refused', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END $$;
DROP TRIGGER IF EXISTS decrypt_audit_append_only ON mana_ai.decrypt_audit;
CREATE TRIGGER decrypt_audit_append_only BEFORE UPDATE OR DELETE ON mana_ai.decrypt_audit
  FOR EACH ROW EXECUTE FUNCTION mana_ai.decrypt_audit_append_only();
DROP TRIGGER IF EXISTS decrypt_audit_no_truncate ON mana_ai.decrypt_audit;
CREATE TRIGGER decrypt_audit_no_truncate BEFORE TRUNCATE ON mana_ai.decrypt_audit
  FOR EACH STATEMENT EXECUTE FUNCTION mana_ai.decrypt_audit_append_only();

DROP POLICY IF EXISTS decrypt_audit_prune ON mana_ai.decrypt_audit;
CREATE POLICY decrypt_audit_prune ON mana_ai.decrypt_audit FOR DELETE
  USING (coalesce(current_setting('mana_ai.audit_prune', true), '') = 'on');

CREATE OR REPLACE FUNCTION mana_ai.prune_decrypt_audit(p_days INT) RETURNS BIGINT
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  n BIGINT;
BEGIN
  IF p_days IS NULL OR p_days < 7 THEN
    RAISE EXCEPTION 'mana_ai.prune_decrypt_audit: retention must be at least 7 days, got %', p_days;
  END IF;
  PERFORM pg_catalog.set_config('mana_ai.audit_prune', 'on', true);
  DELETE FROM mana_ai.decrypt_audit
   WHERE ts < pg_catalog.now() - pg_catalog.make_interval(days => p_days);
  GET DIAGNOSTICS n = ROW_COUNT;
  PERFORM pg_catalog.set_config('mana_ai.audit_prune', 'off', true);
  RETURN n;
END $$;
REVOKE ALL ON FUNCTION mana_ai.prune_decrypt_audit(INT) FROM PUBLIC;
REVOKE ALL ON FUNCTION mana_ai.decrypt_audit_append_only() FROM PUBLIC;
"#;

/// The service role's audit privileges, stated explicitly (also undoing any broader
/// grant from an earlier deployment): SELECT and INSERT only, plus the prune function.
const AUDIT_GRANTS_DDL: &str = r#"
REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON mana_ai.decrypt_audit FROM {role};
GRANT SELECT, INSERT ON mana_ai.decrypt_audit TO {role};
GRANT EXECUTE ON FUNCTION mana_ai.prune_decrypt_audit(INT) TO {role};
"#;

/// Runs `ddl` with `{role}` replaced by the quoted service role, unless the migration runs
/// as that role itself (granting to oneself is pointless and may be refused).
async fn grant_to_service_role(
    client: &Client,
    role: &str,
    ddl: &str,
    what: &'static str,
) -> Result<(), StoreError> {
    let me: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .map_err(|e| StoreError::migration("current_user", e))?
        .get(0);
    if me != role {
        client
            .batch_execute(&ddl.replace("{role}", &quote_ident(role)))
            .await
            .map_err(|e| StoreError::migration(what, e))?;
    }
    Ok(())
}

async fn harden_audit(client: &Client, service_role: Option<&str>) -> Result<(), StoreError> {
    client
        .batch_execute(AUDIT_HARDENING_DDL)
        .await
        .map_err(|e| StoreError::migration("decrypt audit hardening", e))?;
    if let Some(role) = service_role {
        grant_to_service_role(
            client,
            role,
            AUDIT_GRANTS_DDL,
            "audit grants for the service role",
        )
        .await?;
    }
    Ok(())
}
