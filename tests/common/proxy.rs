//! A TCP proxy that can cut or stall its connections, to take a dependency down for one
//! test without touching the shared server.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forwards both ways.
    Forward,
    /// Closes connections, as a server that is down would.
    Cut,
    /// Holds connections open and forwards nothing, as a server that hangs would.
    Stall,
}

/// Forwards connections to `upstream` until cut or stalled.
pub struct TcpProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
}

impl TcpProxy {
    /// A proxy to `upstream` (`host:port`) on a free local port.
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (mode, watching) = watch::channel(Mode::Forward);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut watching = watching.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if *watching.borrow() == Mode::Forward {
                        let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
                            _ = watching.wait_for(|m| *m != Mode::Forward) => {}
                        }
                    }
                    // Stalled: hold the connection, silent, until cut or forwarding again
                    // (then close it; the client reconnects). Cut: close it now.
                    let _ = watching.wait_for(|m| *m != Mode::Stall).await;
                });
            }
        });
        Self { addr, mode }
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Holds every connection open and answers nothing.
    pub fn stall(&self) {
        self.mode.send_replace(Mode::Stall);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.mode.send_replace(Mode::Forward);
    }
}
