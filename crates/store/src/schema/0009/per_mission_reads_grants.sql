-- The service role may call the per-mission functions of per_mission_reads.sql.
GRANT EXECUTE ON FUNCTION mana_ai.load_due_mission(TEXT, TEXT, TIMESTAMPTZ) TO {role};
GRANT EXECUTE ON FUNCTION mana_ai.committed_tokens(TEXT, TEXT) TO {role};
GRANT EXECUTE ON FUNCTION mana_ai.settle_tokens(BIGINT, TEXT, TEXT, TEXT, INT) TO {role};
