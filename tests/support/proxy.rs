//! A TCP forwarder on 127.0.0.1 in front of a database, which a test can
//! cut: it stops accepting (new connections are refused) and closes every
//! connection it carries, as a database that went away would. It also
//! keeps what clients sent (the statements, in the clear: no TLS), so a
//! test can check what reached the database. [`Proxy::cut_after`] cuts once
//! a given number of bytes more has reached the clients: a database that
//! goes away in the middle of a result, whatever the timing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// At most this much of what clients sent is kept.
const TAP_LIMIT: usize = 64 * 1024 * 1024;

#[derive(Debug)]
pub struct Proxy {
    pub port: u16,
    cut: watch::Sender<bool>,
    sent: Arc<Mutex<Vec<u8>>>,
    /// Bytes the server may still send to clients before the cut
    /// (`i64::MAX`: no cut armed).
    budget: Arc<AtomicI64>,
}

impl Proxy {
    /// Forward 127.0.0.1:<port> to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().unwrap().port();
        let (cut, mut watching) = watch::channel(false);
        let carried = cut.subscribe();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let tap = Arc::clone(&sent);
        let budget = Arc::new(AtomicI64::new(i64::MAX));
        let allowance = Arc::clone(&budget);
        let cutter = cut.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((inbound, _)) = accepted else { break };
                        let mut stop = carried.clone();
                        let tap = Arc::clone(&tap);
                        let allowance = Arc::clone(&allowance);
                        let cutter = cutter.clone();
                        tokio::spawn(async move {
                            let Ok(outbound) = TcpStream::connect(target).await else { return };
                            let (mut from_client, mut to_client) = inbound.into_split();
                            let (mut from_server, mut to_server) = outbound.into_split();
                            let upstream = async {
                                let mut buf = vec![0u8; 64 * 1024];
                                loop {
                                    let n = match from_client.read(&mut buf).await {
                                        Ok(0) | Err(_) => break,
                                        Ok(n) => n,
                                    };
                                    if let Ok(mut t) = tap.lock()
                                        && t.len() + n <= TAP_LIMIT
                                    {
                                        t.extend_from_slice(&buf[..n]);
                                    }
                                    if to_server.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            };
                            let downstream = async {
                                let mut buf = vec![0u8; 64 * 1024];
                                loop {
                                    let n = match from_server.read(&mut buf).await {
                                        Ok(0) | Err(_) => break,
                                        Ok(n) => n,
                                    };
                                    let left = allowance.fetch_sub(n as i64, Ordering::SeqCst) - n as i64;
                                    let n = if left < 0 {
                                        (n as i64 + left).max(0) as usize
                                    } else {
                                        n
                                    };
                                    if to_client.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                    if left <= 0 {
                                        let _ = cutter.send(true);
                                        break;
                                    }
                                }
                            };
                            tokio::select! {
                                _ = upstream => {}
                                _ = downstream => {}
                                _ = stop.wait_for(|c| *c) => {}
                            }
                        });
                    }
                    _ = watching.wait_for(|c| *c) => break,
                }
            }
        });
        Proxy {
            port,
            cut,
            sent,
            budget,
        }
    }

    /// Refuse new connections and close the ones carried.
    pub fn cut(&self) {
        let _ = self.cut.send(true);
    }

    /// Cut (as [`Self::cut`]) once the server has sent `bytes` more to
    /// clients, over every connection carried.
    pub fn cut_after(&self, bytes: u64) {
        self.budget
            .store(i64::try_from(bytes).unwrap_or(i64::MAX), Ordering::SeqCst);
    }

    /// Everything clients sent so far, as text (lossy).
    pub fn sent(&self) -> String {
        String::from_utf8_lossy(&self.sent.lock().unwrap()).into_owned()
    }

    /// Forget what was sent so far.
    pub fn clear(&self) {
        self.sent.lock().unwrap().clear();
    }
}
