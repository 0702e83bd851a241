//! LockService: all-or-nothing multi-path acquire (optionally waiting in the FIFO queue),
//! release, list.

use std::time::Duration;

use percy_proto::v1::lock_service_client::LockServiceClient;
use percy_proto::v1::{
    AcquireLocksRequest, AcquireLocksResponse, Consistency, ListLocksRequest, ListLocksResponse,
    LockMode, ReleaseLocksRequest, ReleaseLocksResponse,
};

use super::paging::read_all_pages;
use crate::{Client, ClientError};

/// Slack added to the RPC deadline of a waiting acquire, beyond the server-side wait, so
/// the server's own answer (granted, or `DeadlineExceeded` and dequeued) arrives first.
const LOCK_WAIT_MARGIN: Duration = Duration::from_secs(2);

/// What to lock and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRequest {
    pub agent_id: u64,
    pub paths: Vec<String>,
    pub mode: LockMode,
    /// The task the locks are for (shown in listings, released with it).
    pub task_id: Option<String>,
    /// Lease: the grant lapses after this long unless released earlier.
    pub ttl: Option<Duration>,
    /// Queue and wait up to this long on conflict; `None` fails at once.
    pub wait: Option<Duration>,
}

impl LockRequest {
    /// An exclusive lock on `paths` that fails at once on conflict.
    pub fn exclusive(agent_id: u64, paths: Vec<String>) -> Self {
        Self {
            agent_id,
            paths,
            mode: LockMode::Exclusive,
            task_id: None,
            ttl: None,
            wait: None,
        }
    }

    /// A shared lock on `paths` that fails at once on conflict.
    pub fn shared(agent_id: u64, paths: Vec<String>) -> Self {
        Self {
            mode: LockMode::Shared,
            ..Self::exclusive(agent_id, paths)
        }
    }
}

impl Client {
    /// Acquires every path or none. On conflict: `FailedPrecondition` at once, or — with a
    /// `wait` — the server holds the call until granted or `DeadlineExceeded`.
    pub async fn acquire_locks(
        &self,
        lock: &LockRequest,
    ) -> Result<AcquireLocksResponse, ClientError> {
        let wait = lock.wait.unwrap_or_default();
        let extra_time = if wait.is_zero() {
            Duration::ZERO
        } else {
            wait + LOCK_WAIT_MARGIN
        };
        self.mutate(extra_time, |channel, header| {
            let request = AcquireLocksRequest {
                header: Some(header),
                agent_id: lock.agent_id,
                paths: lock.paths.clone(),
                mode: lock.mode as i32,
                task_id: lock.task_id.clone().unwrap_or_default(),
                ttl_ms: duration_ms(lock.ttl),
                wait_ms: duration_ms(lock.wait),
            };
            async move { LockServiceClient::new(channel).acquire(request).await }
        })
        .await
    }

    /// Releases `paths` held by the agent; an empty list releases all of them.
    pub async fn release_locks(
        &self,
        agent_id: u64,
        paths: &[String],
    ) -> Result<ReleaseLocksResponse, ClientError> {
        self.mutate(Default::default(), |channel, header| {
            let request = ReleaseLocksRequest {
                header: Some(header),
                agent_id,
                paths: paths.to_vec(),
            };
            async move { LockServiceClient::new(channel).release(request).await }
        })
        .await
    }

    /// Releases every lock the agent holds.
    pub async fn release_all_locks(
        &self,
        agent_id: u64,
    ) -> Result<ReleaseLocksResponse, ClientError> {
        self.release_locks(agent_id, &[]).await
    }

    /// Held locks and queued waiters under `prefix` ("" = all).
    pub async fn list_locks(
        &self,
        prefix: &str,
        consistency: Consistency,
    ) -> Result<ListLocksResponse, ClientError> {
        read_all_pages(|page_token| {
            self.read(consistency, move |channel, header| {
                let request = ListLocksRequest {
                    header: Some(header),
                    prefix: prefix.to_owned(),
                    limit: 0,
                    page_token: page_token.clone(),
                };
                async move { LockServiceClient::new(channel).list(request).await }
            })
        })
        .await
    }
}

/// Milliseconds on the wire, 0 meaning "none"; saturates instead of wrapping.
fn duration_ms(duration: Option<Duration>) -> u64 {
    duration.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
