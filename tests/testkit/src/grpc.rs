//! Talking to a node directly: a channel, and its metrics.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

/// A lazy channel to `addr` (it connects on the first call).
pub async fn channel(addr: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("a host:port")
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy()
}

/// The value of the un-labelled metric `name` in `addr`'s /metrics.
pub async fn metric(addr: &str, name: &str) -> f64 {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect for /metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: percy\r\nConnection: close\r\n\r\n")
        .await
        .expect("send GET /metrics");
    let mut body = String::new();
    stream
        .read_to_string(&mut body)
        .await
        .expect("read /metrics");
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in {body}"))
}
