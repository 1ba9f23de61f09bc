//! The HTTP/1.1 server loop under the axum router, with the limits axum's own `serve`
//! does not set (it builds hyper without a timer, so no timeout ever fires):
//!
//! * **header read**: hyper's `header_read_timeout` (with a tokio timer) closes a
//!   connection whose request head does not arrive in time — also the head of the next
//!   request on a keep-alive connection, so it bounds idle keep-alive too;
//! * **idle**: a connection with no request in flight and no byte read or written for
//!   the idle timeout is closed;
//! * **request**: a request that has no response head within the request timeout is
//!   answered `408` (every route but `POST /internal/tick`, which answers when its pass
//!   ends; the pass runs on its own task and is bounded by the mission deadline);
//! * **connections**: at most `max_connections` are served at once; further ones wait in
//!   the kernel's listen backlog until one closes.
//!
//! Shutdown: the listener closes, every connection finishes its request in flight and
//! closes, and [`serve`] returns when the last one is gone.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt as _;

use crate::config::HttpLimits;
use crate::json_error::json_error;

/// The route exempt from the request timeout (see the module docs).
pub const TICK_PATH: &str = "/internal/tick";

/// Serves `router` on `listener` with `limits` until `shutdown` completes, then drains.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let max = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let slots = Arc::new(Semaphore::new(max as usize));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            serve_connection(stream, router, limits, stop).await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it is gone.
    let _ = slots.acquire_many(max).await;
    Ok(())
}

/// Per-connection errors (reset, too many open files…) must not end the server.
async fn accept_failed(e: io::Error) {
    tracing::debug!(error = %e, "accept failed");
    if !matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    ) {
        // Out of file descriptors and the like: back off instead of spinning.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: HttpLimits,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let busy = activity.begin();
            let router = router.clone();
            async move {
                let resp = handle(router, req, limits.request_timeout).await;
                drop(busy);
                Ok::<_, std::convert::Infallible>(resp)
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_err() || *stop.borrow() {
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = activity.idle_for(limits.idle_timeout) => {
                tracing::debug!("closing an idle HTTP connection");
                return;
            }
        }
    }
}

/// Runs one request through the router, answering `408` when its response head is not
/// ready within `timeout` (the tick route excepted).
async fn handle(router: Router, req: Request<Incoming>, timeout: Duration) -> Response {
    let exempt = req.method() == Method::POST && req.uri().path() == TICK_PATH;
    let call = router.oneshot(req.map(Body::new));
    let result = if exempt {
        call.await
    } else {
        match tokio::time::timeout(timeout, call).await {
            Ok(r) => r,
            Err(_) => return json_error(StatusCode::REQUEST_TIMEOUT, "request timed out"),
        }
    };
    match result {
        Ok(resp) => resp,
        Err(never) => match never {},
    }
}

/// When a connection last moved a byte, and how many of its requests are in flight.
struct Activity {
    origin: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

/// A request in flight; dropping it marks the connection active now.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::AcqRel);
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(Arc::clone(self))
    }

    /// Completes once no request has been in flight and no byte has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.origin + Duration::from_millis(self.last_ms.load(Ordering::Acquire));
            let now = Instant::now();
            if self.in_flight.load(Ordering::Acquire) == 0 && now >= last + idle {
                return;
            }
            let wake = if now >= last + idle {
                now + idle // busy: look again later
            } else {
                last + idle
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

/// The TCP stream, noting every successful read and write in [`Activity`].
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
