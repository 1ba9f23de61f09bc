-- Snapshots written by the original service lack our derived columns: fill them once.
-- The agent column holds the resolved agent id: `agentId` when a non-empty string, else
-- the default agent's id (mana_ai_core::records::agent_id_or_default; the migration
-- formats the id in).
UPDATE mana_ai.mission_snapshots
   SET state = record->>'state',
       next_run_at = mana_ai.try_timestamptz(record->>'nextRunAt'),
       agent_id = CASE WHEN jsonb_typeof(record->'agentId') = 'string' AND record->>'agentId' <> ''
                       THEN record->>'agentId' ELSE {default_agent} END,
       deleted = (record->>'deletedAt') IS NOT NULL
 WHERE state IS NULL AND record ? 'state';
-- Earlier versions of this service stored a mission of the default agent with a NULL or
-- empty agent column: store the resolved id instead (the claim compares it directly).
UPDATE mana_ai.mission_snapshots
   SET agent_id = {default_agent}
 WHERE agent_id IS NULL OR agent_id = '';
