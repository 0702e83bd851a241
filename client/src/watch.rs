//! The watch stream: events from a revision onward, as a `Stream` that survives node
//! failures.
//!
//! A background task holds the gRPC stream. On a transport failure it reconnects (next
//! endpoint, jittered backoff) and resumes exactly after the last event it delivered: it asks
//! again for the last delivered revision and skips the events of that revision it already
//! delivered (one revision's events may be split across responses, and the server replays a
//! revision's events in the same order through the same filter). A watch "from now on" first
//! pins "now" to a revision, so a reconnect before the first event loses nothing either.
//!
//! With `initial_state`, a break before the first change after the initial state makes the
//! stream send the initial state again (at the then current revision); consumers treat
//! initial-state events as upserts anyway.
//!
//! A compacted start revision ends the stream with [`ClientError::Compacted`]. The task ends
//! when the stream is dropped.

use std::pin::Pin;

use crate::endpoints::Conn;
use futures::Stream;
use percy_proto::v1::watch_service_client::WatchServiceClient;
use percy_proto::v1::{Consistency, EntityKind, Event, TaskStatus, WatchRequest, WatchResponse};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::retry::is_retryable;
use crate::session::read_header;
use crate::{Client, ClientError};

/// Events buffered between the network task and a slow consumer; when full, the task stops
/// reading and HTTP/2 flow control pushes back on the server.
const WATCH_BUFFER: usize = 256;

/// The events a watch delivers; the default watches everything from now on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// First revision to deliver; 0 = from now on. Ignored with `initial_state`.
    pub start_revision: u64,
    /// Entity kinds to deliver; empty = all.
    pub kinds: Vec<EntityKind>,
    /// Only entities whose key starts with this ("" = all).
    pub key_prefix: String,
    /// Deliver the current state of every matching entity first (as events at the current
    /// revision), then every change after it.
    pub initial_state: bool,
    /// Task events only of tasks now in one of these statuses; empty = every status. Events
    /// of other kinds are not affected. A server older than this field ignores it and sends
    /// every task event, so a consumer still checks the status itself.
    pub task_statuses: Vec<TaskStatus>,
}

/// A stream of watch events; see [`Client::watch`].
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Event, ClientError>> + Send>>;

impl Client {
    /// Watches events. The stream reconnects by itself on transport errors, resuming right
    /// after the last delivered event; it ends after yielding an error it cannot recover
    /// from (compaction, a refusal, or no endpoint reachable within the retry deadline).
    /// Must be called inside a tokio runtime.
    pub fn watch(&self, options: WatchOptions) -> EventStream {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(Pump::new(self.clone(), options, tx).run());
        Box::pin(ReceiverStream::new(rx))
    }
}

/// Where the stream stands, i.e. what to ask for when (re)connecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// "From now on", not pinned to a revision yet.
    Now,
    /// The initial state was asked for and no change after it has arrived yet.
    Initial { revision: Option<u64> },
    /// Start at `revision`, of which the first `delivered` events were already delivered.
    From { revision: u64, delivered: usize },
}

impl Position {
    fn start(options: &WatchOptions) -> Self {
        if options.initial_state {
            Position::Initial { revision: None }
        } else if options.start_revision == 0 {
            Position::Now
        } else {
            Position::From {
                revision: options.start_revision,
                delivered: 0,
            }
        }
    }

    /// How many events of the start revision a new connection must skip.
    fn skip(&self) -> usize {
        match self {
            Position::From { delivered, .. } => *delivered,
            Position::Now | Position::Initial { .. } => 0,
        }
    }

    /// Records that an event at `revision` was delivered.
    fn delivered(&mut self, revision: u64) {
        *self = match *self {
            Position::Initial { revision: None } => Position::Initial {
                revision: Some(revision),
            },
            Position::Initial {
                revision: Some(initial),
            } if revision <= initial => *self,
            Position::From {
                revision: current,
                delivered,
            } if revision == current => Position::From {
                revision,
                delivered: delivered + 1,
            },
            _ => Position::From {
                revision,
                delivered: 1,
            },
        };
    }
}

/// Why one connection of the watch ended.
enum Ended {
    /// The consumer dropped the stream.
    Dropped,
    /// A definite error; it has been delivered, the watch is over.
    Fatal,
    /// A transport failure: reconnect.
    Retry(ClientError),
}

struct Pump {
    client: Client,
    options: WatchOptions,
    tx: mpsc::Sender<Result<Event, ClientError>>,
    position: Position,
}

impl Pump {
    fn new(
        client: Client,
        options: WatchOptions,
        tx: mpsc::Sender<Result<Event, ClientError>>,
    ) -> Self {
        Self {
            position: Position::start(&options),
            client,
            options,
            tx,
        }
    }

    async fn run(mut self) {
        let retry = self.client.retry_policy();
        let mut failures = 0u32;
        let mut outage_started: Option<Instant> = None;
        loop {
            let (index, channel) = self.client.current_channel();
            let ended = match self.connect(index, channel).await {
                Ok(stream) => self.pump(stream, &mut failures, &mut outage_started).await,
                Err(ended) => ended,
            };
            let error = match ended {
                Ended::Dropped | Ended::Fatal => return,
                Ended::Retry(error) => error,
            };
            self.client.rotate_from(index);
            let started = *outage_started.get_or_insert_with(Instant::now);
            let pause = retry.backoff(failures, rand::random::<f64>());
            failures = failures.saturating_add(1);
            if started.elapsed() + pause >= retry.deadline {
                let _ = self
                    .tx
                    .send(Err(ClientError::Unavailable {
                        attempts: failures,
                        elapsed: started.elapsed(),
                        last: Box::new(error),
                    }))
                    .await;
                return;
            }
            tracing::debug!(%error, ?pause, position = ?self.position, "watch reconnecting");
            tokio::select! {
                () = self.tx.closed() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Opens the gRPC stream for the current position (pinning "now" first if needed).
    async fn connect(
        &mut self,
        index: usize,
        channel: Conn,
    ) -> Result<Streaming<WatchResponse>, Ended> {
        let timeout = self.client.retry_policy().attempt_timeout;
        let timed_out = || {
            Ended::Retry(ClientError::AttemptTimeout {
                endpoint: self.client.endpoint_addr(index).to_owned(),
                timeout,
            })
        };
        if self.position == Position::Now {
            let pin = self.client.single_status(channel.clone());
            let status = tokio::select! {
                () = self.tx.closed() => return Err(Ended::Dropped),
                status = tokio::time::timeout(timeout, pin) => status.map_err(|_| timed_out())?,
            };
            let revision = match status {
                Ok(revision) => revision,
                Err(status) => return Err(self.classify(status).await),
            };
            self.position = Position::From {
                revision: revision + 1,
                delivered: 0,
            };
        }
        let (start_revision, initial_state) = match self.position {
            Position::From { revision, .. } => (revision, false),
            Position::Now | Position::Initial { .. } => (0, true),
        };
        let request = WatchRequest {
            header: Some(read_header(Consistency::Linearizable)),
            start_revision,
            kinds: self.options.kinds.iter().map(|k| *k as i32).collect(),
            key_prefix: self.options.key_prefix.clone(),
            initial_state,
            task_statuses: self
                .options
                .task_statuses
                .iter()
                .map(|s| *s as i32)
                .collect(),
        };
        let mut service = WatchServiceClient::new(channel);
        let call = service.watch(request);
        tokio::select! {
            () = self.tx.closed() => Err(Ended::Dropped),
            opened = tokio::time::timeout(timeout, call) => match opened {
                Ok(Ok(response)) => Ok(response.into_inner()),
                Ok(Err(status)) => Err(self.classify(status).await),
                Err(_elapsed) => Err(timed_out()),
            },
        }
    }

    /// Forwards events until the connection breaks or the consumer goes away.
    async fn pump(
        &mut self,
        mut stream: Streaming<WatchResponse>,
        failures: &mut u32,
        outage_started: &mut Option<Instant>,
    ) -> Ended {
        let skip_revision = match self.position {
            Position::From { revision, .. } => revision,
            Position::Now | Position::Initial { .. } => 0,
        };
        let mut skip = self.position.skip();
        loop {
            let message = tokio::select! {
                () = self.tx.closed() => return Ended::Dropped,
                message = stream.message() => message,
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => {
                    // A server that shuts down ends streams cleanly; another node carries on.
                    return Ended::Retry(ClientError::Status(tonic::Status::unavailable(
                        "watch stream closed by the server",
                    )));
                }
                Err(status) => return self.classify(status).await,
            };
            *failures = 0;
            *outage_started = None;
            if response.compacted {
                let requested = match self.position {
                    Position::From { revision, .. } => revision,
                    Position::Now | Position::Initial { .. } => 0,
                };
                let error = ClientError::Compacted {
                    requested,
                    compact_revision: response.compact_revision,
                };
                let _ = self.tx.send(Err(error)).await;
                return Ended::Fatal;
            }
            for event in response.events {
                if skip > 0 && event.revision == skip_revision {
                    skip -= 1;
                    continue;
                }
                let revision = event.revision;
                if self.tx.send(Ok(event)).await.is_err() {
                    return Ended::Dropped;
                }
                self.position.delivered(revision);
            }
        }
    }

    /// Retry transport failures; deliver anything else and stop.
    async fn classify(&self, status: tonic::Status) -> Ended {
        if is_retryable(&status) {
            Ended::Retry(status.into())
        } else {
            let _ = self.tx.send(Err(status.into())).await;
            Ended::Fatal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_start_from_the_options() {
        assert_eq!(Position::start(&WatchOptions::default()), Position::Now);
        let from = WatchOptions {
            start_revision: 7,
            ..WatchOptions::default()
        };
        assert_eq!(
            Position::start(&from),
            Position::From {
                revision: 7,
                delivered: 0
            }
        );
        let initial = WatchOptions {
            start_revision: 7,
            initial_state: true,
            ..WatchOptions::default()
        };
        assert_eq!(
            Position::start(&initial),
            Position::Initial { revision: None }
        );
    }

    #[test]
    fn delivered_events_of_a_revision_are_counted_for_the_resume() {
        let mut position = Position::From {
            revision: 5,
            delivered: 0,
        };
        position.delivered(5);
        position.delivered(5);
        assert_eq!(
            position,
            Position::From {
                revision: 5,
                delivered: 2
            }
        );
        assert_eq!(position.skip(), 2);
        position.delivered(9);
        assert_eq!(
            position,
            Position::From {
                revision: 9,
                delivered: 1
            }
        );
    }

    #[test]
    fn the_initial_state_ends_with_the_first_later_change() {
        let mut position = Position::Initial { revision: None };
        position.delivered(12);
        position.delivered(12);
        assert_eq!(position, Position::Initial { revision: Some(12) });
        assert_eq!(position.skip(), 0, "an unfinished initial state is re-sent");
        position.delivered(13);
        assert_eq!(
            position,
            Position::From {
                revision: 13,
                delivered: 1
            }
        );
    }
}
