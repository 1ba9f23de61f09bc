-- The service role records quarantined rows (refresh) and lists them (operators).
GRANT SELECT, INSERT ON mana_ai.quarantined_rows TO {role};
