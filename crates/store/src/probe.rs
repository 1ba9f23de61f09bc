//! A database liveness probe on its own connection (the server's background `/health`
//! probe): it never takes a connection from the pool, so a flood of health checks or a
//! saturated pool cannot starve each other. The connection is opened on first use and
//! reopened after a failure.

use std::time::Duration;

use crate::{connect_once, StoreError};

/// One dedicated probe connection.
pub struct ProbeConnection {
    url: String,
    timeout: Duration,
    client: Option<tokio_postgres::Client>,
}

impl ProbeConnection {
    /// A probe of the database at `url`; each check (connect included) gives up after
    /// `timeout`.
    pub fn new(url: impl Into<String>, timeout: Duration) -> Self {
        Self {
            url: url.into(),
            timeout,
            client: None,
        }
    }

    /// True when the database answered a trivial query within the timeout.
    pub async fn check(&mut self) -> bool {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.ping()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "database probe failed");
                self.client = None;
                false
            }
            Err(_) => {
                self.client = None;
                false
            }
        }
    }

    async fn ping(&mut self) -> Result<(), StoreError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(connect_once(&self.url).await?);
        }
        let Some(c) = self.client.as_ref() else {
            return Err(StoreError::Pool("probe connection missing".into()));
        };
        c.simple_query("SELECT 1").await?;
        Ok(())
    }
}
