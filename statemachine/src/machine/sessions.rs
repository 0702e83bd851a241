//! Client sessions for exactly-once retries (Raft dissertation §6.3, with RIFL-style
//! acknowledgements so a client may have many requests in flight).
//!
//! A session remembers the response of every request the client has not acknowledged yet
//! (`seq >= acked_below`). A retry of a remembered request gets the stored response and is not
//! applied again. A request below the acknowledged floor whose response is gone is refused: it
//! was applied once already, and applying it again could be wrong.
//!
//! Sessions are forgotten when idle for [`SESSION_IDLE_TIMEOUT_MS`] (on `Tick`), and the least
//! recently used one is dropped when there are [`MAX_SESSIONS`]. "Recently" is the leader's
//! `now_ms`, ties broken by revision, so the choice is the same on every replica.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::command::SessionRef;
use crate::error::CommandError;
use crate::limits::{MAX_SESSIONS, MAX_SESSION_INFLIGHT, SESSION_IDLE_TIMEOUT_MS};
use crate::response::Response;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Session {
    pub client_id: u64,
    /// Responses below this seq have been acknowledged by the client and are forgotten.
    pub acked_below: u64,
    /// seq → the response it got, for every seq >= `acked_below` applied so far.
    pub responses: BTreeMap<u64, Response>,
    pub last_active_ms: u64,
    pub last_active_revision: u64,
}

impl Session {
    fn activity_key(&self) -> (u64, u64, u64) {
        (
            self.last_active_ms,
            self.last_active_revision,
            self.client_id,
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SessionTable {
    sessions: BTreeMap<u64, Session>,
    /// (last_active_ms, last_active_revision, client_id): least recently used first.
    by_activity: BTreeSet<(u64, u64, u64)>,
}

/// What to do with a request that carries a session.
#[derive(Debug)]
pub(crate) enum Admission {
    /// New request: apply it, then [`SessionTable::record`] its response.
    Proceed,
    /// Already applied: answer this without applying again.
    Replay(Box<Response>),
    /// Refused without applying (too old, or too many unacknowledged requests).
    Refuse(CommandError),
}

impl SessionTable {
    pub fn admit(&mut self, request: SessionRef, now_ms: u64, revision: u64) -> Admission {
        let Some(session) = self.sessions.get(&request.client_id) else {
            if request.seq < request.acked_below {
                return Admission::Refuse(too_old(request, request.acked_below));
            }
            return Admission::Proceed;
        };
        if let Some(response) = session.responses.get(&request.seq) {
            let response = response.clone();
            self.touch(request.client_id, now_ms, revision);
            return Admission::Replay(Box::new(response));
        }
        let floor = session.acked_below.max(request.acked_below);
        if request.seq < floor {
            return Admission::Refuse(too_old(request, floor));
        }
        let unacknowledged = session.responses.range(floor..).count();
        if unacknowledged >= MAX_SESSION_INFLIGHT {
            return Admission::Refuse(CommandError::exhausted(format!(
                "session {} has {unacknowledged} unacknowledged requests (at most {MAX_SESSION_INFLIGHT})",
                request.client_id
            )));
        }
        Admission::Proceed
    }

    /// Whether the response to `(client_id, seq)` is remembered (the request was applied).
    pub fn has_response(&self, client_id: u64, seq: u64) -> bool {
        self.sessions
            .get(&client_id)
            .is_some_and(|session| session.responses.contains_key(&seq))
    }

    /// Stores the response of an admitted request and forgets the acknowledged ones.
    pub fn record(&mut self, request: SessionRef, response: Response, now_ms: u64, revision: u64) {
        if !self.sessions.contains_key(&request.client_id) && self.sessions.len() >= MAX_SESSIONS {
            if let Some(&(_, _, least_recent)) = self.by_activity.first() {
                self.remove(least_recent);
            }
        }
        let session = self
            .sessions
            .entry(request.client_id)
            .or_insert_with(|| Session {
                client_id: request.client_id,
                acked_below: 0,
                responses: BTreeMap::new(),
                last_active_ms: now_ms,
                last_active_revision: revision,
            });
        session.acked_below = session.acked_below.max(request.acked_below);
        session.responses = session.responses.split_off(&session.acked_below);
        session.responses.insert(request.seq, response);
        let old_key = session.activity_key();
        session.last_active_ms = now_ms;
        session.last_active_revision = revision;
        let new_key = session.activity_key();
        self.by_activity.remove(&old_key);
        self.by_activity.insert(new_key);
    }

    fn touch(&mut self, client_id: u64, now_ms: u64, revision: u64) {
        if let Some(session) = self.sessions.get_mut(&client_id) {
            self.by_activity.remove(&session.activity_key());
            session.last_active_ms = now_ms;
            session.last_active_revision = revision;
            self.by_activity.insert(session.activity_key());
        }
    }

    fn remove(&mut self, client_id: u64) {
        if let Some(session) = self.sessions.remove(&client_id) {
            self.by_activity.remove(&session.activity_key());
        }
    }

    /// Forgets sessions idle for [`SESSION_IDLE_TIMEOUT_MS`]; returns how many.
    pub fn expire_idle(&mut self, now_ms: u64) -> u32 {
        let idle: Vec<u64> = self
            .by_activity
            .iter()
            .take_while(|(last_ms, _, _)| last_ms.saturating_add(SESSION_IDLE_TIMEOUT_MS) <= now_ms)
            .map(|&(_, _, client_id)| client_id)
            .collect();
        for &client_id in &idle {
            self.remove(client_id);
        }
        u32::try_from(idle.len()).unwrap_or(u32::MAX)
    }

    pub fn next_idle_deadline(&self) -> Option<u64> {
        self.by_activity
            .first()
            .map(|(last_ms, _, _)| last_ms.saturating_add(SESSION_IDLE_TIMEOUT_MS))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn activity_index(&self) -> &BTreeSet<(u64, u64, u64)> {
        &self.by_activity
    }

    /// Rebuilds from a snapshot.
    pub fn from_sessions(sessions: Vec<Session>) -> Self {
        let mut table = Self::default();
        for session in sessions {
            table.by_activity.insert(session.activity_key());
            table.sessions.insert(session.client_id, session);
        }
        table
    }
}

fn too_old(request: SessionRef, floor: u64) -> CommandError {
    CommandError::precondition(format!(
        "request too old (session {} seq {}: responses below seq {floor} are forgotten)",
        request.client_id, request.seq
    ))
}
