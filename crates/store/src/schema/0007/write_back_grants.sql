-- The service role may call the merging write-back's read (write_back.sql).
GRANT EXECUTE ON FUNCTION mana_ai.write_back_current(TEXT, TEXT, TIMESTAMPTZ, TEXT) TO {role};
GRANT EXECUTE ON FUNCTION mana_ai.write_back_fields(JSONB, TEXT[]) TO {role};
