//! A TCP proxy the tests put between agents and the broker to simulate a
//! network partition: while "black-holed" it swallows what clients send
//! (so PUBLISH packets vanish and no PUBACK comes back), then cuts every
//! connection and refuses new ones until it is healed. Loopback alone never
//! loses in-flight packets, so without this a lost-batch bug would go unseen.
//! It can also swallow only what the broker sends back (PUBACKs among it),
//! so published batches arrive but the client never learns it: after a cut
//! the client resends them, which is how QoS 1 duplicates happen in the field.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy.
pub struct Proxy {
    /// Where clients connect.
    pub port: u16,
    blackhole: Arc<AtomicBool>,
    deaf: Arc<AtomicBool>,
    down: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
    /// Bytes swallowed while black-holed.
    pub swallowed: Arc<AtomicU64>,
    /// Bytes from the broker swallowed while deaf.
    pub swallowed_down: Arc<AtomicU64>,
}

impl Proxy {
    /// Starts a proxy to 127.0.0.1:`target`.
    pub async fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let blackhole = Arc::new(AtomicBool::new(false));
        let deaf = Arc::new(AtomicBool::new(false));
        let down = Arc::new(AtomicBool::new(false));
        let swallowed = Arc::new(AtomicU64::new(0));
        let swallowed_down = Arc::new(AtomicU64::new(0));
        let (cut, cut_rx) = watch::channel(0u64);
        let (bh, dn, sw) = (blackhole.clone(), down.clone(), swallowed.clone());
        let (df, swd) = (deaf.clone(), swallowed_down.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if dn.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let (bh, sw, mut cut_rx) = (bh.clone(), sw.clone(), cut_rx.clone());
                let (df, swd) = (df.clone(), swd.clone());
                // Only cuts after this connection was made apply to it.
                cut_rx.borrow_and_update();
                tokio::spawn(async move {
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw_) = server.into_split();
                    let up = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if bh.load(Ordering::SeqCst) {
                                sw.fetch_add(n as u64, Ordering::SeqCst);
                                continue;
                            }
                            if sw_.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    let down_ = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match sr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if df.load(Ordering::SeqCst) {
                                swd.fetch_add(n as u64, Ordering::SeqCst);
                                continue;
                            }
                            if cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    tokio::select! {
                        _ = up => {}
                        _ = down_ => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Self {
            port,
            blackhole,
            deaf,
            down,
            cut,
            swallowed,
            swallowed_down,
        }
    }

    /// Starts swallowing client traffic (connections stay open).
    pub fn blackhole(&self) {
        self.blackhole.store(true, Ordering::SeqCst);
    }

    /// Starts swallowing what the broker sends back (PUBACKs, pings); client traffic still flows.
    pub fn deafen(&self) {
        self.deaf.store(true, Ordering::SeqCst);
    }

    /// Cuts every connection and refuses new ones.
    pub fn cut_and_refuse(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    /// Forwards normally again.
    pub fn heal(&self) {
        self.blackhole.store(false, Ordering::SeqCst);
        self.deaf.store(false, Ordering::SeqCst);
        self.down.store(false, Ordering::SeqCst);
    }
}
