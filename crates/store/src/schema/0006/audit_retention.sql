-- The decrypt-audit retention as a migration-owned setting (one row), and the
-- argument-less prune the service role calls. The setting is written by the migration
-- role at every boot from MANA_AI_AUDIT_RETENTION_DAYS (`schema::set_audit_retention`);
-- NULL keeps the trail forever. The service role has no privilege on the table, so it
-- cannot shorten the retention; `least_privilege.sql` takes the one-argument prune away
-- from it.
CREATE TABLE IF NOT EXISTS mana_ai.audit_retention (
  singleton BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
  days INT CHECK (days IS NULL OR days >= 7),
  updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO mana_ai.audit_retention (singleton, days) VALUES (true, 365)
  ON CONFLICT (singleton) DO NOTHING;
REVOKE ALL ON mana_ai.audit_retention FROM PUBLIC;

CREATE OR REPLACE FUNCTION mana_ai.prune_decrypt_audit() RETURNS BIGINT
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  d INT;
BEGIN
  SELECT r.days INTO d FROM mana_ai.audit_retention r WHERE r.singleton;
  IF d IS NULL THEN
    RETURN 0;
  END IF;
  RETURN mana_ai.prune_decrypt_audit(d);
END $$;
REVOKE ALL ON FUNCTION mana_ai.prune_decrypt_audit() FROM PUBLIC;
