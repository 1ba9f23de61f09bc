-- Deferred due runs (issue 12.3/12.8): a mission skipped at a gate (agent paused,
-- archived or missing, budget used up, claim busy or held elsewhere, deep research
-- pending) or failing with a store error is not listed again before `not_before`.
-- One row per mission (the latest deferral); `attempts` counts the deferrals of the
-- same due run in a row and drives the backoff (computed by the runner's store call).
-- The deferral remembers the versions it saw (`updated_at` of the mission snapshot and,
-- when an agent was looked up, of that agent's snapshot): the due listing ignores it as
-- soon as either changed, so a resumed agent or an edited mission is reconsidered at
-- once. `mission_version` NULL: the deferral holds whatever changes (a mission that
-- could not even be loaded). Owned by the runner; the sync server never sees it.
CREATE TABLE IF NOT EXISTS mana_ai.mission_deferrals (
  user_id TEXT NOT NULL,
  mission_id TEXT NOT NULL,
  due_at TIMESTAMPTZ NOT NULL,
  reason TEXT NOT NULL,
  attempts INT NOT NULL DEFAULT 1 CHECK (attempts >= 1),
  not_before TIMESTAMPTZ NOT NULL,
  mission_version TIMESTAMPTZ,
  agent_id TEXT,
  agent_version TIMESTAMPTZ,
  deferred_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, mission_id)
);
CREATE INDEX IF NOT EXISTS idx_mission_deferrals_not_before ON mana_ai.mission_deferrals (not_before);

-- Self-healing schedule (issue 12.7): when a claim answers 'done' for the listed due
-- time, the runner writes the next run once; `healed_at` records that write, so a second
-- runner (or a later tick before the refresh caught up) does not write it again.
ALTER TABLE mana_ai.mission_runs ADD COLUMN IF NOT EXISTS healed_at TIMESTAMPTZ;
