//! The one shutdown-signal waiter of the binary: SIGINT (Ctrl-C) or SIGTERM, whichever
//! comes first, logged by name. `serve`, `dev` and `llm serve` all stop on it.

/// Completes when the process receives SIGINT or SIGTERM. If SIGTERM cannot be
/// subscribed to (not on unix, or the handler fails) only SIGINT ends the wait.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
