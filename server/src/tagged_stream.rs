//! Internal calls over long-lived gRPC streams of tagged messages, one stream per peer and
//! kind, instead of one unary call each: a leader's AppendEntries to a follower
//! ([`AppendEntriesStream`]) and a follower's forwarded writes to the leader
//! ([`ForwardStream`]).
//!
//! Why: every write costs the leader four internal AppendEntries (the entries and the commit
//! update, to each of two followers), and most writes arrive through a follower that forwards
//! them. A unary call is an HTTP/2 stream of its own — request headers, a data frame written
//! separately, response headers and trailers. On a stream each request and each answer is one
//! data frame. Requests carry a tag; a reader task hands each answer to the caller waiting on
//! its tag, so answers may come in any order and nothing queues behind a slow request (the
//! serving side answers several at once, `raft_service::answer_tagged`).
//!
//! Negative space: a call's timeout covers opening the stream as well as its answer; a call
//! that times out forgets its tag (a late answer is dropped); when a
//! stream breaks, every waiting call fails and the next call opens a new stream; a peer that
//! answers UNIMPLEMENTED (an older build) gets the unary call instead, and is asked again after
//! [`RETRY_STREAM_AFTER`]. A call that failed may or may not have reached the peer, exactly as
//! a unary call that failed.
//!
//! Owns: the streams and their waiting calls. Must not: interpret the messages.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use openraft::raft::AppendEntriesRequest;
use parking_lot::Mutex;
use percy_proto::internal::RaftBytes;
use percy_statemachine::Command;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

use crate::network::PeerClient;
use crate::types::TypeConfig;
use crate::wire::{self, AppendEntriesResult, ForwardReply, Tagged};

/// Requests queued for a stream's connection before callers wait for room.
const OUTBOUND_CAPACITY: usize = 256;
/// How long a peer that does not implement a stream gets unary calls before it is asked
/// again (it may have been upgraded meanwhile).
pub const RETRY_STREAM_AFTER: Duration = Duration::from_secs(60);

/// What travels on one kind of stream, and which RPC opens it.
pub trait StreamKind: Send + Sync + 'static {
    type Request: Serialize + Sync;
    type Answer: DeserializeOwned + Send + 'static;
    fn open(
        client: PeerClient,
        requests: ReceiverStream<RaftBytes>,
    ) -> BoxFuture<'static, Result<Streaming<RaftBytes>, Status>>;
}

/// A leader's AppendEntries to one follower; the answer is openraft's, or why the follower did
/// not acknowledge the entries (see `raft_service`).
pub struct AppendEntriesStream;

impl StreamKind for AppendEntriesStream {
    type Request = AppendEntriesRequest<TypeConfig>;
    type Answer = Result<AppendEntriesResult, String>;
    fn open(
        mut client: PeerClient,
        requests: ReceiverStream<RaftBytes>,
    ) -> BoxFuture<'static, Result<Streaming<RaftBytes>, Status>> {
        Box::pin(async move {
            let answers = client.append_entries_stream(requests).await?;
            Ok(answers.into_inner())
        })
    }
}

/// A follower's writes forwarded to the leader; the answer is the command's result.
pub struct ForwardStream;

impl StreamKind for ForwardStream {
    type Request = Command;
    type Answer = ForwardReply;
    fn open(
        mut client: PeerClient,
        requests: ReceiverStream<RaftBytes>,
    ) -> BoxFuture<'static, Result<Streaming<RaftBytes>, Status>> {
        Box::pin(async move {
            let answers = client.forward_stream(requests).await?;
            Ok(answers.into_inner())
        })
    }
}

/// Why a streamed call produced no answer.
#[derive(Debug)]
pub enum StreamCallError {
    /// The peer does not implement the stream: use the unary call.
    Unsupported,
    /// The stream could not be opened or broke; the request may or may not have arrived.
    Broken(String),
    TimedOut,
}

impl std::fmt::Display for StreamCallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unsupported => f.write_str("the peer does not implement the stream"),
            Self::Broken(why) => f.write_str(why),
            Self::TimedOut => f.write_str("no answer in time"),
        }
    }
}

/// The calls of one stream waiting for their answers, shared with its reader task.
struct Waiting<A> {
    by_tag: HashMap<u64, oneshot::Sender<A>>,
    /// The reader has ended: nothing more will be answered on this stream.
    closed: bool,
}

/// One open stream to one peer.
struct Open<A> {
    outbound: mpsc::Sender<RaftBytes>,
    waiting: Arc<Mutex<Waiting<A>>>,
}

enum Slot<A> {
    Open(Arc<Open<A>>),
    /// The peer answered UNIMPLEMENTED at this time.
    Unsupported(Instant),
}

/// The streams of kind `K` of one node, one per peer address (a peer that moves gets a new
/// stream on its new channel); cheap to clone.
pub struct TaggedStreams<K: StreamKind> {
    slots: Arc<Mutex<HashMap<String, Slot<K::Answer>>>>,
    /// One opener per peer at a time, so calls that find no stream together share one.
    opening: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    next_tag: Arc<AtomicU64>,
    kind: PhantomData<K>,
}

impl<K: StreamKind> Clone for TaggedStreams<K> {
    fn clone(&self) -> Self {
        Self {
            slots: self.slots.clone(),
            opening: self.opening.clone(),
            next_tag: self.next_tag.clone(),
            kind: PhantomData,
        }
    }
}

impl<K: StreamKind> Default for TaggedStreams<K> {
    fn default() -> Self {
        Self {
            slots: Arc::default(),
            opening: Arc::default(),
            next_tag: Arc::default(),
            kind: PhantomData,
        }
    }
}

impl<K: StreamKind> TaggedStreams<K> {
    /// Sends `request` to the peer at `peer` (its address) over its stream and waits up to
    /// `timeout` for the answer.
    pub async fn call(
        &self,
        peer: &str,
        client: &PeerClient,
        request: &K::Request,
        timeout: Duration,
    ) -> Result<K::Answer, StreamCallError> {
        let deadline = Instant::now() + timeout;
        // Opening is bounded too: a peer that accepts the connection but never answers the
        // stream's headers would otherwise hold this call, and every call queued behind the
        // opener, past any deadline.
        let open = tokio::time::timeout_at(deadline, self.open(peer, client))
            .await
            .map_err(|_| StreamCallError::TimedOut)??;
        let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
        let data = wire::encode(&Tagged {
            id: tag,
            message: request,
        })
        .map_err(|e| StreamCallError::Broken(e.to_string()))?;
        let (answer_tx, answer) = oneshot::channel();
        {
            let mut waiting = open.waiting.lock();
            if waiting.closed {
                drop(waiting);
                return Err(self.broken(peer, &open, "the stream to the peer ended"));
            }
            waiting.by_tag.insert(tag, answer_tx);
        }
        let sent = tokio::time::timeout_at(deadline, open.outbound.send(RaftBytes { data })).await;
        let outcome = match sent {
            Err(_) => Err(StreamCallError::TimedOut),
            Ok(Err(_)) => Err(self.broken(peer, &open, "the stream to the peer closed")),
            Ok(Ok(())) => match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(_)) => Err(self.broken(peer, &open, "the stream to the peer ended")),
                Err(_) => Err(StreamCallError::TimedOut),
            },
        };
        open.waiting.lock().by_tag.remove(&tag);
        outcome
    }

    /// Whether a stream to `peer` is open, for tests of what a node uses.
    #[cfg(test)]
    pub(crate) fn is_open(&self, peer: &str) -> bool {
        matches!(self.current(peer), Ok(Some(_)))
    }

    /// `peer`'s stream if it is open, `None` if a new one should be opened.
    fn current(&self, peer: &str) -> Result<Option<Arc<Open<K::Answer>>>, StreamCallError> {
        match self.slots.lock().get(peer) {
            Some(Slot::Open(open)) if !open.waiting.lock().closed => Ok(Some(open.clone())),
            Some(Slot::Unsupported(since)) if since.elapsed() < RETRY_STREAM_AFTER => {
                Err(StreamCallError::Unsupported)
            }
            _ => Ok(None),
        }
    }

    /// The open stream to `peer`, opening one if there is none.
    async fn open(
        &self,
        peer: &str,
        client: &PeerClient,
    ) -> Result<Arc<Open<K::Answer>>, StreamCallError> {
        if let Some(open) = self.current(peer)? {
            return Ok(open);
        }
        let opener = self
            .opening
            .lock()
            .entry(peer.to_string())
            .or_default()
            .clone();
        let _one_at_a_time = opener.lock().await;
        if let Some(open) = self.current(peer)? {
            return Ok(open);
        }
        let (outbound, requests) = mpsc::channel(OUTBOUND_CAPACITY);
        let answers = match K::open(client.clone(), ReceiverStream::new(requests)).await {
            Ok(answers) => answers,
            Err(status) if status.code() == Code::Unimplemented => {
                self.slots
                    .lock()
                    .insert(peer.to_string(), Slot::Unsupported(Instant::now()));
                return Err(StreamCallError::Unsupported);
            }
            Err(status) => return Err(StreamCallError::Broken(status.message().to_string())),
        };
        let open = Arc::new(Open {
            outbound,
            waiting: Arc::new(Mutex::new(Waiting {
                by_tag: HashMap::new(),
                closed: false,
            })),
        });
        tokio::spawn(deliver_answers(answers, open.waiting.clone()));
        self.slots
            .lock()
            .insert(peer.to_string(), Slot::Open(open.clone()));
        Ok(open)
    }

    /// Forgets `open` if it is still `peer`'s stream, so the next call opens a new one.
    fn broken(&self, peer: &str, open: &Arc<Open<K::Answer>>, why: &str) -> StreamCallError {
        let mut slots = self.slots.lock();
        if matches!(slots.get(peer), Some(Slot::Open(current)) if Arc::ptr_eq(current, open)) {
            slots.remove(peer);
        }
        StreamCallError::Broken(why.to_string())
    }
}

/// The reader task of one stream: hands each answer to the call waiting on its tag until the
/// stream ends, then fails every call still waiting (dropping their senders). It holds only
/// the waiting calls, not the stream's sender, so dropping the last [`TaggedStreams`] closes
/// the stream and ends this task.
async fn deliver_answers<A: DeserializeOwned>(
    mut answers: Streaming<RaftBytes>,
    waiting: Arc<Mutex<Waiting<A>>>,
) {
    while let Ok(Some(message)) = answers.message().await {
        let Tagged { id, message } = match wire::decode::<Tagged<A>>(&message.data) {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(error = %e, "a streamed answer does not decode; closing the stream");
                break;
            }
        };
        // No waiter: the call timed out and gave up.
        if let Some(waiter) = waiting.lock().by_tag.remove(&id) {
            let _gone = waiter.send(message);
        }
    }
    let mut waiting = waiting.lock();
    waiting.closed = true;
    waiting.by_tag.clear();
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::atomic::AtomicUsize;

    use futures::{Stream, StreamExt};
    use openraft::raft::AppendEntriesResponse;
    use openraft::{CommittedLeaderId, LogId, Vote};
    use percy_proto::internal::raft_service_client::RaftServiceClient;
    use percy_proto::internal::raft_service_server::{RaftService, RaftServiceServer};
    use percy_proto::internal::{ReadIndexRequest, ReadIndexResponse};
    use tokio::net::TcpListener;
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::{Request, Response, Status, Streaming};

    use super::*;
    use crate::cluster_identity::ClusterStamp;

    /// How a scripted peer treats its streams.
    #[derive(Clone, Copy)]
    enum Peer {
        /// An older build: no stream.
        Unimplemented,
        /// Collects two requests, then answers the second first.
        AnswersInReverse,
        /// Reads requests and never answers.
        Silent,
        /// Ends each stream after its first request, unanswered.
        HangsUp,
        /// Accepts the stream's request but never answers its headers.
        NeverOpens,
    }

    struct Scripted {
        peer: Peer,
        opened: Arc<AtomicUsize>,
    }

    /// Each answer says which request it belongs to: the request's commit index, echoed as
    /// a partial-success log id.
    fn answer_to(message: RaftBytes) -> Result<RaftBytes, Status> {
        let Tagged { id, message: rpc } =
            wire::decode::<Tagged<AppendEntriesRequest<TypeConfig>>>(&message.data)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let answer: <AppendEntriesStream as StreamKind>::Answer =
            Ok(Ok(AppendEntriesResponse::PartialSuccess(rpc.leader_commit)));
        let reply = Tagged {
            id,
            message: answer,
        };
        Ok(RaftBytes {
            data: wire::encode(&reply).map_err(|e| Status::internal(e.to_string()))?,
        })
    }

    type Answers = Pin<Box<dyn Stream<Item = Result<RaftBytes, Status>> + Send>>;

    #[tonic::async_trait]
    impl RaftService for Scripted {
        type AppendEntriesStreamStream = Answers;

        async fn append_entries_stream(
            &self,
            request: Request<Streaming<RaftBytes>>,
        ) -> Result<Response<Answers>, Status> {
            let requests = request.into_inner().filter_map(|m| async move { m.ok() });
            let answers: Answers =
                match self.peer {
                    Peer::Unimplemented => return Err(Status::unimplemented("no stream here")),
                    Peer::AnswersInReverse => Box::pin(requests.chunks(2).flat_map(|pair| {
                        futures::stream::iter(pair.into_iter().rev().map(answer_to))
                    })),
                    Peer::Silent => Box::pin(requests.filter_map(|_| async { None })),
                    Peer::HangsUp => Box::pin(requests.take(1).filter_map(|_| async { None })),
                    Peer::NeverOpens => return std::future::pending().await,
                };
            self.opened.fetch_add(1, Ordering::SeqCst);
            Ok(Response::new(answers))
        }

        type ForwardStreamStream = Answers;

        async fn forward_stream(
            &self,
            _: Request<Streaming<RaftBytes>>,
        ) -> Result<Response<Answers>, Status> {
            Err(Status::unimplemented("not scripted"))
        }

        async fn append_entries(
            &self,
            _: Request<RaftBytes>,
        ) -> Result<Response<RaftBytes>, Status> {
            Err(Status::unimplemented("not scripted"))
        }
        async fn vote(&self, _: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
            Err(Status::unimplemented("not scripted"))
        }
        async fn install_snapshot(
            &self,
            _: Request<RaftBytes>,
        ) -> Result<Response<RaftBytes>, Status> {
            Err(Status::unimplemented("not scripted"))
        }
        async fn forward(&self, _: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
            Err(Status::unimplemented("not scripted"))
        }
        async fn read_index(
            &self,
            _: Request<ReadIndexRequest>,
        ) -> Result<Response<ReadIndexResponse>, Status> {
            Err(Status::unimplemented("not scripted"))
        }
        async fn relay_heartbeats(
            &self,
            _: Request<RaftBytes>,
        ) -> Result<Response<RaftBytes>, Status> {
            Err(Status::unimplemented("not scripted"))
        }
    }

    /// A scripted peer on a free port; the client and how many streams it opened.
    async fn peer(peer: Peer) -> (PeerClient, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let opened = Arc::new(AtomicUsize::new(0));
        let service = Scripted {
            peer,
            opened: opened.clone(),
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RaftServiceServer::new(service))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_lazy();
        (
            RaftServiceClient::with_interceptor(channel, ClusterStamp::default()),
            opened,
        )
    }

    fn rpc(commit: u64) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: Some(LogId::new(CommittedLeaderId::new(1, 1), commit)),
        }
    }

    /// The key the tests' streams are kept under (a peer's address).
    const PEER: &str = "peer";

    /// Generous for a loaded CI machine; the calls that should answer do so in milliseconds.
    const CALL_TIMEOUT: Duration = Duration::from_secs(10);

    fn echoed(answer: Result<<AppendEntriesStream as StreamKind>::Answer, StreamCallError>) -> u64 {
        match answer {
            Ok(Ok(Ok(AppendEntriesResponse::PartialSuccess(Some(id))))) => id.index,
            other => panic!("unexpected answer {other:?}"),
        }
    }

    #[tokio::test]
    async fn answers_find_their_calls_in_any_order() {
        let (client, opened) = peer(Peer::AnswersInReverse).await;
        let streams = TaggedStreams::<AppendEntriesStream>::default();
        let (seven, eight) = (rpc(7), rpc(8));
        let (first, second) = tokio::join!(
            streams.call(PEER, &client, &seven, CALL_TIMEOUT),
            streams.call(PEER, &client, &eight, CALL_TIMEOUT),
        );
        assert_eq!((echoed(first), echoed(second)), (7, 8));
        assert_eq!(
            opened.load(Ordering::SeqCst),
            1,
            "one stream for both calls"
        );
    }

    #[tokio::test]
    async fn a_peer_without_the_stream_gets_unary_calls() {
        let (client, _) = peer(Peer::Unimplemented).await;
        let streams = TaggedStreams::<AppendEntriesStream>::default();
        for _ in 0..2 {
            let answer = streams.call(PEER, &client, &rpc(1), CALL_TIMEOUT).await;
            assert!(matches!(answer, Err(StreamCallError::Unsupported)));
        }
        assert!(matches!(
            streams.slots.lock().get(PEER),
            Some(Slot::Unsupported(_))
        ));
    }

    #[tokio::test]
    async fn an_unanswered_call_times_out_and_forgets_its_tag() {
        let (client, _) = peer(Peer::Silent).await;
        let streams = TaggedStreams::<AppendEntriesStream>::default();
        let answer = streams
            .call(PEER, &client, &rpc(1), Duration::from_millis(200))
            .await;
        assert!(matches!(answer, Err(StreamCallError::TimedOut)));
        let slots = streams.slots.lock();
        let Some(Slot::Open(open)) = slots.get(PEER) else {
            panic!("the stream stays open");
        };
        assert!(open.waiting.lock().by_tag.is_empty());
    }

    #[tokio::test]
    async fn a_broken_stream_fails_its_calls_and_the_next_call_opens_another() {
        let (client, opened) = peer(Peer::HangsUp).await;
        let streams = TaggedStreams::<AppendEntriesStream>::default();
        let answer = streams.call(PEER, &client, &rpc(1), CALL_TIMEOUT).await;
        assert!(
            matches!(answer, Err(StreamCallError::Broken(_))),
            "{answer:?}"
        );
        let _ = streams.call(PEER, &client, &rpc(2), CALL_TIMEOUT).await;
        assert_eq!(opened.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_stream_that_never_opens_times_the_call_out() {
        let (client, _) = peer(Peer::NeverOpens).await;
        let streams = TaggedStreams::<AppendEntriesStream>::default();
        let request = rpc(1);
        for _ in 0..2 {
            let call = streams.call(PEER, &client, &request, Duration::from_millis(200));
            let answer = tokio::time::timeout(CALL_TIMEOUT, call)
                .await
                .expect("the call's own timeout covers opening the stream");
            assert!(
                matches!(answer, Err(StreamCallError::TimedOut)),
                "{answer:?}"
            );
        }
        assert!(streams.slots.lock().get(PEER).is_none());
    }
}
