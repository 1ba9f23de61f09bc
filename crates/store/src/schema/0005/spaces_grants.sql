-- Grants of the shared-space functions (spaces.sql) to the service role.
GRANT EXECUTE ON FUNCTION mana_ai.changed_space_records(TIMESTAMPTZ, TIMESTAMPTZ) TO {role};
GRANT EXECUTE ON FUNCTION mana_ai.read_space_record(TEXT, TEXT, TEXT, TEXT, TIMESTAMPTZ, INT) TO {role};
GRANT EXECUTE ON FUNCTION mana_ai.write_back_run_in_space(TEXT, TEXT, TEXT, TIMESTAMPTZ, TEXT, TEXT, TEXT, JSONB, JSONB, JSONB, TEXT) TO {role};
