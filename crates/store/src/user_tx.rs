//! The `withUser` transaction, [`UserTx`]: the only way the service reads or writes a
//! user's rows in `sync_changes` and `mana_ai.decrypt_audit` from Rust (see the crate's
//! architecture invariant), and [`Store::begin_user`], which opens one.

use crate::{Store, StoreError};

/// A transaction scoped to one user for row-level security: `BEGIN`, then
/// `set_config('app.current_user_id', <user>, true)`. Commit explicitly; dropping it
/// without commit discards the connection, which rolls the transaction back.
pub struct UserTx {
    client: Option<deadpool_postgres::Object>,
    user_id: String,
}

impl Store {
    /// Opens a `withUser` transaction for `user_id`.
    pub async fn begin_user(&self, user_id: &str) -> Result<UserTx, StoreError> {
        UserTx::begin(self.client().await?, user_id).await
    }
}

impl UserTx {
    async fn begin(client: deadpool_postgres::Object, user_id: &str) -> Result<Self, StoreError> {
        if user_id.is_empty() {
            return Err(StoreError::Refused("withUser: empty userID"));
        }
        // The guard exists before BEGIN is sent: a caller cancelled while BEGIN is in
        // flight (a mission deadline) drops it, which discards the connection instead of
        // returning it to the pool inside an open transaction.
        let mut tx = UserTx {
            client: Some(client),
            user_id: String::new(),
        };
        tx.client().batch_execute("BEGIN").await?;
        tx.switch_user(user_id).await?;
        Ok(tx)
    }

    /// The user this transaction is scoped to.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The underlying client, inside the open transaction.
    pub fn client(&self) -> &tokio_postgres::Client {
        // Invariant: `client` is only taken by commit/rollback/drop, which consume self.
        self.client
            .as_ref()
            .map(|c| &***c)
            .unwrap_or_else(|| unreachable!())
    }

    /// Switches the scope to another user inside the same transaction (batch refresh).
    pub async fn switch_user(&mut self, user_id: &str) -> Result<(), StoreError> {
        if user_id.is_empty() {
            return Err(StoreError::Refused("withUser: empty userID"));
        }
        self.client()
            .execute(
                "SELECT set_config('app.current_user_id', $1, true)",
                &[&user_id],
            )
            .await?;
        self.user_id = user_id.to_string();
        Ok(())
    }

    /// Commits the transaction.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.finish("COMMIT").await
    }

    /// Rolls the transaction back.
    pub async fn rollback(self) -> Result<(), StoreError> {
        self.finish("ROLLBACK").await
    }

    /// Ends the transaction with `statement`; on failure the connection is discarded
    /// (never returned to the pool in an unknown transaction state).
    async fn finish(mut self, statement: &str) -> Result<(), StoreError> {
        if let Some(c) = self.client.take() {
            if let Err(e) = c.batch_execute(statement).await {
                drop(deadpool_postgres::Object::take(c));
                return Err(e.into());
            }
        }
        Ok(())
    }
}

impl Drop for UserTx {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            // Detach from the pool and close: the server rolls the transaction back.
            drop(deadpool_postgres::Object::take(c));
        }
    }
}
