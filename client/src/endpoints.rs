//! The set of endpoints a client talks to, one lazily connected channel each, and which one
//! to try next.
//!
//! Any node accepts any request (followers forward to the leader), so there is no leader
//! discovery here: the client sticks to the endpoint that last answered and moves on to the
//! next one when an attempt fails for a transport reason.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::error::ClientError;

/// How long to wait for a TCP connection: nodes are on a LAN or loopback, so a slow connect
/// means the node is down or partitioned and another one should be tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// HTTP/2 keep-alive pings detect a silently dead peer (paused process, partition), which is
/// what lets a long-lived watch stream notice it must reconnect.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A list of endpoints and the index of the preferred one.
#[derive(Debug)]
pub(crate) struct Endpoints {
    addrs: Vec<String>,
    channels: Vec<Channel>,
    preferred: AtomicUsize,
}

impl Endpoints {
    /// Parses every endpoint and prepares a lazy channel for it (no connection is made yet).
    /// Must run inside a tokio runtime.
    pub(crate) fn new(endpoints: &[String]) -> Result<Self, ClientError> {
        let addrs: Vec<String> = endpoints
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect();
        if addrs.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let channels = addrs
            .iter()
            .map(|addr| endpoint(addr).map(|e| e.connect_lazy()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            addrs,
            channels,
            preferred: AtomicUsize::new(0),
        })
    }

    pub(crate) fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// The endpoint to try now: its index and a channel to it.
    pub(crate) fn current(&self) -> (usize, Channel) {
        let index = self.preferred.load(Ordering::Relaxed) % self.channels.len();
        (index, self.channels[index].clone())
    }

    pub(crate) fn addr(&self, index: usize) -> &str {
        &self.addrs[index % self.addrs.len()]
    }

    /// Moves on from endpoint `failed` to the next one. Only the first of several concurrent
    /// callers that saw the same endpoint fail advances the index, so a burst of failures
    /// does not skip healthy endpoints.
    pub(crate) fn rotate_from(&self, failed: usize) {
        let next = (failed + 1) % self.channels.len();
        let _ = self
            .preferred
            .compare_exchange(failed, next, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// `host:port` gets `http://` in front; a full URI is taken as is.
pub(crate) fn normalize(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

fn endpoint(addr: &str) -> Result<Endpoint, ClientError> {
    let endpoint =
        Endpoint::from_shared(normalize(addr)).map_err(|e| ClientError::InvalidEndpoint {
            endpoint: addr.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_addresses_get_a_scheme() {
        assert_eq!(normalize("127.0.0.1:7070"), "http://127.0.0.1:7070");
        assert_eq!(normalize("https://percy:443"), "https://percy:443");
    }

    #[tokio::test]
    async fn empty_lists_and_bad_addresses_are_rejected() {
        assert!(matches!(
            Endpoints::new(&[" ".to_owned()]),
            Err(ClientError::NoEndpoints)
        ));
        assert!(matches!(
            Endpoints::new(&["bad host:1".to_owned()]),
            Err(ClientError::InvalidEndpoint { .. })
        ));
    }

    #[tokio::test]
    async fn rotation_advances_once_per_failed_endpoint() {
        let list: Vec<String> = ["a:1", "b:2", "c:3"].map(String::from).to_vec();
        let endpoints = Endpoints::new(&list).expect("valid endpoints");
        assert_eq!(endpoints.current().0, 0);
        endpoints.rotate_from(0);
        // A second caller that also saw endpoint 0 fail must not skip endpoint 1.
        endpoints.rotate_from(0);
        assert_eq!(endpoints.current().0, 1);
        endpoints.rotate_from(1);
        endpoints.rotate_from(2);
        assert_eq!(endpoints.current().0, 0);
        assert_eq!(endpoints.addr(1), "b:2");
    }
}
