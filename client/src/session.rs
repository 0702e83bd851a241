//! Exactly-once bookkeeping: the `(client_id, seq, acked_below)` triple of every mutating call.
//!
//! One seq is taken per logical call and reused by all of its retries, so the state machine
//! can recognise a retry and answer it from its session table instead of applying it twice.
//! `acked_below` tells the server which answers it may forget: every seq below the lowest one
//! still in flight has been answered (RIFL-style acknowledgements, which let one client have
//! many calls in flight at once).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use percy_proto::v1::{Consistency, RequestHeader};

/// The per-`Client` session shared by all of its clones.
#[derive(Debug)]
pub(crate) struct Session {
    client_id: u64,
    next_seq: AtomicU64,
    in_flight: Mutex<BTreeSet<u64>>,
}

impl Session {
    /// A session with a random non-zero client id (0 means "untracked" on the wire).
    pub(crate) fn new() -> Arc<Self> {
        let client_id = loop {
            let id: u64 = rand::random();
            if id != 0 {
                break id;
            }
        };
        Self::with_client_id(client_id)
    }

    pub(crate) fn with_client_id(client_id: u64) -> Arc<Self> {
        Arc::new(Self {
            client_id,
            next_seq: AtomicU64::new(1),
            in_flight: Mutex::new(BTreeSet::new()),
        })
    }

    pub(crate) fn client_id(&self) -> u64 {
        self.client_id
    }

    /// Starts a logical call: takes the next seq and marks it in flight until the returned
    /// guard is dropped (whether the call succeeded, failed or was cancelled).
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(seq);
        InFlight {
            session: Arc::clone(self),
            seq,
        }
    }

    /// The lowest seq still in flight, or the next seq to be issued when none is: every seq
    /// below it has been answered.
    fn acked_below(&self) -> u64 {
        // Read the counter while holding the lock, so a seq taken concurrently is either in
        // the set or not yet issued (and therefore >= the value read).
        let in_flight = self.lock();
        match in_flight.first() {
            Some(&lowest) => lowest,
            None => self.next_seq.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeSet<u64>> {
        // The set stays consistent even if a holder panicked: every operation on it is a
        // single insert/remove/read.
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One logical mutating call in flight; removes its seq from the in-flight set when dropped.
#[derive(Debug)]
pub(crate) struct InFlight {
    session: Arc<Session>,
    seq: u64,
}

impl InFlight {
    /// The header for one attempt. `acked_below` is recomputed per attempt because other
    /// calls may have finished meanwhile.
    pub(crate) fn header(&self) -> RequestHeader {
        RequestHeader {
            client_id: self.session.client_id,
            seq: self.seq,
            acked_below: self.session.acked_below(),
            consistency: Consistency::Linearizable as i32,
        }
    }

    #[cfg(test)]
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.session.lock().remove(&self.seq);
    }
}

/// The header of an untracked read.
pub(crate) fn read_header(consistency: Consistency) -> RequestHeader {
    RequestHeader {
        consistency: consistency as i32,
        ..RequestHeader::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqs_are_unique_and_start_at_one() {
        let session = Session::with_client_id(7);
        let a = session.begin();
        let b = session.begin();
        assert_eq!(a.seq(), 1);
        assert_eq!(b.seq(), 2);
        assert_eq!(a.header().client_id, 7);
        assert_eq!(b.header().seq, 2);
    }

    #[test]
    fn acked_below_is_the_lowest_seq_in_flight() {
        let session = Session::with_client_id(1);
        let first = session.begin();
        let second = session.begin();
        let third = session.begin();
        assert_eq!(third.header().acked_below, 1);
        drop(second);
        // 2 finished but 1 has not: the server must still remember 2's answer.
        assert_eq!(third.header().acked_below, 1);
        drop(first);
        assert_eq!(third.header().acked_below, 3);
        drop(third);
        let fourth = session.begin();
        assert_eq!(fourth.header().acked_below, 4);
    }

    #[test]
    fn acked_below_is_the_next_seq_when_idle() {
        let session = Session::with_client_id(1);
        drop(session.begin());
        drop(session.begin());
        assert_eq!(session.acked_below(), 3);
    }

    #[test]
    fn header_is_stable_across_retries_of_one_call() {
        let session = Session::with_client_id(9);
        let call = session.begin();
        let first_attempt = call.header();
        let retry = call.header();
        assert_eq!(first_attempt.seq, retry.seq);
        assert_eq!(first_attempt.client_id, retry.client_id);
    }

    #[test]
    fn random_client_ids_are_non_zero_and_differ() {
        let a = Session::new();
        let b = Session::new();
        assert_ne!(a.client_id(), 0);
        assert_ne!(a.client_id(), b.client_id());
    }

    #[test]
    fn read_headers_are_untracked() {
        let header = read_header(Consistency::Serializable);
        assert_eq!(header.client_id, 0);
        assert_eq!(header.seq, 0);
        assert_eq!(header.consistency, Consistency::Serializable as i32);
    }
}
