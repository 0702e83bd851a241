//! `Client`: a cheap-to-clone handle on a Percy cluster, and the one retry loop every call
//! goes through. The typed methods live in `api/`, one file per service.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use percy_proto::routing;
use percy_proto::v1::{Consistency, RequestHeader};
use tokio::time::Instant;
use tonic::metadata::MetadataMap;

use crate::endpoints::{Conn, Endpoints};
use crate::error::ClientError;
use crate::retry::{is_retryable, RetryPolicy};
use crate::security::Security;
use crate::session::{read_header, Session};

/// A handle on a Percy cluster. Clones share the channels and the exactly-once session, so
/// one `Client` can serve many concurrent tasks.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
    retry: RetryPolicy,
}

#[derive(Debug)]
struct Inner {
    endpoints: Endpoints,
    security: Security,
    session: Arc<Session>,
}

impl Client {
    /// A client for these endpoints (`host:port` or `http://host:port`). Conns connect
    /// lazily, so this succeeds even while the cluster is down; calls then retry until the
    /// policy's deadline.
    pub async fn connect(endpoints: &[String]) -> Result<Client, ClientError> {
        Self::connect_with(endpoints, RetryPolicy::default()).await
    }

    /// Like [`Client::connect`], with a retry policy.
    pub async fn connect_with(
        endpoints: &[String],
        retry: RetryPolicy,
    ) -> Result<Client, ClientError> {
        Self::connect_secure(endpoints, retry, &Security::default()).await
    }

    /// Like [`Client::connect_with`], with a token and/or TLS ([`Security`]).
    pub async fn connect_secure(
        endpoints: &[String],
        retry: RetryPolicy,
        security: &Security,
    ) -> Result<Client, ClientError> {
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints: Endpoints::new(endpoints, security)?,
                security: security.clone(),
                session: Session::new(),
            }),
            retry,
        })
    }

    /// The random id that tags this client's mutating calls.
    pub fn client_id(&self) -> u64 {
        self.inner.session.client_id()
    }

    pub fn endpoints(&self) -> &[String] {
        self.inner.endpoints.addrs()
    }

    /// The token and TLS settings this client was made with (for clients of single
    /// endpoints, such as a per-node status report).
    pub fn security(&self) -> &Security {
        &self.inner.security
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// A clone (same channels, same session) that retries according to `retry`.
    pub fn with_retry(&self, retry: RetryPolicy) -> Client {
        Client {
            inner: Arc::clone(&self.inner),
            retry,
        }
    }

    /// A clone whose calls give up after `deadline` in total.
    pub fn with_deadline(&self, deadline: Duration) -> Client {
        self.with_retry(self.retry.with_deadline(deadline))
    }

    /// Runs a mutating call: one seq for the logical call, reused by every retry.
    /// `extra_time` extends both the attempt timeout and the deadline, for calls the server
    /// holds on purpose (a lock acquire that waits).
    pub(crate) async fn mutate<T, F, Fut>(
        &self,
        extra_time: Duration,
        call: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(Conn, RequestHeader) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let in_flight = self.inner.session.begin();
        self.run(Route::Leader, || in_flight.header(), extra_time, call)
            .await
    }

    /// Runs a read (untracked: reads are idempotent).
    pub(crate) async fn read<T, F, Fut>(
        &self,
        consistency: Consistency,
        call: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(Conn, RequestHeader) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let route = if consistency == Consistency::Serializable {
            Route::Sticky
        } else {
            Route::Leader
        };
        self.run(route, || read_header(consistency), Duration::ZERO, call)
            .await
    }

    /// A linearizable read that may take `extra_time` beyond the usual attempt timeout and
    /// deadline (a backup image streamed whole).
    pub(crate) async fn long_read<T, F, Fut>(
        &self,
        extra_time: Duration,
        call: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(Conn, RequestHeader) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.run(
            Route::Leader,
            || read_header(Consistency::Linearizable),
            extra_time,
            call,
        )
        .await
    }

    /// Runs a call that is idempotent by nature and needs no seq (heartbeats).
    pub(crate) async fn idempotent<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: FnMut(Conn, RequestHeader) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.run(Route::Sticky, RequestHeader::default, Duration::ZERO, call)
            .await
    }

    async fn run<T, H, F, Fut>(
        &self,
        route: Route,
        header: H,
        extra_time: Duration,
        mut call: F,
    ) -> Result<T, ClientError>
    where
        H: Fn() -> RequestHeader,
        F: FnMut(Conn, RequestHeader) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let started = Instant::now();
        let deadline = started + self.retry.deadline + extra_time;
        let endpoints = &self.inner.endpoints;
        let mut attempts = 0u32;
        let mut redirected = false;
        loop {
            // Only the first attempt, and one right after a node named another leader, goes to
            // the leader we learnt of; other retries rotate like any call's, so a leader that
            // stopped answering is not tried again and again.
            let to_leader = route == Route::Leader && (attempts == 0 || redirected);
            let (index, channel) = if to_leader {
                endpoints.for_leader()
            } else {
                endpoints.current()
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let budget = (self.retry.attempt_timeout + extra_time).min(remaining);
            attempts += 1;
            let error = match tokio::time::timeout(budget, call(channel, header())).await {
                Ok(Ok(response)) => {
                    learn_routing(endpoints, index, response.metadata());
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => {
                    learn_routing(endpoints, index, status.metadata());
                    redirected = names_another_leader(status.metadata());
                    if !is_retryable(&status) {
                        return Err(status.into());
                    }
                    ClientError::Status(status)
                }
                Err(_elapsed) => {
                    redirected = false;
                    ClientError::AttemptTimeout {
                        endpoint: endpoints.addr(index).to_owned(),
                        timeout: budget,
                    }
                }
            };
            if route == Route::Leader {
                endpoints.leader_attempt_failed(index);
            }
            endpoints.rotate_from(index);
            let endpoint = endpoints.addr(index);
            back_off_or_give_up(&self.retry, attempts, started, deadline, error, endpoint).await?;
        }
    }

    /// The endpoint list and current preferred channel, for the watch stream (which manages
    /// its own reconnects).
    pub(crate) fn current_channel(&self) -> (usize, Conn) {
        self.inner.endpoints.current()
    }

    /// The state machine revision of the node behind `channel`, asked of that node alone
    /// (no retries): the watch stream uses it to pin "now".
    pub(crate) async fn single_status(&self, channel: Conn) -> Result<u64, tonic::Status> {
        let request = percy_proto::v1::ClusterStatusRequest {
            header: Some(read_header(Consistency::Serializable)),
        };
        let response = percy_proto::v1::cluster_service_client::ClusterServiceClient::new(channel)
            .status(request)
            .await?;
        Ok(response.into_inner().header.map_or(0, |h| h.revision))
    }

    pub(crate) fn endpoint_addr(&self, index: usize) -> &str {
        self.inner.endpoints.addr(index)
    }

    pub(crate) fn rotate_from(&self, failed: usize) {
        self.inner.endpoints.rotate_from(failed);
    }
}

/// Where a call's first attempt goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// The leader's endpoint when known: writes and linearizable reads, which need the
    /// leader wherever they arrive.
    Leader,
    /// The endpoint that last answered: serializable reads and heartbeats, which the
    /// answering node serves or relays itself, spread over the nodes.
    Sticky,
}

/// The answering node's id and the leader it names (0: none known), from its routing
/// metadata (`percy_proto::routing`), if it sent any.
fn routing_ids(metadata: &MetadataMap) -> Option<(u64, u64)> {
    let id = |key: &str| -> Option<u64> { metadata.get(key)?.to_str().ok()?.parse().ok() };
    Some((id(routing::NODE_ID)?, id(routing::LEADER_ID)?))
}

/// Records who answered on endpoint `index` and who it says leads.
fn learn_routing(endpoints: &Endpoints, index: usize, metadata: &MetadataMap) {
    if let Some((node_id, leader_id)) = routing_ids(metadata) {
        endpoints.learn(index, node_id, leader_id);
    }
}

/// Whether an answer came from a node that names another node as the leader (a follower
/// that could not serve the call itself).
fn names_another_leader(metadata: &MetadataMap) -> bool {
    routing_ids(metadata).is_some_and(|(node_id, leader_id)| leader_id != 0 && leader_id != node_id)
}

/// After failed attempt number `attempts` of a call that started at `started`: sleeps the
/// jittered backoff and returns, so the caller tries again (on the next endpoint), or — when
/// that pause would run past `deadline` — returns the error that ends the call, carrying the
/// last attempt's failure.
pub(crate) async fn back_off_or_give_up(
    retry: &RetryPolicy,
    attempts: u32,
    started: Instant,
    deadline: Instant,
    error: ClientError,
    endpoint: &str,
) -> Result<(), ClientError> {
    let pause = retry.backoff(attempts - 1, rand::random::<f64>());
    if Instant::now() + pause >= deadline {
        return Err(ClientError::Unavailable {
            attempts,
            elapsed: started.elapsed(),
            last: Box::new(error),
        });
    }
    tracing::debug!(endpoint, attempts, ?pause, %error, "retrying on the next endpoint");
    tokio::time::sleep(pause).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tonic::{Code, Response, Status};

    use super::*;

    async fn client() -> Client {
        let endpoints = ["a:1", "b:2", "c:3"].map(String::from);
        Client::connect(&endpoints).await.unwrap()
    }

    /// Records (endpoint index, header) of every attempt and answers from a script.
    struct Script {
        attempts: Mutex<Vec<(usize, RequestHeader)>>,
        answers: Mutex<Vec<Option<Result<u32, Status>>>>,
    }

    impl Script {
        fn new(answers: Vec<Option<Result<u32, Status>>>) -> Self {
            Self {
                attempts: Mutex::new(Vec::new()),
                answers: Mutex::new(answers.into_iter().rev().collect()),
            }
        }

        /// The next scripted answer; `None` hangs forever (a paused node).
        async fn answer(
            &self,
            client: &Client,
            header: RequestHeader,
        ) -> Result<Response<u32>, Status> {
            let index = client.current_channel().0;
            self.attempts.lock().unwrap().push((index, header));
            let answer = self
                .answers
                .lock()
                .unwrap()
                .pop()
                .unwrap_or(Some(Err(Status::unavailable("down"))));
            match answer {
                Some(result) => result.map(Response::new),
                None => std::future::pending().await,
            }
        }

        fn attempts(&self) -> Vec<(usize, RequestHeader)> {
            self.attempts.lock().unwrap().clone()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_reuse_the_seq_and_rotate_endpoints() {
        let client = client().await;
        let script = Script::new(vec![
            Some(Err(Status::unavailable("no leader"))),
            Some(Err(Status::unavailable("no leader"))),
            Some(Ok(5)),
        ]);
        let answer = client
            .mutate(Duration::ZERO, |_, header| script.answer(&client, header))
            .await
            .unwrap();
        assert_eq!(answer, 5);
        let attempts = script.attempts();
        let endpoints: Vec<usize> = attempts.iter().map(|(i, _)| *i).collect();
        assert_eq!(endpoints, vec![0, 1, 2]);
        assert!(attempts
            .iter()
            .all(|(_, h)| h.seq == 1 && h.client_id == client.client_id() && h.acked_below == 1));
        // The endpoint that answered stays preferred.
        assert_eq!(client.current_channel().0, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_are_returned_at_once() {
        let client = client().await;
        let script = Script::new(vec![Some(Err(Status::failed_precondition("stale token")))]);
        let err = client
            .mutate(Duration::ZERO, |_, header| script.answer(&client, header))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert_eq!(script.attempts().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_deadline() {
        let client = client().await.with_deadline(Duration::from_secs(2));
        let script = Script::new(vec![]);
        let started = Instant::now();
        let err = client
            .read(Consistency::Linearizable, |_, header| {
                script.answer(&client, header)
            })
            .await
            .unwrap_err();
        assert!(started.elapsed() <= Duration::from_secs(2), "{err}");
        let ClientError::Unavailable { attempts, last, .. } = &err else {
            panic!("expected Unavailable, got {err:?}");
        };
        assert!(*attempts >= 4, "{err}");
        assert_eq!(*attempts as usize, script.attempts().len());
        assert_eq!(last.code(), Code::Unavailable);
        // Reads are untracked.
        assert!(script.attempts().iter().all(|(_, h)| h.seq == 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_endpoint_is_abandoned_after_the_attempt_timeout() {
        let client = client().await;
        let script = Script::new(vec![None, Some(Ok(1))]);
        let started = Instant::now();
        client
            .mutate(Duration::ZERO, |_, header| script.answer(&client, header))
            .await
            .unwrap();
        let elapsed = started.elapsed();
        let policy = RetryPolicy::default();
        assert!(elapsed >= policy.attempt_timeout, "{elapsed:?}");
        assert!(elapsed < policy.attempt_timeout * 2, "{elapsed:?}");
        let endpoints: Vec<usize> = script.attempts().iter().map(|(i, _)| *i).collect();
        assert_eq!(endpoints, vec![0, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn extra_time_extends_the_attempt_budget() {
        let client = client().await;
        let script = Script::new(vec![None, Some(Ok(1))]);
        let extra = Duration::from_secs(20);
        let started = Instant::now();
        client
            .mutate(extra, |_, header| script.answer(&client, header))
            .await
            .unwrap();
        assert!(started.elapsed() >= extra + RetryPolicy::default().attempt_timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn later_calls_acknowledge_earlier_ones() {
        let client = client().await;
        let script = Script::new(vec![Some(Ok(1)), Some(Ok(2))]);
        for _ in 0..2 {
            client
                .mutate(Duration::ZERO, |_, header| script.answer(&client, header))
                .await
                .unwrap();
        }
        let headers: Vec<(u64, u64)> = script
            .attempts()
            .iter()
            .map(|(_, h)| (h.seq, h.acked_below))
            .collect();
        assert_eq!(headers, vec![(1, 1), (2, 2)]);
    }

    #[tokio::test]
    async fn clones_share_the_session() {
        let client = client().await;
        let clone = client.with_deadline(Duration::from_secs(1));
        assert_eq!(client.client_id(), clone.client_id());
        assert_eq!(clone.retry_policy().deadline, Duration::from_secs(1));
        assert_eq!(client.endpoints(), ["a:1", "b:2", "c:3"]);
    }
}
