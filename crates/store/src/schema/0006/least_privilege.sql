-- Least privilege for the service role {role}, applied after every other grant (so it
-- also undoes broader grants of older deployments). Other roles are unaffected.
--
-- 1. `sync_changes`: RESTRICTIVE policies for the service role only. They are ANDed with
--    the sync server's permissive per-user policies, so whatever `app.current_user_id`
--    the service sets, it
--    * inserts only mission rows: `app_id = 'ai'` and `table_name = 'aiMissions'` (the
--      iteration write-back, `mana_ai.write_back_run`);
--    * reads only what its projection and input resolvers need:
--      - `ai` / `aiMissions`, `agents`: the snapshot refresh (`mana_ai.read_ai_rows`);
--      - the apps of the input registry (runner `inputs/registry.rs`, data-model §8):
--        `companion` (goals), `notes`, `todo` (tasks), `calendar`, `journal`, `kontext`,
--        `profile` — any table of them, since an input names its own table.
--    Everything else (`finance`, `contacts`, other `ai` tables, …) is invisible to it.
--    Change discovery is unaffected: its SECURITY DEFINER functions run as their owner.
DROP POLICY IF EXISTS mana_ai_service_insert_scope ON public.sync_changes;
CREATE POLICY mana_ai_service_insert_scope ON public.sync_changes
  AS RESTRICTIVE FOR INSERT TO {role}
  WITH CHECK (app_id = 'ai' AND table_name = 'aiMissions');
DROP POLICY IF EXISTS mana_ai_service_read_scope ON public.sync_changes;
CREATE POLICY mana_ai_service_read_scope ON public.sync_changes
  AS RESTRICTIVE FOR SELECT TO {role}
  USING ((app_id = 'ai' AND table_name IN ('aiMissions', 'agents'))
         OR app_id IN ('companion', 'notes', 'todo', 'calendar', 'journal', 'kontext', 'profile'));

-- 2. The `mana_ai` schema belongs to the migration role and the service role only: no
--    privilege for PUBLIC, and none left for any other role.
REVOKE ALL ON SCHEMA mana_ai FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA mana_ai FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA mana_ai FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA mana_ai FROM PUBLIC;
DO $$
DECLARE
  g RECORD;
BEGIN
  FOR g IN
    SELECT DISTINCT c.oid::regclass::text AS rel, a.grantee::regrole::text AS grantee
      FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a
     WHERE n.nspname = 'mana_ai' AND c.relkind IN ('r', 'p', 'S', 'v', 'm')
       AND a.grantee <> 0 AND a.grantee <> c.relowner
       AND a.grantee <> (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = {role_literal})
  LOOP
    EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM %s', g.rel, g.grantee);
  END LOOP;
END $$;

-- 3. Unused by the service: `changed_ai_records` (the refresh uses `changed_ai_users`,
--    `change_batch_end` and `read_ai_rows`; boot only looks the function up in pg_proc).
REVOKE ALL ON FUNCTION mana_ai.changed_ai_records(TIMESTAMPTZ, TIMESTAMPTZ) FROM {role};

-- 4. Audit retention: the service may only run the argument-less prune, which takes its
--    retention from the migration-owned setting (`audit_retention.sql`); it can no
--    longer choose how much of the trail to erase.
REVOKE ALL ON FUNCTION mana_ai.prune_decrypt_audit(INT) FROM {role};
GRANT EXECUTE ON FUNCTION mana_ai.prune_decrypt_audit() TO {role};
REVOKE ALL ON mana_ai.audit_retention FROM {role};
