-- The service role's privileges on the deferral table (see deferral.sql).
GRANT SELECT, INSERT, UPDATE, DELETE ON mana_ai.mission_deferrals TO {role};
