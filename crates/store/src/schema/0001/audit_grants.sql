-- The service role's audit privileges, stated explicitly (also undoing any broader
-- grant from an earlier deployment): SELECT and INSERT only, plus the prune function.
REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON mana_ai.decrypt_audit FROM {role};
GRANT SELECT, INSERT ON mana_ai.decrypt_audit TO {role};
GRANT EXECUTE ON FUNCTION mana_ai.prune_decrypt_audit(INT) TO {role};
