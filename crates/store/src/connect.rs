//! How the pool opens a connection: the socket (TCP with keepalives and a TCP user
//! timeout, or a Unix socket), and a **response watchdog** on it.
//!
//! A half-open connection (a partition, a NAT that forgot the flow, a proxy that stopped
//! forwarding) answers nothing, and TCP alone may not notice for a long time: a proxy's
//! kernel keeps acknowledging. The watchdog knows whether the server owes an answer — it
//! counts the frontend messages that end a request (`Sync`, `Query`, the startup message)
//! and the server's `ReadyForQuery` replies — and fails the socket when the server owes
//! one and has sent no byte for `response_timeout`. Every statement carries a server-side
//! `statement_timeout`, so a live server always answers (a result or a cancellation)
//! before `statement_timeout`; the watchdog is set a grace period beyond it. The failed
//! socket closes the connection: the statement waiting on it ends with a
//! connection-lost error, and the pool discards the connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::{Instant, Sleep};
use tokio_postgres::config::Host;
use tokio_postgres::NoTls;

/// Socket settings of one connection.
#[derive(Debug, Clone)]
pub(crate) struct SocketSettings {
    pub connect_timeout: Duration,
    pub keepalive_idle: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_retries: u32,
    /// `None`: no watchdog (migrations: an index build may take long).
    pub response_timeout: Option<Duration>,
}

impl SocketSettings {
    /// TCP user timeout: unacknowledged data is given up after as long as the keepalive
    /// probes take to declare an idle peer dead.
    pub fn tcp_user_timeout(&self) -> Duration {
        self.keepalive_idle + self.keepalive_interval * self.keepalive_retries
    }
}

/// deadpool's connect hook: our socket, then the PostgreSQL startup on it.
pub(crate) struct WatchedConnect(pub SocketSettings);

impl deadpool_postgres::Connect for WatchedConnect {
    fn connect(
        &self,
        pg: &tokio_postgres::Config,
    ) -> BoxFuture<
        '_,
        Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>,
    > {
        let pg = pg.clone();
        Box::pin(async move {
            let (client, conn) = connect(&pg, &self.0).await?;
            let task = tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "database connection ended");
                }
            });
            Ok((client, task))
        })
    }
}

/// Opens one connection with `settings` (the caller drives the connection future).
pub(crate) async fn connect(
    pg: &tokio_postgres::Config,
    settings: &SocketSettings,
) -> Result<
    (
        tokio_postgres::Client,
        tokio_postgres::Connection<DbStream, tokio_postgres::tls::NoTlsStream>,
    ),
    tokio_postgres::Error,
> {
    let inner = match open_socket(pg, settings).await {
        Ok(s) => s,
        // tokio-postgres errors have no public constructor: a stream that fails at once
        // turns the socket error into one (kind "io", with the cause).
        Err(e) => Inner::Failed(Some(e)),
    };
    let stream = DbStream::new(inner, settings.response_timeout);
    pg.connect_raw(stream, NoTls).await
}

/// The first host (in the URL's order) that accepts a connection.
async fn open_socket(pg: &tokio_postgres::Config, s: &SocketSettings) -> io::Result<Inner> {
    let ports = pg.get_ports();
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no host in the database URL");
    for (i, host) in pg.get_hosts().iter().enumerate() {
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let attempt = async {
            match host {
                Host::Tcp(name) => {
                    let stream = match pg.get_hostaddrs().get(i) {
                        Some(ip) => TcpStream::connect((*ip, port)).await?,
                        None => TcpStream::connect((name.as_str(), port)).await?,
                    };
                    stream.set_nodelay(true)?;
                    let sock = socket2::SockRef::from(&stream);
                    sock.set_tcp_keepalive(
                        &socket2::TcpKeepalive::new()
                            .with_time(s.keepalive_idle)
                            .with_interval(s.keepalive_interval)
                            .with_retries(s.keepalive_retries),
                    )?;
                    #[cfg(target_os = "linux")]
                    sock.set_tcp_user_timeout(Some(s.tcp_user_timeout()))?;
                    Ok(Inner::Tcp(stream))
                }
                Host::Unix(dir) => {
                    let path = dir.join(format!(".s.PGSQL.{port}"));
                    Ok(Inner::Unix(UnixStream::connect(path).await?))
                }
            }
        };
        match tokio::time::timeout(s.connect_timeout, attempt).await {
            Ok(Ok(inner)) => return Ok(inner),
            Ok(Err(e)) => last = e,
            Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, "database connect timed out"),
        }
    }
    Err(last)
}

pub(crate) enum Inner {
    Tcp(TcpStream),
    Unix(UnixStream),
    Failed(Option<io::Error>),
}

/// The socket under one connection, with the response watchdog.
pub struct DbStream {
    inner: Inner,
    timeout: Option<Duration>,
    sleep: Pin<Box<Sleep>>,
    /// When the server last sent a byte, or when it began to owe an answer.
    last_progress: Instant,
    sent: Framer,
    received: Framer,
}

impl DbStream {
    fn new(inner: Inner, timeout: Option<Duration>) -> Self {
        Self {
            inner,
            timeout,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            last_progress: Instant::now(),
            // The startup message has no type byte; it is answered by ReadyForQuery.
            sent: Framer::frontend(),
            received: Framer::backend(),
        }
    }

    /// The server owes a ReadyForQuery.
    fn owed(&self) -> bool {
        self.sent.ends > self.received.ends
    }

    /// Arms the timer for the current deadline (registering `cx` to be woken); answers
    /// true when the deadline has passed.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(timeout) = self.timeout else {
            return false;
        };
        let deadline = self.last_progress + timeout;
        if Instant::now() >= deadline {
            return true;
        }
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        self.sleep.as_mut().poll(cx).is_ready()
    }
}

fn failed(e: &mut Option<io::Error>) -> io::Error {
    e.take()
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "no database connection"))
}

impl AsyncRead for DbStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = match &mut this.inner {
            Inner::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Failed(e) => Poll::Ready(Err(failed(e))),
        };
        match polled {
            Poll::Ready(Ok(())) => {
                let got = &buf.filled()[before..];
                if !got.is_empty() {
                    this.received.feed(got, b'Z');
                    this.last_progress = Instant::now();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.owed() && this.expired(cx) => {
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the database did not answer within the response timeout (statement timeout + grace): connection dropped",
                )))
            }
            other => other,
        }
    }
}

impl AsyncWrite for DbStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Tcp(s) => Pin::new(s).poll_write(cx, data),
            Inner::Unix(s) => Pin::new(s).poll_write(cx, data),
            Inner::Failed(e) => Poll::Ready(Err(failed(e))),
        };
        if let Poll::Ready(Ok(n)) = polled {
            let owed_before = this.owed();
            this.sent.feed(&data[..n], b'S');
            if !owed_before && this.owed() {
                this.last_progress = Instant::now();
            }
            if this.owed() {
                // The connection task reads before it writes: arm the timer here so it is
                // woken if the answer never comes.
                let _ = this.expired(cx);
            }
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Tcp(s) => Pin::new(s).poll_flush(cx),
            Inner::Unix(s) => Pin::new(s).poll_flush(cx),
            Inner::Failed(e) => Poll::Ready(Err(failed(e))),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Failed(_) => Poll::Ready(Ok(())),
        }
    }
}

/// Splits one direction of the protocol into messages (type byte + 4-byte length that
/// counts itself) and counts the messages that end a request (frontend `S`ync and
/// `Q`uery, plus the untyped startup message) or answer one (backend `Z`).
#[derive(Debug)]
struct Framer {
    /// The next message has no type byte (the frontend's startup message).
    untyped_next: bool,
    header: [u8; 5],
    have: usize,
    skip: u64,
    ends: u64,
}

impl Framer {
    fn frontend() -> Self {
        Self {
            untyped_next: true,
            header: [0; 5],
            have: 0,
            skip: 0,
            ends: 0,
        }
    }

    fn backend() -> Self {
        Self {
            untyped_next: false,
            ..Self::frontend()
        }
    }

    fn feed(&mut self, mut bytes: &[u8], end_type: u8) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len() as u64) as usize;
                self.skip -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let header_len = if self.untyped_next { 4 } else { 5 };
            let n = (header_len - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have < header_len {
                return;
            }
            let len_at = header_len - 4;
            let len = u32::from_be_bytes([
                self.header[len_at],
                self.header[len_at + 1],
                self.header[len_at + 2],
                self.header[len_at + 3],
            ]);
            let is_end = if self.untyped_next {
                // A startup message is answered; an SSL or cancel request is not sent here.
                true
            } else {
                self.header[0] == end_type || (end_type == b'S' && self.header[0] == b'Q')
            };
            if is_end {
                self.ends += 1;
            }
            self.untyped_next = false;
            self.have = 0;
            self.skip = u64::from(len.saturating_sub(4));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![ty];
        v.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn frontend_counts_startup_sync_and_query_across_any_split() {
        let mut stream = Vec::new();
        stream.extend_from_slice(&12u32.to_be_bytes());
        stream.extend_from_slice(&[0, 3, 0, 0, 1, 2, 3, 4]);
        stream.extend(msg(b'p', b"secret\0"));
        stream.extend(msg(b'P', b"\0SELECT 1\0\0\0"));
        stream.extend(msg(b'B', &[0; 10]));
        stream.extend(msg(b'E', &[0; 5]));
        stream.extend(msg(b'S', b""));
        stream.extend(msg(b'Q', b"SELECT 'S'\0"));
        for chunk in [1, 2, 3, 7, 1000] {
            let mut f = Framer::frontend();
            for piece in stream.chunks(chunk) {
                f.feed(piece, b'S');
            }
            assert_eq!(f.ends, 3, "chunk {chunk}");
        }
    }

    #[test]
    fn backend_counts_ready_for_query_only() {
        let mut stream = Vec::new();
        stream.extend(msg(b'R', &[0; 4]));
        stream.extend(msg(b'S', b"a\0b\0"));
        stream.extend(msg(b'Z', b"I"));
        stream.extend(msg(b'D', b"ZZZZZZ"));
        stream.extend(msg(b'Z', b"T"));
        for chunk in [1, 4, 1000] {
            let mut f = Framer::backend();
            for piece in stream.chunks(chunk) {
                f.feed(piece, b'Z');
            }
            assert_eq!(f.ends, 2, "chunk {chunk}");
        }
    }
}
