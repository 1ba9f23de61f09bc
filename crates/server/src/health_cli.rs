//! `mana-ai health`: the container health check without curl. Asks the running service's
//! `/health` on its own port over loopback and succeeds only on a 200 answer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::config::Config;

/// The whole check (connect, request, answer) must finish within this time.
pub const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the service listens, seen from the same host: a wildcard bind is reached over
/// loopback of the same family; a specific address directly.
pub fn health_addr(cfg: &Config) -> SocketAddr {
    let ip = match cfg.bind {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    SocketAddr::new(ip, cfg.port)
}

/// Requests `/health`; prints the answer; errors unless it is a 200.
pub async fn run(cfg: &Config) -> anyhow::Result<()> {
    let url = format!("http://{}/health", health_addr(cfg));
    let client = reqwest::Client::builder()
        .timeout(HEALTH_CHECK_TIMEOUT)
        .no_proxy()
        .build()
        .context("building the HTTP client")?;
    let response = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("{url} is not answering"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    println!("{body}");
    if status.as_u16() != 200 {
        bail!("{url} answered {status}");
    }
    Ok(())
}
