-- Hardening of the decrypt audit, run by the migration role on every boot:
--
-- * `mana_ai.prune_decrypt_audit(days)` — the ONLY way rows leave the table: deletes
--   rows older than `days` (all users) and returns how many. `SECURITY DEFINER`, owned by
--   the migration role (superuser/`BYPASSRLS`, so FORCE RLS does not hide other users'
--   rows), refuses fewer than 7 days so even a compromised service role can never erase
--   the recent trail. The service role may only EXECUTE it.
-- * an append-only trigger: UPDATE and TRUNCATE always fail, DELETE fails unless the
--   prune function is running (transaction-local flag `mana_ai.audit_prune`, reset when it
--   returns). This guards against accidents by the table owner in single-DSN deployments;
--   the real boundary is the service role's missing UPDATE/DELETE privileges.
-- * policy `decrypt_audit_prune` (DELETE only, while that flag is on), so pruning also
--   works when the owner is not `BYPASSRLS`.
CREATE OR REPLACE FUNCTION mana_ai.decrypt_audit_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
  IF TG_OP = 'DELETE' AND coalesce(pg_catalog.current_setting('mana_ai.audit_prune', true), '') = 'on' THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'mana_ai.decrypt_audit is append-only: % refused', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END $$;
DROP TRIGGER IF EXISTS decrypt_audit_append_only ON mana_ai.decrypt_audit;
CREATE TRIGGER decrypt_audit_append_only BEFORE UPDATE OR DELETE ON mana_ai.decrypt_audit
  FOR EACH ROW EXECUTE FUNCTION mana_ai.decrypt_audit_append_only();
DROP TRIGGER IF EXISTS decrypt_audit_no_truncate ON mana_ai.decrypt_audit;
CREATE TRIGGER decrypt_audit_no_truncate BEFORE TRUNCATE ON mana_ai.decrypt_audit
  FOR EACH STATEMENT EXECUTE FUNCTION mana_ai.decrypt_audit_append_only();

DROP POLICY IF EXISTS decrypt_audit_prune ON mana_ai.decrypt_audit;
CREATE POLICY decrypt_audit_prune ON mana_ai.decrypt_audit FOR DELETE
  USING (coalesce(current_setting('mana_ai.audit_prune', true), '') = 'on');

CREATE OR REPLACE FUNCTION mana_ai.prune_decrypt_audit(p_days INT) RETURNS BIGINT
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  n BIGINT;
BEGIN
  IF p_days IS NULL OR p_days < 7 THEN
    RAISE EXCEPTION 'mana_ai.prune_decrypt_audit: retention must be at least 7 days, got %', p_days;
  END IF;
  PERFORM pg_catalog.set_config('mana_ai.audit_prune', 'on', true);
  DELETE FROM mana_ai.decrypt_audit
   WHERE ts < pg_catalog.now() - pg_catalog.make_interval(days => p_days);
  GET DIAGNOSTICS n = ROW_COUNT;
  PERFORM pg_catalog.set_config('mana_ai.audit_prune', 'off', true);
  RETURN n;
END $$;
REVOKE ALL ON FUNCTION mana_ai.prune_decrypt_audit(INT) FROM PUBLIC;
REVOKE ALL ON FUNCTION mana_ai.decrypt_audit_append_only() FROM PUBLIC;
