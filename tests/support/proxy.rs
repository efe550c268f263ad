//! A TCP forwarder on 127.0.0.1 in front of a database, which a test can
//! cut: it stops accepting (new connections are refused) and closes every
//! connection it carries, as a database that went away would.

use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug)]
pub struct Proxy {
    pub port: u16,
    cut: watch::Sender<bool>,
}

impl Proxy {
    /// Forward 127.0.0.1:<port> to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().unwrap().port();
        let (cut, mut watching) = watch::channel(false);
        let carried = cut.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { break };
                        let mut stop = carried.clone();
                        tokio::spawn(async move {
                            let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                _ = stop.wait_for(|c| *c) => {}
                            }
                        });
                    }
                    _ = watching.wait_for(|c| *c) => break,
                }
            }
        });
        Proxy { port, cut }
    }

    /// Refuse new connections and close the ones carried.
    pub fn cut(&self) {
        let _ = self.cut.send(true);
    }
}
