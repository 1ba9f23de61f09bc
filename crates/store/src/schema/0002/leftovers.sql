-- Objects that earlier builds created and later builds stopped creating, without dropping
-- them (found by migrating every earlier schema in crates/store/tests/migrations.rs):
--
-- * `idx_mission_runs_iteration`: builds bac48bf…20f24ff made iteration ids unique across
--   ALL users; a8d58fd made them unique per user (`idx_mission_runs_user_iteration`) but
--   left the global index in place on databases it upgraded.
DROP INDEX IF EXISTS mana_ai.idx_mission_runs_iteration;
