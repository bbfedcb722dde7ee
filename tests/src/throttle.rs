//! A TCP proxy that passes a server's answers at a fixed byte rate: a slow public registry,
//! so that a copy is still running when a drill kills or restarts something. Requests pass
//! unthrottled; each connection gets the whole rate.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The proxy's accept loop; dropping it stops accepting (open connections end with the test).
pub struct Throttle {
    /// `<address>:<port>`: use it as the registry's host.
    pub host: String,
    task: JoinHandle<()>,
}

impl Throttle {
    /// Listens on `address` (the node's, so Pods reach it) and forwards to `upstream`,
    /// answering at `bytes_per_second`.
    pub async fn start(
        address: Ipv4Addr,
        upstream: SocketAddr,
        bytes_per_second: usize,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind((address, 0)).await?;
        let host = listener.local_addr()?.to_string();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        let _ = relay(client, server, bytes_per_second).await;
                    }
                });
            }
        });
        Ok(Self { host, task })
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: TcpStream, server: TcpStream, rate: usize) -> std::io::Result<()> {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let requests = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    });
    // Ten slices a second of rate/10 bytes each.
    let slice = (rate / 10).max(1);
    let mut buf = vec![0u8; slice];
    loop {
        let n = server_read.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        client_write.write_all(&buf[..n]).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    requests.abort();
    client_write.shutdown().await
}
