-- The service role may call the one-statement write-back (write_back_commit.sql).
GRANT EXECUTE ON FUNCTION mana_ai.write_back_commit(TEXT, TEXT, TIMESTAMPTZ, TEXT, TEXT, TEXT, JSONB, TIMESTAMPTZ, TIMESTAMPTZ, JSONB, TEXT, TEXT, TIMESTAMPTZ) TO {role};
GRANT EXECUTE ON FUNCTION mana_ai.write_stamp(TIMESTAMPTZ) TO {role};
