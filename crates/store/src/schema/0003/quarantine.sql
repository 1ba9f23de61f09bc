-- Rows of `sync_changes` the refresh refused (see crates/store/src/quarantine.rs): which
-- row (ids and its `created_at`; rows of one sync transaction share that instant, so one
-- entry stands for every refused row of the record at that instant with that reason),
-- why, a detail made of measurements only (never row content), and when. Written in the
-- statement that moves the refresh cursor past the row; read by `mana-ai quarantine list`.
CREATE TABLE IF NOT EXISTS mana_ai.quarantined_rows (
  user_id TEXT NOT NULL,
  app_id TEXT NOT NULL DEFAULT 'ai',
  table_name TEXT NOT NULL,
  record_id TEXT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL,
  reason TEXT NOT NULL CHECK (reason IN ('undecodable', 'too-large', 'too-deep',
    'field-too-large', 'not-an-object', 'id-too-long', 'bad-time')),
  detail TEXT NOT NULL DEFAULT '',
  quarantined_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, app_id, table_name, record_id, created_at, reason)
);
CREATE INDEX IF NOT EXISTS idx_quarantined_rows_at ON mana_ai.quarantined_rows (quarantined_at DESC);
