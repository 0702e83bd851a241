use super::*;
use crate::limits::{MAX_SESSION_INFLIGHT, SESSION_IDLE_TIMEOUT_MS};

fn in_session(op: Op, client_id: u64, seq: u64, acked_below: u64) -> Command {
    Command::with_session(op, Harness::session(client_id, seq, acked_below))
}

#[test]
fn a_retry_gets_the_first_response_and_is_not_applied_again() {
    let mut h = Harness::new();
    let first = h.command(in_session(Op::SubmitTask(spec("t")), 7, 1, 1));
    assert!(first.response.is_ok());
    assert_eq!(first.events.len(), 1);
    let retry = h.command(in_session(Op::SubmitTask(spec("t")), 7, 1, 1));
    assert_eq!(
        retry.response, first.response,
        "same answer, not AlreadyExists"
    );
    assert!(retry.events.is_empty());
    assert_eq!(h.machine.tasks(&Default::default()).len(), 1);

    // A different request of the same client is applied (and can fail).
    let other = h.command(in_session(Op::SubmitTask(spec("t")), 7, 2, 1));
    assert_eq!(other.response.unwrap_err().kind, ErrorKind::AlreadyExists);
    // ... and its failure is remembered too.
    let other_retry = h.command(in_session(Op::SubmitTask(spec("u")), 7, 2, 1));
    assert_eq!(
        other_retry.response.unwrap_err().kind,
        ErrorKind::AlreadyExists
    );
    assert!(h.machine.task("u").is_none());

    // Sessions are per client.
    let stranger = h.command(in_session(Op::SubmitTask(spec("v")), 8, 1, 1));
    assert!(stranger.response.is_ok());
}

#[test]
fn acknowledged_requests_are_forgotten_and_refused_if_retried() {
    let mut h = Harness::new();
    h.command(in_session(Op::SubmitTask(spec("a")), 7, 1, 1));
    h.command(in_session(Op::SubmitTask(spec("b")), 7, 2, 1));
    // The client acknowledges everything below 3.
    h.command(in_session(Op::SubmitTask(spec("c")), 7, 3, 3));
    let session = h.machine.sessions.iter().next().unwrap();
    assert_eq!(session.responses.keys().copied().collect::<Vec<_>>(), [3]);
    let before = h.machine.tasks(&Default::default()).len();
    let stale = h.command(in_session(Op::SubmitTask(spec("a2")), 7, 1, 3));
    let error = stale.response.unwrap_err();
    assert_eq!(error.kind, ErrorKind::FailedPrecondition);
    assert!(
        error.message.contains("request too old (session 7"),
        "{error}"
    );
    assert_eq!(h.machine.tasks(&Default::default()).len(), before);
}

#[test]
fn too_many_unacknowledged_requests_are_refused() {
    let mut h = Harness::new();
    for seq in 1..=MAX_SESSION_INFLIGHT as u64 {
        h.command(in_session(Op::Tick, 7, seq, 1));
    }
    let refused = h.command(in_session(Op::Tick, 7, MAX_SESSION_INFLIGHT as u64 + 1, 1));
    assert_eq!(
        refused.response.unwrap_err().kind,
        ErrorKind::ResourceExhausted
    );
    // Acknowledging makes room.
    let accepted = h.command(in_session(
        Op::Tick,
        7,
        MAX_SESSION_INFLIGHT as u64 + 1,
        100,
    ));
    assert!(accepted.response.is_ok());
}

#[test]
fn idle_sessions_expire_on_tick() {
    let mut h = Harness::new();
    h.command(in_session(Op::Tick, 1, 1, 1));
    h.advance(1_000);
    h.command(in_session(Op::Tick, 2, 1, 1));
    assert_eq!(
        h.machine.next_deadline_ms(),
        Some(h.now_ms - 1_000 + SESSION_IDLE_TIMEOUT_MS)
    );
    h.advance(SESSION_IDLE_TIMEOUT_MS - 1_000);
    assert!(matches!(
        h.ok(Op::Tick),
        Outcome::Ticked {
            expired_sessions: 1,
            ..
        }
    ));
    assert_eq!(h.machine.sessions.len(), 1);
    // Client 1 is forgotten: its old request would be applied again (that is the price of
    // idling longer than the timeout).
    let again = h.command(in_session(Op::SubmitTask(spec("x")), 1, 1, 1));
    assert!(matches!(again.response, Ok(Outcome::TaskSubmitted(_))));
}

#[test]
fn least_recently_used_session_goes_first() {
    let mut table = crate::machine::sessions::SessionTable::default();
    for client in 0..crate::limits::MAX_SESSIONS as u64 {
        table.record(
            Harness::session(client, 1, 0),
            Ok(Outcome::AgentsCheckpointed { updated: 0 }),
            10,
            client + 1,
        );
    }
    // Client 0 is touched by a duplicate, so client 1 is now the least recently used.
    assert!(matches!(
        table.admit(Harness::session(0, 1, 0), 20, 1_000_000),
        crate::machine::sessions::Admission::Replay(_)
    ));
    table.record(
        Harness::session(u64::MAX, 1, 0),
        Ok(Outcome::AgentsCheckpointed { updated: 0 }),
        30,
        1_000_001,
    );
    assert_eq!(table.len(), crate::limits::MAX_SESSIONS);
    let clients: Vec<u64> = table.iter().map(|s| s.client_id).take(3).collect();
    assert_eq!(clients, [0, 2, 3]);
}
