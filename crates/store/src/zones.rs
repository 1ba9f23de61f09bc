//! The user's time zone as their own synced data names it: the calendar app's
//! `calendars.timezone` (plaintext; the browser's IANA zone when the calendar was
//! created or edited). Read in a `withUser` transaction, newest row first.

use crate::{Store, StoreError};

/// Most distinct zone names returned per user.
pub const USER_ZONE_LIMIT: i64 = 8;

/// Rows looked at per user, newest first (bounds the query on a long calendar history).
const USER_ZONE_SCAN_ROWS: i64 = 200;

/// Distinct `timezone` strings of the user's `calendar/calendars` rows, newest first.
const USER_ZONES_SQL: &str = "SELECT tz FROM (
     SELECT data->>'timezone' AS tz, max(created_at) AS newest
       FROM (SELECT data, created_at FROM sync_changes
              WHERE user_id = $1 AND app_id = 'calendar' AND table_name = 'calendars'
                AND jsonb_typeof(data) = 'object'
                AND jsonb_typeof(data->'timezone') = 'string'
              ORDER BY created_at DESC
              LIMIT $2) recent
      GROUP BY 1) zones
  WHERE tz <> ''
  ORDER BY newest DESC
  LIMIT $3";

impl Store {
    /// The zone names in `user_id`'s calendars, newest row first, distinct, at most
    /// [`USER_ZONE_LIMIT`] (unvalidated: the caller checks them against the IANA list).
    /// An empty user id is refused without touching the database.
    pub async fn user_zone_names(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        let tx = self.begin_user(user_id).await?;
        let rows = tx
            .client()
            .query(
                USER_ZONES_SQL,
                &[&user_id, &USER_ZONE_SCAN_ROWS, &USER_ZONE_LIMIT],
            )
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| r.try_get::<_, String>(0).map_err(StoreError::from))
            .collect()
    }
}
