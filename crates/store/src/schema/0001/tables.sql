-- Plain part of the migration: tables the original created (same names and columns)
-- plus our additive columns, indexes and tables. Safe to run as the service role when it
-- owns the schema, and as the migration role otherwise.
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

