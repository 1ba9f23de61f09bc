//! A TCP proxy to a test cluster that can **black-hole** its traffic — nothing forwarded
//! either way, every socket kept open, as a network partition looks to the service — and
//! **heal** (the connections of the black-holed era are closed; new ones are forwarded).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// `(epoch, black-holed)`: connections die when the epoch moves on.
type State = (u64, bool);

/// A running proxy on `127.0.0.1:port()`; it stops when dropped.
pub struct Proxy {
    port: u16,
    state: watch::Sender<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.state.send_modify(|s| s.0 += 1);
    }
}

impl Proxy {
    /// Forwards `127.0.0.1:<new port>` to `127.0.0.1:upstream`.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (state, _) = watch::channel((0u64, false));
        let tx = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let epoch = tx.borrow().0;
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, tx.subscribe(), epoch));
                tokio::spawn(pump(sr, cw, tx.subscribe(), epoch));
            }
        });
        Proxy { port, state, task }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// From now on nothing is forwarded (connections stay open).
    pub fn black_hole(&self) {
        self.state.send_modify(|s| s.1 = true);
    }

    /// Closes every connection opened so far and forwards new ones again.
    pub fn heal(&self) {
        self.state.send_modify(|s| *s = (s.0 + 1, false));
    }
}

async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut state: watch::Receiver<State>,
    epoch: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let (now, holed) = *state.borrow_and_update();
        if now != epoch {
            return;
        }
        if holed {
            if state.changed().await.is_err() {
                return;
            }
            continue;
        }
        tokio::select! {
            read = from.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let (now, holed) = *state.borrow();
                if now != epoch || holed {
                    continue; // swallowed by the black hole
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}
