//! The set of endpoints a client talks to, one lazily connected channel each, and which one
//! to try next.
//!
//! Any node accepts any request (followers forward writes to the leader and ask it for the read
//! index of a linearizable read), so a client may use any endpoint: it sticks to the one that
//! last answered and moves on to the next one when an attempt fails for a transport reason.
//! Calls that involve the leader anyway — writes and linearizable reads — prefer the leader's
//! endpoint: every answer names the answering node and its leader (`percy_proto::routing`
//! metadata), and once the leader is one of our endpoints their first attempt goes there,
//! saving the follower's hop (and, for a read, the wait for the follower to apply up to the
//! leader's commit). This is only a preference: every node answers these calls the same way,
//! so a wrong or stale guess costs time, never correctness.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::error::ClientError;
use crate::security::{Credential, Security};

/// A channel to one endpoint that sends the client's credential with every call.
pub(crate) type Conn = InterceptedService<Channel, Credential>;

/// How long to wait for a TCP connection: nodes are on a LAN or loopback, so a slow connect
/// means the node is down or partitioned and another one should be tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// HTTP/2 keep-alive pings detect a silently dead peer (paused process, partition), which is
/// what lets a long-lived watch stream notice it must reconnect.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// `node_ids` entry of an endpoint that has not answered yet.
const NOT_ANSWERED: u64 = 0;
/// `node_ids` entry of an endpoint whose last leader-routed attempt failed: neither a leader
/// candidate nor worth probing until it answers again.
const FAILED: u64 = u64::MAX;

/// A list of endpoints, the index of the preferred one, and what their answers taught us.
#[derive(Debug)]
pub(crate) struct Endpoints {
    addrs: Vec<String>,
    channels: Vec<Conn>,
    preferred: AtomicUsize,
    /// The node id behind each endpoint, as it last named itself ([`NOT_ANSWERED`], [`FAILED`]).
    node_ids: Vec<AtomicU64>,
    /// The leader as the latest answer named it (0 = unknown).
    leader: AtomicU64,
}

impl Endpoints {
    /// Parses every endpoint and prepares a lazy channel for it (no connection is made yet).
    /// Must run inside a tokio runtime.
    pub(crate) fn new(endpoints: &[String], security: &Security) -> Result<Self, ClientError> {
        let addrs: Vec<String> = endpoints
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect();
        if addrs.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let credential = Credential::new(security.token.as_deref())?;
        let channels = addrs
            .iter()
            .map(|addr| {
                let channel = endpoint(addr, security)?.connect_lazy();
                Ok(InterceptedService::new(channel, credential.clone()))
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        let node_ids = addrs.iter().map(|_| AtomicU64::new(NOT_ANSWERED)).collect();
        Ok(Self {
            addrs,
            channels,
            preferred: AtomicUsize::new(0),
            node_ids,
            leader: AtomicU64::new(0),
        })
    }

    pub(crate) fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// The endpoint to try now: its index and a channel to it.
    pub(crate) fn current(&self) -> (usize, Conn) {
        let index = self.preferred.load(Ordering::Relaxed) % self.channels.len();
        (index, self.channels[index].clone())
    }

    /// The endpoint for the first attempt of a leader-routed call: the leader's when we know
    /// which one it is; else one that has not answered yet (its answer names it, so a few
    /// calls find the leader); else the preferred one (whose node goes to the leader for us).
    pub(crate) fn for_leader(&self) -> (usize, Conn) {
        let leader = self.leader.load(Ordering::Relaxed);
        let id_of = |i: usize| self.node_ids[i].load(Ordering::Relaxed);
        let chosen = (0..self.channels.len())
            .find(|&i| leader != 0 && id_of(i) == leader)
            .or_else(|| (0..self.channels.len()).find(|&i| id_of(i) == NOT_ANSWERED));
        match chosen {
            Some(index) => (index, self.channels[index].clone()),
            None => self.current(),
        }
    }

    /// Records what the answer from endpoint `index` said: who answered and who leads.
    pub(crate) fn learn(&self, index: usize, node_id: u64, leader_id: u64) {
        if node_id != NOT_ANSWERED && node_id != FAILED {
            self.node_ids[index].store(node_id, Ordering::Relaxed);
        }
        self.leader.store(leader_id, Ordering::Relaxed);
    }

    /// Endpoint `index` failed a leader-routed attempt: stop trying it first until it answers
    /// again.
    pub(crate) fn leader_attempt_failed(&self, index: usize) {
        self.node_ids[index].store(FAILED, Ordering::Relaxed);
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

/// `host:port` gets `http://` in front (`https://` with TLS); a full URI is taken as is.
pub(crate) fn normalize(addr: &str, tls: bool) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else if tls {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    }
}

fn endpoint(addr: &str, security: &Security) -> Result<Endpoint, ClientError> {
    let mut endpoint =
        Endpoint::from_shared(normalize(addr, security.tls.is_some())).map_err(|e| {
            ClientError::InvalidEndpoint {
                endpoint: addr.to_owned(),
                reason: e.to_string(),
            }
        })?;
    // A bare address must say where: `nonsense` parses as a URI (host `nonsense`, port 80),
    // and would only fail after the whole retry deadline, as a connection error.
    if !addr.contains("://") && endpoint.uri().port().is_none() {
        return Err(ClientError::InvalidEndpoint {
            endpoint: addr.to_owned(),
            reason: "expected host:port".to_owned(),
        });
    }
    if let Some(tls) = &security.tls {
        endpoint = endpoint
            .tls_config(tls.config())
            .map_err(|e| ClientError::Tls {
                endpoint: addr.to_owned(),
                reason: e.to_string(),
            })?;
    }
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
        assert_eq!(normalize("127.0.0.1:7070", false), "http://127.0.0.1:7070");
        assert_eq!(normalize("127.0.0.1:7070", true), "https://127.0.0.1:7070");
        assert_eq!(normalize("https://percy:443", false), "https://percy:443");
    }

    #[tokio::test]
    async fn empty_lists_and_bad_addresses_are_rejected() {
        assert!(matches!(
            Endpoints::new(&[" ".to_owned()], &Security::default()),
            Err(ClientError::NoEndpoints)
        ));
        for bad in ["bad host:1", "nonsense", "127.0.0.1"] {
            assert!(
                matches!(
                    Endpoints::new(&[bad.to_owned()], &Security::default()),
                    Err(ClientError::InvalidEndpoint { .. })
                ),
                "{bad}"
            );
        }
        Endpoints::new(&["https://percy.example".to_owned()], &Security::default())
            .expect("a full URI needs no port");
    }

    #[tokio::test]
    async fn rotation_advances_once_per_failed_endpoint() {
        let list: Vec<String> = ["a:1", "b:2", "c:3"].map(String::from).to_vec();
        let endpoints = Endpoints::new(&list, &Security::default()).expect("valid endpoints");
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

    #[tokio::test]
    async fn leader_routing_finds_the_leader_and_leaves_it_when_it_fails() {
        let list: Vec<String> = ["a:1", "b:2", "c:3"].map(String::from).to_vec();
        let endpoints = Endpoints::new(&list, &Security::default()).expect("valid endpoints");
        // Nothing known: the first endpoint that has not answered.
        assert_eq!(endpoints.for_leader().0, 0);
        // Endpoint 0 is node 7 and names node 9 as the leader, which nobody has shown yet.
        endpoints.learn(0, 7, 9);
        assert_eq!(endpoints.for_leader().0, 1);
        endpoints.learn(1, 8, 9);
        assert_eq!(endpoints.for_leader().0, 2);
        endpoints.learn(2, 9, 9);
        assert_eq!(endpoints.for_leader().0, 2, "the leader's endpoint");
        // The leader's endpoint fails: the preferred endpoint is used (its node forwards).
        endpoints.leader_attempt_failed(2);
        assert_eq!(endpoints.for_leader().0, endpoints.current().0);
        // A new leader, named by an answer, is used at once.
        endpoints.learn(0, 7, 8);
        assert_eq!(endpoints.for_leader().0, 1);
        // An answer from the failed endpoint makes it a candidate again.
        endpoints.learn(2, 9, 9);
        assert_eq!(endpoints.for_leader().0, 2);
        // No leader known and every endpoint answered: the preferred one.
        endpoints.learn(1, 8, 0);
        assert_eq!(endpoints.for_leader().0, endpoints.current().0);
    }
}
