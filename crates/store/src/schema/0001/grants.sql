-- Grants the service role what it needs — and nothing more: no UPDATE/DELETE on the
-- audit log, no BYPASSRLS, only SELECT/INSERT on `sync_changes`.
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
GRANT EXECUTE ON FUNCTION mana_ai.claim_run(TEXT, TEXT, TIMESTAMPTZ, TEXT, TEXT, BIGINT, TEXT, FLOAT8) TO {role};
GRANT EXECUTE ON FUNCTION mana_ai.write_back_run(TEXT, TEXT, TIMESTAMPTZ, TEXT, TEXT, TEXT, JSONB, JSONB, JSONB, TEXT) TO {role};
GRANT EXECUTE ON FUNCTION mana_ai.reserve_tokens(TEXT, TEXT, TEXT, BIGINT, BIGINT, FLOAT8, BIGINT) TO {role};
