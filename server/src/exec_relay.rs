//! The live output of execs, relayed from memory: an executor publishes an exec's chunks to
//! the node its caller attached to, and that node hands them to the caller through a bounded
//! queue. Nothing here is replicated (an exec's durable record is its task); a chunk costs no
//! Raft entry.
//!
//! Back-pressure: the queue holds at most [`RELAY_QUEUE_CHUNKS`] chunks; a publisher whose
//! caller is slow waits on it, so HTTP/2 flow control slows the executor's stream and, in
//! the end, the command's own pipe. A caller that stops reading for [`STALLED_CALLER`] is
//! detached (its output is dropped from then on), so a stuck caller cannot stall a command
//! forever. Chunks for an exec nobody is attached to are dropped. Several callers may attach
//! to one exec (the one that started it, and `percyctl exec logs -f` from elsewhere): each
//! gets every chunk from its attach on, and the publisher waits for the slowest of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use percy_proto::v1::ExecChunk;
use tokio::sync::mpsc;

/// Chunks queued towards one caller (each at most the executor's read size, 8 KiB).
pub const RELAY_QUEUE_CHUNKS: usize = 64;
/// How long a publisher waits for a caller that does not read before detaching it.
pub const STALLED_CALLER: Duration = Duration::from_secs(30);
/// Callers attached to one node at once (each holds one queue).
pub const MAX_ATTACHED: usize = 4_096;

/// Whether a chunk reached a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relayed {
    Delivered,
    /// Nobody attached, or the caller went away or stalled.
    Dropped,
}

type Callers = HashMap<String, Vec<mpsc::Sender<ExecChunk>>>;

/// The callers attached on this node, by exec id.
#[derive(Debug, Clone, Default)]
pub struct ExecRelay {
    attached: Arc<Mutex<Callers>>,
}

/// An attached caller's end; detaches when dropped.
pub struct Attachment {
    relay: ExecRelay,
    exec_id: String,
    pub chunks: mpsc::Receiver<ExecChunk>,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        // Closing our receiver closes our sender in the map; the other callers stay.
        self.chunks.close();
        let mut attached = self.relay.lock();
        if let Some(senders) = attached.get_mut(&self.exec_id) {
            senders.retain(|s| !s.is_closed());
            if senders.is_empty() {
                attached.remove(&self.exec_id);
            }
        }
    }
}

/// Why a caller could not attach.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AttachError {
    #[error("{MAX_ATTACHED} callers are attached to this node already")]
    Full,
}

impl ExecRelay {
    fn lock(&self) -> std::sync::MutexGuard<'_, Callers> {
        // A panic while holding this lock leaves a plain map, still consistent.
        self.attached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Attaches a caller to `exec_id`'s output from now on (beside any other caller).
    pub fn attach(&self, exec_id: &str) -> Result<Attachment, AttachError> {
        let (sender, chunks) = mpsc::channel(RELAY_QUEUE_CHUNKS);
        let mut attached = self.lock();
        attached.retain(|_, senders| {
            senders.retain(|s| !s.is_closed());
            !senders.is_empty()
        });
        if attached.values().map(Vec::len).sum::<usize>() >= MAX_ATTACHED {
            return Err(AttachError::Full);
        }
        attached.entry(exec_id.to_owned()).or_default().push(sender);
        Ok(Attachment {
            relay: self.clone(),
            exec_id: exec_id.to_owned(),
            chunks,
        })
    }

    /// Hands `chunk` to every caller attached to its exec, waiting while a caller's queue is
    /// full (back-pressure), at most [`STALLED_CALLER`] each. Delivered if one caller got it.
    pub async fn relay(&self, chunk: ExecChunk) -> Relayed {
        let senders = self.lock().get(&chunk.exec_id).cloned().unwrap_or_default();
        let mut relayed = Relayed::Dropped;
        for sender in senders {
            match tokio::time::timeout(STALLED_CALLER, sender.send(chunk.clone())).await {
                Ok(Ok(())) => relayed = Relayed::Delivered,
                Ok(Err(_closed)) => {}
                Err(_stalled) => {
                    tracing::warn!(exec_id = %chunk.exec_id, "a caller stopped reading the exec's output: detached");
                    let mut attached = self.lock();
                    if let Some(senders) = attached.get_mut(&chunk.exec_id) {
                        senders.retain(|s| !s.same_channel(&sender));
                        if senders.is_empty() {
                            attached.remove(&chunk.exec_id);
                        }
                    }
                }
            }
        }
        relayed
    }

    #[cfg(test)]
    fn attached(&self) -> usize {
        self.lock()
            .values()
            .flatten()
            .filter(|s| !s.is_closed())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(id: &str, data: &[u8]) -> ExecChunk {
        ExecChunk {
            exec_id: id.into(),
            fd: 1,
            data: data.to_vec(),
            eof: false,
        }
    }

    #[tokio::test]
    async fn chunks_reach_the_attached_caller_in_order() {
        let relay = ExecRelay::default();
        let mut caller = relay.attach("e1").unwrap();
        for i in 0..10u8 {
            assert_eq!(relay.relay(chunk("e1", &[i])).await, Relayed::Delivered);
        }
        for i in 0..10u8 {
            assert_eq!(caller.chunks.recv().await.unwrap().data, vec![i]);
        }
        assert_eq!(relay.relay(chunk("other", b"x")).await, Relayed::Dropped);
    }

    #[tokio::test]
    async fn a_full_queue_holds_the_publisher_back() {
        let relay = ExecRelay::default();
        let mut caller = relay.attach("e1").unwrap();
        for _ in 0..RELAY_QUEUE_CHUNKS {
            relay.relay(chunk("e1", b"x")).await;
        }
        let blocked =
            tokio::time::timeout(Duration::from_millis(200), relay.relay(chunk("e1", b"y")));
        assert!(
            blocked.await.is_err(),
            "the publisher did not wait for the caller"
        );
        caller.chunks.recv().await.unwrap();
        assert_eq!(relay.relay(chunk("e1", b"y")).await, Relayed::Delivered);
    }

    #[tokio::test]
    async fn a_caller_that_went_away_is_detached() {
        let relay = ExecRelay::default();
        let caller = relay.attach("e1").unwrap();
        assert_eq!(relay.attached(), 1);
        drop(caller);
        assert_eq!(relay.attached(), 0);
        assert_eq!(relay.relay(chunk("e1", b"x")).await, Relayed::Dropped);
    }

    #[tokio::test]
    async fn every_attached_caller_gets_the_chunks_from_its_attach_on() {
        let relay = ExecRelay::default();
        let mut first = relay.attach("e1").unwrap();
        assert_eq!(relay.relay(chunk("e1", b"a")).await, Relayed::Delivered);
        let mut second = relay.attach("e1").unwrap();
        assert_eq!(relay.attached(), 2);
        assert_eq!(relay.relay(chunk("e1", b"b")).await, Relayed::Delivered);
        assert_eq!(first.chunks.recv().await.unwrap().data, b"a");
        assert_eq!(first.chunks.recv().await.unwrap().data, b"b");
        assert_eq!(second.chunks.recv().await.unwrap().data, b"b");
        // One going away leaves the other attached.
        drop(first);
        assert_eq!(relay.attached(), 1);
        assert_eq!(relay.relay(chunk("e1", b"c")).await, Relayed::Delivered);
        assert_eq!(second.chunks.recv().await.unwrap().data, b"c");
    }
}
